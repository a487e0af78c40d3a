"""Fixtures for the replica tests: the fake upstream, a throw-away database, the cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from codexlb.testing.fake_upstream import FakeUpstream
from tests.support.postgres import postgres_base_url, temp_postgres_database


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/replicas/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.replicas)


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(events=6) as fake:
        yield fake


@pytest.fixture(name="database_url")
async def _database_url() -> AsyncIterator[str]:
    async with temp_postgres_database(postgres_base_url(), prefix="replicas_") as url:
        yield url
