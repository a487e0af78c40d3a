"""Fixtures for the background job tests: a controllable clock, the fake upstream, a running CodexLB.

Jobs are driven by hand (``lb.jobs.tick()`` or a job's ``run_once()``) with the scheduler built with
``background=False`` and the shared :class:`FakeClock`, so no test waits for an interval.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from codexlb.app import CodexLB
from codexlb.jobs import Scheduler
from codexlb.testing.fake_upstream import FakeUpstream
from codexlb.testing.harness import import_fake_accounts, make_settings

PIPELINE = ("select_round_robin", "upstream")


class FakeClock:
    """Unix time that only moves when a test says so."""

    def __init__(self, start: float | None = None) -> None:
        self.now = float(int(time.time()) if start is None else start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def fake(clock: FakeClock) -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(clock=clock) as upstream:
        yield upstream


@contextlib.asynccontextmanager
async def running_lb(tmp_path: Path, fake: FakeUpstream, clock: FakeClock, *, accounts: int | list[Any] = 2,
                     **overrides: Any) -> AsyncIterator[CodexLB]:
    """A started :class:`CodexLB` (no HTTP server) whose scheduler is driven by hand."""
    overrides.setdefault("pipeline_plugins", PIPELINE)
    overrides.setdefault("usage_refresh_enabled", True)
    lb = CodexLB(make_settings(tmp_path, fake=fake, **overrides))
    lb.jobs = Scheduler(lb, clock=clock, background=False)
    lb.jobs.usage.backoff = lb.jobs.models.backoff = 0.0
    await lb.start()
    try:
        fake_accounts = [fake.add_account() for _ in range(accounts)] if isinstance(accounts, int) else accounts
        await import_fake_accounts(lb, fake_accounts)
        yield lb
    finally:
        await lb.stop()


@pytest.fixture
async def lb(tmp_path: Path, fake: FakeUpstream, clock: FakeClock) -> AsyncIterator[CodexLB]:
    async with running_lb(tmp_path, fake, clock) as app:
        yield app
