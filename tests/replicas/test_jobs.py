"""Background jobs across replicas: one leader runs them once per interval; a killed leader is replaced."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

from codexlb.testing.fake_upstream import FakeUpstream
from tests.support.cluster import Cluster, Replica, cluster

INTERVAL = 3.0
"""Usage refresh and model registry interval in this test (seconds)."""
LEASE = 3.0
"""How often followers try to take the leader lock (``Scheduler.leader_retry_seconds``)."""
SLACK = 1.5
"""Scheduling noise allowed on a loaded machine (times are when the fake saw the calls)."""
JOBS_ENV = {"CODEX_LB_USAGE_REFRESH_ENABLED": "true", "CODEX_LB_USAGE_REFRESH_INTERVAL_SECONDS": "3",
            "CODEX_LB_MODEL_REGISTRY_ENABLED": "true", "CODEX_LB_MODEL_REGISTRY_REFRESH_INTERVAL_SECONDS": "3"}


async def jobs_view(replica: Replica) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as client:
        return dict((await client.get(f"{replica.url}/api/jobs")).json())


async def leaders(lb: Cluster) -> list[int]:
    alive = [r for r in lb.replicas if r.pid is not None]
    views = await asyncio.gather(*(jobs_view(r) for r in alive))
    return [r.index for r, view in zip(alive, views, strict=True) if view["instance"]["is_leader"]]


async def wait_for(condition: Any, timeout: float, what: str) -> float:
    """Poll the async ``condition`` every 0.1 s until it is true; returns when (loop time)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await condition():
            return loop.time()
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def gaps(times: list[float]) -> list[float]:
    times = sorted(times)
    return [b - a for a, b in zip(times, times[1:], strict=False)]


async def test_jobs_run_once_per_interval_and_a_killed_leader_is_replaced(
        tmp_path: Path, fake: FakeUpstream, database_url: str) -> None:
    async with cluster(tmp_path, fake, database_url, env=JOBS_ENV, start=False) as lb:
        await lb.seed_accounts(3)
        await lb.start_all()

        async def models_runs(n: int) -> bool:
            return len(fake.requests_for("models")) >= n

        await wait_for(lambda: models_runs(2), 30, "two model registry runs")
        [leader] = await leaders(lb)
        fetched = len(fake.requests_for("usage"))

        async def just_fetched() -> bool:
            return len(fake.requests_for("usage")) > fetched

        await wait_for(just_fetched, 10, "a usage fetch")  # kill right after one: the successor must not repeat it
        killed_at = fake.clock()
        await lb.kill(leader)

        async def new_leader() -> bool:
            return len(await leaders(lb)) == 1

        await wait_for(new_leader, LEASE + 2 * SLACK + 2, "another replica to lead")
        [successor] = await leaders(lb)
        assert successor != leader
        before = len(fake.requests_for("models"))
        await wait_for(lambda: models_runs(before + 2), 30, "two model registry runs by the new leader")
        usage_before = {a.chatgpt_account_id: len(fake.requests_for("usage", a.chatgpt_account_id))
                        for a in lb.accounts}

        async def usage_runs() -> bool:
            return all(len(fake.requests_for("usage", k)) >= n + 2 for k, n in usage_before.items())

        await wait_for(usage_runs, 30, "two more usage runs per account")
        assert len(await leaders(lb)) == 1

    models = [r.time for r in fake.requests_for("models")]
    usage: dict[str, list[float]] = defaultdict(list)
    for r in fake.requests_for("usage"):
        usage[str(r.account_id)].append(r.time)
    assert set(usage) == {a.chatgpt_account_id for a in lb.accounts}
    longest = INTERVAL + LEASE + SLACK
    for name, times in [("models", models), *usage.items()]:
        after_kill = [t for t in times if t > killed_at]
        assert after_kill, f"{name}: nothing ran after the leader was killed"
        spaced = gaps(times)
        assert min(spaced) >= INTERVAL / 2, f"{name}: ran twice within one interval: {spaced}"
        assert max(spaced) <= longest, f"{name}: gap longer than interval + lease: {spaced}"
