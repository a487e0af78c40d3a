"""Usage refresh against the fake upstream: windows, statuses, spreading, retries, timeouts, history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from codexlb.app import CodexLB
from codexlb.testing.fake_upstream import FakeUpstream, Fault
from codexlb.types import Account, AccountStatus

from .conftest import FakeClock, running_lb


def fake_of(fake: FakeUpstream, account: Account) -> Any:
    assert account.chatgpt_account_id is not None
    return fake.accounts[account.chatgpt_account_id]


async def test_run_updates_windows_pool_and_database(lb: CodexLB, fake: FakeUpstream, clock: FakeClock) -> None:
    one, two = lb.pool.all()
    fake_of(fake, one).set_usage(primary=25, secondary=40)
    fake_of(fake, one).credits_balance = "12.5"
    status = await lb.jobs.usage.run_once()
    assert status.last_ok and status.runs == 1

    assert (one.primary.used_percent, one.primary.window_minutes) == (25, 300)
    assert one.primary.resets_at == fake_of(fake, one).primary.reset_at
    assert (one.secondary.used_percent, one.secondary.window_minutes) == (40, 10080)
    assert one.credits == 12.5 and two.primary.window_minutes == 300
    assert one.status is AccountStatus.ACTIVE

    sent = fake.requests_for("usage", one.chatgpt_account_id)
    assert len(sent) == 1 and sent[0].headers["authorization"] == f"Bearer {fake_of(fake, one).access_token}"
    assert sent[0].headers["chatgpt-account-id"] == one.chatgpt_account_id

    assert lb.store is not None
    row = await lb.store.get(one.id)
    assert row is not None and row.primary_used_percent == 25 and row.secondary_used_percent == 40
    history = await lb.store.usage_history(one.id)
    assert [(h.time, h.primary.used_percent) for h in history] == [(clock.now, 25)]


async def test_status_follows_the_usage_answers(lb: CodexLB, fake: FakeUpstream, clock: FakeClock) -> None:
    account = lb.pool.all()[0]
    upstream = fake_of(fake, account)
    upstream.set_usage(primary=100)
    await lb.jobs.usage.run_once()
    assert account.status is AccountStatus.RATE_LIMITED
    assert account.cooldown_until == upstream.primary.reset_at
    assert "primary" in (account.status_reason or "")
    assert account not in lb.pool.usable(now=clock.now)

    upstream.set_usage(primary=30, secondary=100)  # weekly quota gone: quota_exceeded until its reset
    await lb.jobs.usage.run_once()
    assert account.status is AccountStatus.QUOTA_EXCEEDED
    assert account.cooldown_until == upstream.secondary.reset_at

    upstream.set_usage(primary=10, secondary=50)  # reset early upstream: back at once
    await lb.jobs.usage.run_once()
    assert account.status is AccountStatus.ACTIVE and account.status_reason is None
    assert account.cooldown_until <= clock.now

    assert lb.store is not None
    await lb.pool.flush(lb.store)
    row = await lb.store.get(account.id)
    assert row is not None and row.status is AccountStatus.ACTIVE and row.secondary_used_percent == 50


async def test_limit_reached_flag_without_a_full_window(lb: CodexLB, fake: FakeUpstream) -> None:
    account = lb.pool.all()[0]
    upstream = fake_of(fake, account)
    upstream.set_usage(primary=97, secondary=20)
    original = upstream.rate_limit_json
    upstream.rate_limit_json = lambda: {**original(), "limit_reached": True, "allowed": False}
    await lb.jobs.usage.run_once()
    assert account.status is AccountStatus.RATE_LIMITED
    assert account.cooldown_until == upstream.primary.reset_at


async def test_limited_account_is_rechecked_when_its_window_resets(lb: CodexLB, fake: FakeUpstream,
                                                                   clock: FakeClock) -> None:
    account, other = lb.pool.all()
    upstream = fake_of(fake, account)
    upstream.primary.reset_at = int(clock.now) + 90  # the short window ends in 90 s
    upstream.set_usage(primary=100)
    await lb.jobs.usage.run_once()
    assert account.status is AccountStatus.RATE_LIMITED
    assert lb.jobs.usage.next_due() == clock.now + 60  # the regular interval comes first

    clock.advance(60)
    assert await lb.jobs.tick()  # regular poll: still limited
    assert account.status is AccountStatus.RATE_LIMITED
    assert lb.jobs.usage.next_due() == upstream.primary.reset_at  # re-check at the reset, before +60

    before = len(fake.requests_for("usage", account.chatgpt_account_id))
    clock.advance(30)  # the fake rolls the window: used 0 %
    assert await lb.jobs.tick()
    assert len(fake.requests_for("usage", account.chatgpt_account_id)) == before + 1
    assert account.status is AccountStatus.ACTIVE
    assert account in lb.pool.usable(now=clock.now) and other.status is AccountStatus.ACTIVE


async def test_fetches_are_spread_over_the_interval(tmp_path: Path, fake: FakeUpstream, clock: FakeClock) -> None:
    async with running_lb(tmp_path, fake, clock, accounts=4, usage_refresh_interval_seconds=60) as lb:
        accounts = lb.pool.all()

        def fetched() -> list[int]:
            return [len(fake.requests_for("usage", a.chatgpt_account_id)) for a in accounts]

        await lb.jobs.tick()
        assert fetched() == [1, 0, 0, 0]
        clock.advance(14)
        await lb.jobs.tick()
        assert fetched() == [1, 0, 0, 0]
        clock.advance(1)
        await lb.jobs.tick()
        assert fetched() == [1, 1, 0, 0]
        clock.advance(30)
        await lb.jobs.tick()
        assert fetched() == [1, 1, 1, 1]
        clock.advance(15)
        await lb.jobs.tick()
        assert fetched() == [2, 1, 1, 1]
        assert lb.jobs.usage.next_due() == clock.now + 15


async def test_server_errors_are_retried(tmp_path: Path, fake: FakeUpstream, clock: FakeClock) -> None:
    async with running_lb(tmp_path, fake, clock, accounts=1, usage_fetch_max_retries=2) as lb:
        account = lb.pool.all()[0]
        fake.inject(account.chatgpt_account_id, Fault.server_error(503), endpoint="usage", times=2)
        fake_of(fake, account).set_usage(primary=42)
        status = await lb.jobs.usage.run_once()
        assert status.last_ok and account.primary.used_percent == 42
        assert len(fake.requests_for("usage")) == 3


async def test_retries_are_bounded_and_the_error_is_recorded(tmp_path: Path, fake: FakeUpstream,
                                                             clock: FakeClock) -> None:
    async with running_lb(tmp_path, fake, clock, accounts=1, usage_fetch_max_retries=1) as lb:
        account = lb.pool.all()[0]
        fake.inject(account.chatgpt_account_id, Fault.server_error(500), endpoint="usage", times=-1)
        await lb.jobs.tick()
        assert len(fake.requests_for("usage")) == 2
        status = lb.jobs.usage.status
        assert status.last_ok is False and status.errors == 1
        assert "acct1: HTTP 500 (after 2 attempts)" in (status.last_error or "")
        assert account.status is AccountStatus.ACTIVE and account.primary.window_minutes is None


async def test_a_hanging_upstream_times_out(tmp_path: Path, fake: FakeUpstream, clock: FakeClock) -> None:
    async with running_lb(tmp_path, fake, clock, accounts=2, usage_fetch_max_retries=1,
                          usage_fetch_timeout_seconds=0.2) as lb:
        stuck, fine = lb.pool.all()
        fake.inject(stuck.chatgpt_account_id, Fault.hang(), endpoint="usage", times=-1)
        status = await lb.jobs.usage.run_once()
        assert len(fake.requests_for("usage", stuck.chatgpt_account_id)) == 2
        assert "acct1: timed out after 0.2s (after 2 attempts)" in (status.last_error or "")
        assert fine.primary.window_minutes == 300  # the other account was not held up


async def test_401_goes_through_the_token_refresh_then_retries_once(lb: CodexLB, fake: FakeUpstream,
                                                                    monkeypatch: Any) -> None:
    account = lb.pool.all()[0]
    calls: list[tuple[str, bool, str | None]] = []
    sent = lb.pool.credentials[account.id].access_token

    async def refresh(acct: Account, *, force: bool = False, failed: str | None = None) -> bool:
        calls.append((acct.id, force, failed))
        return True

    monkeypatch.setattr(lb.tokens, "refresh", refresh)
    fake.inject(account.chatgpt_account_id, Fault.token_expired(), endpoint="usage")
    fake_of(fake, account).set_usage(primary=5)
    await lb.jobs.usage.run_once(only={account.id})
    assert calls == [(account.id, True, sent)]  # the token the upstream refused is the one refreshed
    assert len(fake.requests_for("usage", account.chatgpt_account_id)) == 2
    assert account.primary.used_percent == 5 and lb.jobs.usage.status.last_ok


async def test_401_with_a_failed_refresh_is_an_error(lb: CodexLB, fake: FakeUpstream, monkeypatch: Any) -> None:
    account = lb.pool.all()[0]

    async def refresh(acct: Account, *, force: bool = False, failed: str | None = None) -> bool:
        return False

    monkeypatch.setattr(lb.tokens, "refresh", refresh)
    fake.inject(account.chatgpt_account_id, Fault.token_invalidated(), endpoint="usage", times=-1)
    status = await lb.jobs.usage.run_once(only={account.id})
    assert len(fake.requests_for("usage", account.chatgpt_account_id)) == 1
    assert "token refresh did not succeed" in (status.last_error or "")
    assert account.status is AccountStatus.ACTIVE


async def test_402_404_and_deactivation_codes_deactivate(tmp_path: Path, fake: FakeUpstream,
                                                         clock: FakeClock) -> None:
    async with running_lb(tmp_path, fake, clock, accounts=4) as lb:
        a402, a404, coded, fine = lb.pool.all()
        fake.inject(a402.chatgpt_account_id, Fault.status(402, {"detail": "Payment Required"}), endpoint="usage")
        fake.inject(a404.chatgpt_account_id, Fault.status(404, {"detail": "Not Found"}), endpoint="usage")
        body = {"error": {"code": "account_deactivated", "message": "Your OpenAI account has been deactivated"}}
        fake.inject(coded.chatgpt_account_id, Fault.status(401, body), endpoint="usage")
        await lb.jobs.usage.run_once()
        assert [a.status for a in (a402, a404, coded, fine)] == [AccountStatus.DEACTIVATED] * 3 + [
            AccountStatus.ACTIVE]
        assert a402.status_reason == "usage endpoint answered HTTP 402: Payment Required"
        assert "404" in (a404.status_reason or "") and "deactivated" in (coded.status_reason or "")

        before = len(fake.requests_for("usage"))
        await lb.jobs.usage.run_once()  # deactivated accounts are no longer polled
        assert len(fake.requests_for("usage")) == before + 1


async def test_paused_accounts_are_not_polled(lb: CodexLB, fake: FakeUpstream) -> None:
    paused, active = lb.pool.all()
    lb.pool.set_status(paused, AccountStatus.PAUSED, "by hand")
    await lb.jobs.usage.run_once()
    assert fake.requests_for("usage", paused.chatgpt_account_id) == []
    assert len(fake.requests_for("usage", active.chatgpt_account_id)) == 1


async def test_history_is_pruned_by_retention(tmp_path: Path, fake: FakeUpstream, clock: FakeClock) -> None:
    async with running_lb(tmp_path, fake, clock, accounts=1, usage_history_retention_days=7) as lb:
        assert lb.store is not None
        account = lb.pool.all()[0]
        await lb.store.save_usage_snapshot(account.id, primary=account.primary, secondary=account.secondary,
                                           at=clock.now - 8 * 86400, update_account=False)
        await lb.store.save_usage_snapshot(account.id, primary=account.primary, secondary=account.secondary,
                                           at=clock.now - 6 * 86400, update_account=False)
        await lb.jobs.tick()
        times = [h.time for h in await lb.store.usage_history(account.id)]
        assert times == [clock.now - 6 * 86400, clock.now]

        clock.advance(2 * 86400)  # the 6-day-old one is now past retention; prune runs hourly at most
        await lb.jobs.tick()
        times = [h.time for h in await lb.store.usage_history(account.id)]
        assert times == [clock.now - 2 * 86400, clock.now]


async def test_disabled_usage_refresh_never_runs(tmp_path: Path, fake: FakeUpstream, clock: FakeClock) -> None:
    async with running_lb(tmp_path, fake, clock, usage_refresh_enabled=False) as lb:
        assert await lb.jobs.tick()
        assert fake.requests_for("usage") == []
        assert lb.jobs.usage.status.runs == 0


async def test_request_log_is_pruned_by_retention(tmp_path: Path, fake: FakeUpstream, clock: FakeClock) -> None:
    from codexlb.db.requestlog import insert_request_logs, recent_request_logs

    async with running_lb(tmp_path, fake, clock, accounts=1, request_log_retention_days=7) as lb:
        assert lb.sessionmaker is not None
        await insert_request_logs(lb.sessionmaker, [{"time": clock.now - 8 * 86400, "endpoint": "responses"},
                                                    {"time": clock.now - 6 * 86400, "endpoint": "responses"}])
        await lb.jobs.tick()
        rows = await recent_request_logs(lb.sessionmaker, limit=10)
        assert [r["time"] for r in rows] == [clock.now - 6 * 86400]
