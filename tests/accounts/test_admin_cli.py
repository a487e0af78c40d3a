"""`codexlb accounts list | pause | resume | remove`."""

from __future__ import annotations

import json
import re
import time

from codexlb.accounts.storage import open_store
from codexlb.settings import Settings
from codexlb.testing.fake_upstream import FakeUpstream
from codexlb.types import AccountStatus, UsageWindow
from tests.accounts.conftest import ScriptedStdin, add_accounts, assert_no_secrets, stored


async def test_list_table_and_json(fake: FakeUpstream, settings: Settings, cli, caplog) -> None:
    run = cli(settings, "accounts", "list")
    assert await run.result() == 0 and "no accounts yet" in run.out
    one, two = fake.add_account(email="one@example.com"), fake.add_account(email="two@example.com", plan_type="pro")
    rows = await add_accounts(settings, [one, two])
    now = time.time()
    async with open_store(settings) as store:
        await store.update(rows[0].id, primary=UsageWindow(37.4, 300, now + 3600),
                           secondary=UsageWindow(12.0, 10080, now + 3 * 86400), last_used_at=now - 300)
        await store.update(rows[1].id, status="reauth_required",
                           status_reason="token refresh refused: refresh_token_reused (HTTP 401)")
    run = cli(settings, "accounts", "list")
    assert await run.result() == 0
    header, first, second = run.out.strip().splitlines()
    assert header.split() == ["LABEL", "EMAIL", "PLAN", "STATUS", "5H", "USAGE", "WEEKLY", "USAGE", "LAST", "USED",
                              "ID", "CAPS", "5H/WK", "HEADROOM", "PINNED"]
    assert "one@example.com" in first and "plus" in first and "active" in first and "37% (resets " in first
    assert "12% (resets " in first and "5m ago" in first and rows[0].id[:8] in first
    assert "reauth_required (token refresh refused: refresh_token_reused (HTTP 401))" in second
    assert "never" in second and "pro" in second

    run = cli(settings, "accounts", "list", "--json")
    assert await run.result() == 0
    data = json.loads(run.out)
    assert [a["email"] for a in data] == ["one@example.com", "two@example.com"]
    assert data[0]["primary"]["used_percent"] == 37.4 and data[1]["status"] == "reauth_required"
    assert not {"access_token", "refresh_token", "id_token"} & set(data[0])
    assert_no_secrets(fake, run.output, caplog=caplog)


async def test_pause_resume(fake: FakeUpstream, settings: Settings, cli) -> None:
    [row] = await add_accounts(settings, [fake.add_account(email="p@example.com")], label="p")
    run = cli(settings, "accounts", "pause", "p")
    assert await run.result() == 0 and "paused account p" in run.out
    assert (await stored(settings))[0].status is AccountStatus.PAUSED
    run = cli(settings, "accounts", "resume", row.id[:6])
    assert await run.result() == 0 and "resumed account p" in run.out
    assert (await stored(settings))[0].status is AccountStatus.ACTIVE


async def test_resume_refuses_an_account_that_needs_login(fake: FakeUpstream, settings: Settings, cli) -> None:
    [row] = await add_accounts(settings, [fake.add_account()], label="r")
    async with open_store(settings) as store:
        await store.update(row.id, status="reauth_required", status_reason="refresh_token_expired")
    run = cli(settings, "accounts", "resume", "r")
    assert await run.result() == 1 and "needs a new login (refresh_token_expired)" in run.err
    assert (await stored(settings))[0].status is AccountStatus.REAUTH_REQUIRED


async def test_remove_asks_first(fake: FakeUpstream, settings: Settings, cli) -> None:
    await add_accounts(settings, [fake.add_account(email="a@example.com"), fake.add_account(email="b@example.com")])
    stdin = ScriptedStdin()
    run = cli(settings, "accounts", "remove", "a@example.com", stdin=stdin)
    await run.wait_for(r"Remove account acct-\w{8} <a@example.com> \(id \w{8}\) and its tokens\? \[y/N\]")
    stdin.feed("n\n")
    assert await run.result() == 1 and "not removed" in run.err
    stdin.feed("yes\n")
    run = cli(settings, "accounts", "remove", "a@example.com")
    assert await run.result() == 0 and re.search(r"removed account acct-\w{8} \(a running codexlb server picks "
                                                 r"this up within about 5 seconds\)", run.out)
    run = cli(settings, "accounts", "remove", "--yes", "b@example.com")
    assert await run.result() == 0
    assert await stored(settings) == []
    run = cli(settings, "accounts", "remove", "--yes", "b@example.com")
    assert await run.result() == 1 and "no account matches" in run.err
