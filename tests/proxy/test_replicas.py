"""Two replicas on one PostgreSQL database: they share accounts, pauses and usage, not the hot path."""

from __future__ import annotations

import time
from pathlib import Path

from codexlb.testing.fake_faults import Fault
from codexlb.testing.fake_upstream import FakeUpstream
from codexlb.testing.harness import proxy_server
from codexlb.types import AccountStatus
from tests.proxy.conftest import PIPELINE
from tests.proxy.test_failover import BODY
from tests.support.postgres import postgres_base_url, temp_postgres_database


async def test_replicas_share_the_pool_through_the_database(tmp_path: Path) -> None:
    base = postgres_base_url()
    async with temp_postgres_database(base) as url, FakeUpstream() as fake, \
            proxy_server(tmp_path, accounts=2, fake=fake, pipeline=PIPELINE, database_url=url) as one, \
            proxy_server(tmp_path, accounts=0, fake=fake, pipeline=PIPELINE, database_url=url) as two:
        two.lb.pool.sync(await two.lb.store.list())  # what its background loop does every few seconds
        assert {a.chatgpt_account_id for a in two.lb.pool.all()} == {a.chatgpt_account_id for a in one.accounts}
        response = await two.client.post("/backend-api/codex/responses", json=BODY)
        assert response.status_code == 200 and b"response.completed" in response.content

        # a pause on one replica (admin API) reaches the other
        victim = one.lb.pool.all()[0]
        assert (await one.client.patch(f"/api/accounts/{victim.id}", json={"status": "paused"})).status_code == 200
        two.lb.pool.sync(await two.lb.store.list())
        assert two.lb.pool.get(victim.id).status is AccountStatus.PAUSED

        # a usage limit seen by one replica reaches the other once written back
        other = next(a for a in one.lb.pool.all() if a.id != victim.id)
        fake.inject(other.chatgpt_account_id, Fault.usage_limit(resets_at=int(time.time()) + 3600), times=-1)
        limited = await one.client.post("/backend-api/codex/responses", json=BODY)
        assert limited.status_code == 429
        await one.lb.pool.flush(one.lb.store)
        two.lb.pool.sync(await two.lb.store.list())
        assert two.lb.pool.get(other.id).status is AccountStatus.RATE_LIMITED
        exhausted = await two.client.post("/backend-api/codex/responses", json=BODY)
        assert exhausted.status_code == 429 and exhausted.json()["error"]["type"] == "usage_limit_reached"
