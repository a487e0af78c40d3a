"""Token refresh through the running proxy: before use, after a 401, single flight, permanent and transient failures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from codexlb.db.store import StoredAccount
from codexlb.testing.fake_faults import Fault
from codexlb.testing.fake_upstream import FakeAccount, FakeUpstream
from codexlb.testing.harness import ProxyHarness, proxy_server
from codexlb.types import AccountStatus
from tests.accounts.conftest import PIPELINE, assert_no_secrets, stored

BODY = {"model": "gpt-5.5", "instructions": "", "input": [{"type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "hi"}]}], "stream": True, "store": False}
NINE_DAYS = 9 * 86400


@pytest.fixture
async def proxy(tmp_path: Path, fake: FakeUpstream) -> AsyncIterator[ProxyHarness]:
    async with proxy_server(tmp_path, accounts=0, fake=fake, pipeline=PIPELINE,
                            token_refresh_timeout_seconds=0.5) as harness:
        yield harness


async def add(proxy: ProxyHarness, account: FakeAccount, **kwargs: object) -> StoredAccount:
    """Store a fake account and put it in the running pool."""
    assert proxy.lb.store is not None
    row, _ = await proxy.lb.store.upsert(
        chatgpt_account_id=account.chatgpt_account_id, email=account.email, plan_type=account.plan_type,
        access_token=account.access_token, refresh_token=account.refresh_token, id_token=account.id_token,
        **kwargs)  # type: ignore[arg-type]
    proxy.lb.pool.put(row)
    return row


async def post(proxy: ProxyHarness) -> httpx.Response:
    return await proxy.client.post("/backend-api/codex/responses", json=BODY)


async def test_401_refreshes_once_and_retries(proxy: ProxyHarness, caplog) -> None:
    fake, account = proxy.fake, proxy.fake.add_account("acct-401")
    row = await add(proxy, account)
    old_refresh = account.refresh_token
    fake.inject("acct-401", Fault.token_expired())
    response = await post(proxy)
    assert response.status_code == 200 and b"response.completed" in response.content
    assert response.headers["x-codexlb-route"].split(" ")[0].endswith(":retry-after-401")
    assert fake.refresh_calls == 1
    [call] = fake.requests_for("token")
    assert call.headers.get("content-type", "").startswith("application/json")
    assert call.json == {"client_id": proxy.lb.settings.oauth_client_id, "grant_type": "refresh_token",
                         "refresh_token": old_refresh, "scope": proxy.lb.settings.oauth_scope}
    assert proxy.lb.pool.credentials[row.id].access_token == account.access_token
    [saved] = await stored(proxy.lb.settings)  # rotated refresh token stored with the new access token
    assert (saved.access_token, saved.refresh_token, saved.id_token) == (
        account.access_token, account.refresh_token, account.id_token)
    assert saved.token_refreshed_at and saved.token_refreshed_at > row.token_refreshed_at
    assert_no_secrets(fake, response.text, caplog=caplog)


async def test_concurrent_401s_share_one_refresh(proxy: ProxyHarness) -> None:
    fake, account = proxy.fake, proxy.fake.add_account("acct-race")
    await add(proxy, account)
    account.revoked_tokens.add(account.access_token)  # every request with it now gets 401
    responses = await asyncio.gather(*(post(proxy) for _ in range(12)))
    assert [r.status_code for r in responses] == [200] * 12
    assert fake.refresh_calls == 1


async def test_expired_token_is_refreshed_before_use(proxy: ProxyHarness) -> None:
    fake, account = proxy.fake, proxy.fake.add_account("acct-expired")
    account.expire_access_token()
    row = await add(proxy, account)
    responses = await asyncio.gather(*(post(proxy) for _ in range(8)))
    assert [r.status_code for r in responses] == [200] * 8
    assert fake.refresh_calls == 1
    assert {r.headers.get("authorization") for r in fake.requests_for("responses")} == {
        f"Bearer {account.access_token}"}  # never sent the expired token
    assert proxy.lb.pool.credentials[row.id].access_token == account.access_token


async def test_old_refresh_is_renewed_before_use(proxy: ProxyHarness) -> None:
    account = proxy.fake.add_account("acct-old")
    await add(proxy, account, token_refreshed_at=time.time() - NINE_DAYS)
    assert (await post(proxy)).status_code == 200
    assert proxy.fake.refresh_calls == 1
    assert (await post(proxy)).status_code == 200
    assert proxy.fake.refresh_calls == 1


@pytest.mark.parametrize("fault", [
    Fault.refresh_token_reused(), Fault.refresh_token_expired(), Fault.refresh_token_invalidated(),
    Fault.status(400, {"error": "invalid_grant", "error_description": "Invalid refresh token"}),
], ids=["reused", "expired", "invalidated", "invalid_grant"])
async def test_permanent_refusal_needs_login(proxy: ProxyHarness, cli, caplog, fault: Fault) -> None:
    fake = proxy.fake
    broken, healthy = fake.add_account("acct-broken"), fake.add_account("acct-healthy")
    broken.expire_access_token()
    broken_row = await add(proxy, broken)
    await add(proxy, healthy)
    fake.inject("acct-broken", fault, endpoint="token")
    code = fault.kind if fault.kind != "status" else "invalid_grant"
    for _ in range(3):
        assert (await post(proxy)).status_code == 200  # served by the healthy account
    assert fake.refresh_calls == 1
    account = proxy.lb.pool.get(broken_row.id)
    assert account is not None and account.status is AccountStatus.REAUTH_REQUIRED
    assert code in (account.status_reason or "")
    assert broken_row.id not in {a.id for a in proxy.lb.pool.usable()}
    assert {r.account_id for r in fake.requests_for("responses")} == {"acct-healthy"}
    run = cli(proxy.lb.settings, "accounts", "list")
    assert await run.result() == 0
    line = next(line for line in run.out.splitlines() if broken.email in line)
    assert "reauth_required (token refresh refused: " in line and code in line
    assert_no_secrets(fake, run.output, caplog=caplog)


async def test_transient_failure_keeps_a_valid_token_in_use(proxy: ProxyHarness, caplog) -> None:
    fake, account = proxy.fake, proxy.fake.add_account("acct-flaky")
    row = await add(proxy, account, token_refreshed_at=time.time() - NINE_DAYS)
    old_access = account.access_token
    fake.inject("acct-flaky", Fault.server_error(503), endpoint="token")
    assert (await post(proxy)).status_code == 200
    assert (await post(proxy)).status_code == 200  # no new attempt while backing off
    assert fake.refresh_calls == 1
    assert proxy.lb.pool.get(row.id).status is AccountStatus.ACTIVE  # type: ignore[union-attr]
    assert proxy.lb.pool.credentials[row.id].access_token == old_access
    assert "token refresh failed (server_is_overloaded (HTTP 503))" in caplog.text
    proxy.lb.tokens._retry_at.clear()  # the back-off has passed
    assert (await post(proxy)).status_code == 200
    assert fake.refresh_calls == 2 and proxy.lb.pool.credentials[row.id].access_token == account.access_token


async def test_refresh_timeout_is_transient(proxy: ProxyHarness, caplog) -> None:
    fake, account = proxy.fake, proxy.fake.add_account("acct-slow")
    row = await add(proxy, account, token_refreshed_at=time.time() - NINE_DAYS)
    fake.inject("acct-slow", Fault.hang(), endpoint="token")
    assert (await post(proxy)).status_code == 200
    assert "token refresh failed (timed out after 0.5 s)" in caplog.text
    assert proxy.lb.pool.get(row.id).status is AccountStatus.ACTIVE  # type: ignore[union-attr]


async def test_transient_failure_with_expired_token_fails_over(proxy: ProxyHarness) -> None:
    fake = proxy.fake
    expired, other = fake.add_account("acct-exp"), fake.add_account("acct-other")
    expired.expire_access_token()
    row = await add(proxy, expired)
    await add(proxy, other)
    fake.inject("acct-exp", Fault.server_error(500), endpoint="token", times=-1)
    for _ in range(2):
        assert (await post(proxy)).status_code == 200
    account = proxy.lb.pool.get(row.id)
    assert account is not None and account.status is AccountStatus.ACTIVE and account.cooldown_until > time.time()
    assert {r.account_id for r in fake.requests_for("responses")} == {"acct-other"}


async def test_refresh_if_due(proxy: ProxyHarness) -> None:
    fresh, stale = proxy.fake.add_account("acct-fresh"), proxy.fake.add_account("acct-stale")
    fresh_row = await add(proxy, fresh)
    stale_row = await add(proxy, stale, token_refreshed_at=time.time() - NINE_DAYS)
    tokens, pool = proxy.lb.tokens, proxy.lb.pool
    assert await tokens.refresh_if_due(pool.get(fresh_row.id)) is False  # type: ignore[arg-type]
    assert await tokens.refresh_if_due(pool.get(stale_row.id)) is True  # type: ignore[arg-type]
    assert await tokens.refresh_if_due(pool.get(stale_row.id)) is False  # type: ignore[arg-type]
    assert proxy.fake.refresh_calls == 1
