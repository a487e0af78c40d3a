"""Two app instances sharing one database refresh an account once (row lock in ``refresh_locked``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from codexlb.app import CodexLB
from codexlb.testing.fake_faults import Fault
from codexlb.testing.fake_upstream import FakeUpstream
from tests.accounts.conftest import PIPELINE, make_settings
from tests.support.postgres import postgres_base_url, temp_postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
        return
    async with temp_postgres_database(postgres_base_url()) as url:
        yield url


@contextlib.asynccontextmanager
async def instances(tmp_path: Path, fake: FakeUpstream, url: str, n: int = 2) -> AsyncIterator[list[CodexLB]]:
    settings = make_settings(tmp_path, fake, database_url=url, pipeline_plugins=PIPELINE)
    apps = [CodexLB(settings) for _ in range(n)]
    try:
        for app in apps:  # one after another: the first creates the schema and the key
            await app.start()
        yield apps
    finally:
        for app in apps:
            await app.stop()


async def test_two_instances_race_one_refresh(tmp_path: Path, fake: FakeUpstream, database_url: str) -> None:
    account = fake.add_account("acct-shared")
    async with instances(tmp_path, fake, database_url) as (one, two):
        assert one.store is not None and two.store is not None
        row, _ = await one.store.upsert(
            chatgpt_account_id=account.chatgpt_account_id, email=account.email, plan_type=account.plan_type,
            access_token=account.access_token, refresh_token=account.refresh_token, id_token=account.id_token)
        for app in (one, two):
            app.pool.put(row)
        first, second = one.pool.get(row.id), two.pool.get(row.id)
        assert first is not None and second is not None
        fake.inject(None, Fault.slow(0.1), endpoint="token")  # the first refresh is surely still running
        calls = [app.tokens.refresh(acct, force=True) for app, acct in ((one, first), (two, second))
                 for _ in range(5)]
        results = await asyncio.gather(*calls)
        assert results == [True] * 10
        assert fake.refresh_calls == 1
        for app in (one, two):
            assert app.pool.credentials[row.id].access_token == account.access_token
            assert app.pool.credentials[row.id].refresh_token == account.refresh_token
        saved = await two.store.get(row.id)
        assert saved is not None and saved.refresh_token == account.refresh_token


async def test_second_instance_reuses_a_refresh_done_elsewhere(tmp_path: Path, fake: FakeUpstream,
                                                               database_url: str) -> None:
    """Refresh before use: the other instance finds the stored tokens fresh and calls nobody."""
    account = fake.add_account("acct-expiring")
    account.expire_access_token()
    async with instances(tmp_path, fake, database_url) as (one, two):
        assert one.store is not None
        row, _ = await one.store.upsert(
            chatgpt_account_id=account.chatgpt_account_id, email=account.email, plan_type=account.plan_type,
            access_token=account.access_token, refresh_token=account.refresh_token, id_token=account.id_token)
        for app in (one, two):
            app.pool.put(row)
        first, second = one.pool.get(row.id), two.pool.get(row.id)
        assert first is not None and second is not None
        assert await one.tokens.access_token(first) == account.access_token
        assert await two.tokens.access_token(second) == account.access_token
        assert fake.refresh_calls == 1
