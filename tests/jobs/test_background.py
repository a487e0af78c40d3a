"""The scheduler's own loops (no hand-driven ticks): they run the jobs and never hold up requests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from codexlb.jobs import Job
from codexlb.testing.fake_upstream import Fault
from codexlb.testing.harness import proxy_server

from .conftest import PIPELINE

BODY = {"model": "gpt-5.4", "instructions": "be brief", "stream": True, "store": False,
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]}


async def runs_until(job: Job, done: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for the job's runs (its ``ran`` event) until ``done()`` holds."""
    async with asyncio.timeout(timeout):
        while not done():
            job.ran.clear()
            await job.ran.wait()


async def test_loops_poll_usage_and_a_hanging_poll_does_not_hold_up_requests(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, accounts=1, pipeline=PIPELINE, usage_refresh_enabled=True,
                            usage_refresh_interval_seconds=1, usage_fetch_timeout_seconds=30) as proxy:
        account = proxy.lb.pool.all()[0]
        proxy.fake.accounts[account.chatgpt_account_id or ""].set_usage(primary=33)
        await runs_until(proxy.lb.jobs.usage, lambda: account.primary.used_percent == 33)
        assert proxy.lb.jobs.is_leader

        seen = {id(r) for r in proxy.fake.requests_for("usage")}
        proxy.fake.inject(None, Fault.hang(), endpoint="usage", times=-1)
        await proxy.fake.wait_for_request(lambda r: r.endpoint == "usage" and id(r) not in seen)
        answer = await proxy.client.post("/backend-api/codex/responses", json=BODY, timeout=5)
        assert answer.status_code == 200 and b"response.completed" in answer.content
