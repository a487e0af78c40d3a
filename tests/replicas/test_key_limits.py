"""Client-key limits across replicas: the overshoot stays within the documented bound.

README ("Client API keys"): a replica knows the others' counts only as of its last sync, so a
limit can be exceeded by at most ``(replicas - 1) x remaining`` (the budget left at the last sync).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import httpx

from codexlb.testing.fake_upstream import FakeUpstream
from tests.support.cluster import PLUGINS, Cluster, cluster, poll

LIMIT, WARM_UP, REPLICAS, SYNC = 30, 20, 3, 0.5
BODY = {"model": "gpt-5.5", "instructions": "", "stream": True, "store": False,
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]}


async def create_key(lb: Cluster) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "codexlb", "keys", "create", "team", "--limit", f"requests={LIMIT}/day", "--json",
        cwd=lb.tmp, env=lb.replicas[0].env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return str(json.loads(out)["key"])


async def used_in_database(lb: Cluster) -> int:
    async with httpx.AsyncClient(timeout=10) as client:
        shown = (await client.get(f"{lb.replicas[0].url}/api/keys/team")).json()
    return int(shown["windows"][0]["used"])


async def test_key_limit_overshoot_stays_within_the_documented_bound(tmp_path: Path, fake: FakeUpstream,
                                                                       database_url: str) -> None:
    env = {"CODEX_LB_PLUGINS__API_KEYS__SYNC_INTERVAL_SECONDS": str(SYNC)}
    plugins = (PLUGINS[0], "api_keys", *PLUGINS[1:])  # after the firewall, like the default pipeline
    async with cluster(tmp_path, fake, database_url, plugins=plugins, env=env, start=False) as lb:
        await lb.seed_accounts(2)
        key = await create_key(lb)
        await lb.start_all()
        headers = {"authorization": f"Bearer {key}"}
        assert (await lb.client.post("/backend-api/codex/responses", json=BODY)).status_code == 401

        for _ in range(WARM_UP):
            assert (await lb.client.post("/backend-api/codex/responses", json=BODY, headers=headers)).status_code == 200

        async def warm_up_shared() -> bool:
            return await used_in_database(lb) == WARM_UP

        await poll(warm_up_shared, 15, "the warm-up counts to reach the database", every=0.1)
        async with httpx.AsyncClient(timeout=30) as client:  # then one more on each replica, directly
            for replica in lb.replicas:
                probe = await client.post(f"{replica.url}/backend-api/codex/responses", json=BODY, headers=headers)
                assert probe.status_code == 200
        used = WARM_UP + REPLICAS

        async def all_synced() -> bool:
            """Each replica's probe is in the database: each has synced since, reading back >= WARM_UP + 1."""
            return await used_in_database(lb) == used

        await poll(all_synced, 15, "every replica to sync its counts", every=0.1)
        remaining = LIMIT - used
        known_remaining = LIMIT - WARM_UP - 1  # the most any replica may still believe is left

        burst = await asyncio.gather(*(lb.client.post("/backend-api/codex/responses", json=BODY, headers=headers)
                                       for _ in range(90)))
        admitted = sum(r.status_code == 200 for r in burst)
        refused = [r for r in burst if r.status_code != 200]
        assert all(r.status_code == 429 and r.json()["error"]["code"] == "api_key_limit_reached" for r in refused)
        # Each replica admits at most what it believed was left at its last sync (its own probe counted,
        # the others' maybe not yet): the documented (replicas - 1) x remaining over the limit, plus the
        # probes the other replicas served since that sync.
        assert remaining <= admitted <= REPLICAS * known_remaining, admitted

        async def all_counted() -> bool:
            return await used_in_database(lb) == used + admitted

        await poll(all_counted, 10, "every admitted request to be counted in the database", every=0.1)
        async with httpx.AsyncClient(timeout=30) as client:  # once synced, every replica refuses
            for replica in lb.replicas:
                async def refuses(url: str = replica.url) -> bool:
                    r = await client.post(f"{url}/backend-api/codex/responses", json=BODY, headers=headers)
                    return r.status_code == 429
                await poll(refuses, 10, f"replica {replica.index} to refuse the spent key", every=0.1)
