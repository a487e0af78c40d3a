"""Leader election: SQLite runs the jobs in its one process; on PostgreSQL exactly one instance does,
and another takes over when the leader stops or its lock connection dies."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from codexlb.app import CodexLB
from codexlb.db.registry import get_meta
from codexlb.testing.fake_upstream import FakeUpstream
from tests.support.postgres import postgres_base_url, temp_postgres_database

from .conftest import FakeClock, running_lb


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with temp_postgres_database(postgres_base_url()) as url:
        yield url


async def leader_record(lb: CodexLB) -> dict[str, object]:
    assert lb.sessionmaker is not None
    return json.loads(await get_meta(lb.sessionmaker, "jobs.leader") or "{}")


async def test_sqlite_process_is_the_leader(lb: CodexLB) -> None:
    assert await lb.jobs.tick()
    assert lb.jobs.is_leader and lb.jobs.leadership.backend == "sqlite"
    record = await leader_record(lb)
    assert record["instance"] == lb.jobs.identity["instance"] and record["pid"] == lb.jobs.identity["pid"]


async def test_one_leader_on_postgres_and_takeover_when_its_connection_dies(
        tmp_path: Path, fake: FakeUpstream, clock: FakeClock, pg_url: str) -> None:
    async with running_lb(tmp_path, fake, clock, database_url=pg_url, accounts=2) as a:
        async with running_lb(tmp_path, fake, clock, database_url=pg_url, accounts=list(fake.accounts.values())) as b:
            for _ in range(3):  # every account comes due over one interval: only A polls
                assert await a.jobs.tick()
                assert not await b.jobs.tick()
                clock.advance(30)
            fetched = len(fake.requests_for("usage"))
            first, second, _ = [r.account_id for r in fake.requests_for("usage")]
            assert fetched == a.jobs.usage.status.runs == 3 and b.jobs.usage.status.runs == 0
            assert (await leader_record(b))["instance"] == a.jobs.identity["instance"]

            admin = await asyncpg.connect(make_url(pg_url).set(drivername="postgresql").render_as_string(False))
            try:  # the leader's lock session dies (as when its process is killed)
                assert await admin.fetchval("SELECT pg_terminate_backend($1, 5000)", a.jobs.leadership.backend_pid)
            finally:
                await admin.close()

            # B takes the lock at its next try and keeps A's cadence: the account A fetched 60 s ago
            # (one interval) is due, the one A fetched 30 s ago is not
            assert await b.jobs.tick()
            assert b.jobs.is_leader and b.jobs.usage.status.runs == 4  # A's 3 runs (from meta) + 1
            assert [r.account_id for r in fake.requests_for("usage")[fetched:]] == [second]
            clock.advance(30)
            assert await b.jobs.tick()
            assert [r.account_id for r in fake.requests_for("usage")[fetched:]] == [second, first]
            assert not await a.jobs.tick()  # A notices it lost the lock and steps down
            assert not await a.jobs.tick() and not a.jobs.is_leader
            assert a.jobs.usage.status.runs == 3
            record = await leader_record(a)
            assert record["instance"] == b.jobs.identity["instance"] and record["backend"] == "postgresql"


async def test_takeover_after_a_clean_stop_and_followers_reload_the_models(
        tmp_path: Path, fake: FakeUpstream, clock: FakeClock, pg_url: str) -> None:
    options = {"database_url": pg_url, "model_registry_enabled": True, "usage_refresh_enabled": False}
    async with running_lb(tmp_path, fake, clock, accounts=1, **options) as a:
        async with running_lb(tmp_path, fake, clock, accounts=list(fake.accounts.values()), **options) as b:
            assert await a.jobs.tick() and a.models.ready
            assert not await b.jobs.tick()
            assert b.models.ready  # the follower picked up the list the leader stored
            assert len(fake.requests_for("models")) == 1
            state = await b.jobs.describe()  # what GET /api/jobs shows on a follower: the leader's record
            assert not state["instance"]["is_leader"] and state["leader"]["instance"] == a.jobs.identity["instance"]
            models = next(job for job in state["jobs"] if job["name"] == "models")
            assert models["leader"] is False and models["ran_by"] == a.jobs.identity and models["runs"] == 1

            await a.stop()
            assert await b.jobs.tick()  # B leads at once and keeps A's schedule: no refetch yet
            assert len(fake.requests_for("models")) == 1 and b.jobs.models.status.runs == 1
            clock.advance(300)
            assert await b.jobs.tick()
            assert len(fake.requests_for("models")) == 2 and b.jobs.models.status.runs == 2
