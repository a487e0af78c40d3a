"""PostgreSQL goes away mid-run: replicas keep proxying from memory, reconnect, and write what they kept.

The outage is made on the throw-away database itself: ``ALLOW_CONNECTIONS false`` refuses new
connections and ``pg_terminate_backend`` ends every open one (the leader's lock session included), as
a server restart does; ``ALLOW_CONNECTIONS true`` brings it back.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from codexlb.accounts.storage import open_store
from codexlb.flow import session_key_hash
from codexlb.testing.fake_upstream import FakeUpstream
from tests.support.cluster import Cluster, Replica, cluster, poll
from tests.support.postgres import postgres_base_url

BODY = {"model": "gpt-5.5", "instructions": "", "stream": True, "store": False,
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]}


async def set_database_open(database_url: str, open_: bool) -> None:
    """Allow connections to the test database, or refuse new ones and end every open one."""
    name = make_url(database_url).database
    admin = await asyncpg.connect(make_url(postgres_base_url()).set(drivername="postgresql")
                                  .render_as_string(hide_password=False))
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"true" if open_ else "false"}')
        if not open_:
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
    finally:
        await admin.close()


async def ready(replica: Replica) -> bool:
    async with httpx.AsyncClient(timeout=5) as client:
        return (await client.get(f"{replica.url}/readyz")).status_code == 200


async def turns(lb: Cluster, prefix: str, n: int) -> list[str]:
    keys = [f"{prefix}-{i}" for i in range(n)]
    answers = await asyncio.gather(*(lb.client.post("/backend-api/codex/responses",
                                                    json={**BODY, "prompt_cache_key": key}) for key in keys))
    assert [a.status_code for a in answers] == [200] * n, [a.text[:200] for a in answers if a.status_code != 200]
    assert all("response.completed" in a.text for a in answers)
    return keys


async def test_replicas_keep_serving_through_a_database_outage_and_flush_after(
        tmp_path: Path, fake: FakeUpstream, database_url: str) -> None:
    async with cluster(tmp_path, fake, database_url, start=False) as lb:
        await lb.seed_accounts(2)
        await lb.start_all()
        await turns(lb, "before", 6)
        async with open_store(lb.settings()) as store:
            before = {r.id: r.primary_used_percent or 0.0 for r in await store.list()}
        down_at = time.time()
        await set_database_open(database_url, False)
        try:
            async def all_noticed() -> bool:
                return not any(await asyncio.gather(*(ready(r) for r in lb.replicas)))

            await poll(all_noticed, 15, "every replica to report the database unreachable")
            during = await turns(lb, "during", 12)
            await poll(all_noticed, 5, "the replicas to still see the outage")  # the turns ran without a database
            during += await turns(lb, "during-late", 12)
        finally:
            await set_database_open(database_url, True)

        async def all_ready() -> bool:
            return all(await asyncio.gather(*(ready(r) for r in lb.replicas)))

        await poll(all_ready, 15, "every replica to reconnect")
        await turns(lb, "after", 6)
        expected = {session_key_hash(key) for key in during}

        async def logged() -> bool:
            rows = await lb.request_log()
            return expected <= {r["session_key_hash"] for r in rows if r["status"] == 200}

        await poll(logged, 15, "the request-log rows written during the outage")

        async def usage_flushed() -> bool:
            async with open_store(lb.settings()) as store:
                rows = await store.list()
            return all((r.primary_used_percent or 0.0) > before[r.id] and (r.last_used_at or 0) > down_at
                       for r in rows)

        await poll(usage_flushed, 15, "the usage seen during the outage to be saved")

        async def one_leader() -> bool:
            async with httpx.AsyncClient(timeout=5) as client:
                views = [(await client.get(f"{r.url}/api/jobs")).json() for r in lb.replicas]
            return sum(v["instance"]["is_leader"] for v in views) == 1

        await poll(one_leader, 15, "a leader again")
    assert fake.refresh_calls == 0
