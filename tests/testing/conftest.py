"""Fixtures for the fake upstream tests: a running fake, one account, a client bound to it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from codexlb.testing.fake_upstream import FakeAccount, FakeUpstream


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(events=5) as server:
        yield server


@pytest.fixture
def fake_account(fake: FakeUpstream) -> FakeAccount:
    return fake.add_account("acct-fake-0001", email="one@example.com")


@pytest.fixture
async def fake_client(fake: FakeUpstream, fake_account: FakeAccount) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.base_url, headers=fake_account.headers(), timeout=5) as http:
        yield http


@pytest.fixture
async def fake_auth_client(fake: FakeUpstream) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.auth_base_url, timeout=5) as http:
        yield http
