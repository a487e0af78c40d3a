"""AccountStore: upsert, find, update, tokens, single-flight refresh, delete, usage history."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from codexlb.db.crypto import load_cipher
from codexlb.db.engine import make_engine, make_sessionmaker
from codexlb.db.requestlog import insert_request_logs, recent_request_logs
from codexlb.db.store import AccountStore, AmbiguousAccount, StoredAccount, TokenSet, default_label
from codexlb.settings import Settings
from codexlb.types import Account, AccountStatus, UsageWindow


async def _login(store: AccountStore, n: int = 1, **overrides: object) -> tuple[StoredAccount, bool]:
    values: dict[str, object] = {
        "chatgpt_account_id": f"chatgpt-{n}", "email": f"user{n}@example.com", "plan_type": "plus",
        "access_token": f"at-{n}", "refresh_token": f"rt-{n}", "id_token": f"idt-{n}"}
    return await store.upsert(**{**values, **overrides})  # type: ignore[arg-type]


async def test_upsert_creates_then_updates_the_same_account(store: AccountStore) -> None:
    first, created = await _login(store)
    assert created and len(first.id) == 32 and first.label == default_label("chatgpt-1")
    assert first.label.startswith("acct-") and "@" not in first.label
    assert (first.status, first.access_token, first.refresh_token, first.id_token) == (
        AccountStatus.ACTIVE, "at-1", "rt-1", "idt-1")
    again, created = await _login(store, access_token="at-new", plan_type="pro", label="work")
    assert not created and again.id == first.id
    assert (again.access_token, again.plan_type, again.label, again.created_at) == (
        "at-new", "pro", "work", first.created_at)
    assert [a.id for a in await store.list()] == [first.id]


async def test_relogin_reactivates_an_account_that_needed_reauth(store: AccountStore) -> None:
    account, _ = await _login(store)
    await store.update(account.id, status=AccountStatus.REAUTH_REQUIRED, status_reason="refresh failed")
    again, _ = await _login(store)
    assert (again.status, again.status_reason) == (AccountStatus.ACTIVE, None)
    await store.update(account.id, status="paused")
    assert (await _login(store))[0].status is AccountStatus.PAUSED


async def test_concurrent_logins_of_one_account_make_one_row(store: AccountStore) -> None:
    results = await asyncio.gather(*(_login(store, access_token=f"at-{i}") for i in range(4)))
    assert len({account.id for account, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert len(await store.list()) == 1


async def test_find_by_id_prefix_label_email_and_chatgpt_id(store: AccountStore) -> None:
    one, _ = await _login(store, 1, label="alpha")
    two, _ = await _login(store, 2, label="beta")
    for ref in (one.id, one.id[:12], "alpha", "USER1@example.com", "chatgpt-1"):
        found = await store.find(ref)
        assert found is not None and found.id == one.id, ref
    assert (await store.find("beta")).id == two.id  # type: ignore[union-attr]
    assert await store.find("nobody") is None and await store.find("") is None
    await store.update(two.id, label="alpha")
    with pytest.raises(AmbiguousAccount, match="'alpha' matches 2 accounts"):
        await store.find("alpha")


async def test_update_sets_only_non_secret_columns(store: AccountStore) -> None:
    account, _ = await _login(store)
    await store.update(account.id, status=AccountStatus.RATE_LIMITED, status_reason="429",
                       cooldown_until=123.5, priority=3, last_used_at=99.0, credits=4.5,
                       primary=UsageWindow(40.0, 300, 1000.0), secondary_used_percent=10.0)
    got = await store.get(account.id)
    assert got is not None
    assert (got.status, got.status_reason, got.cooldown_until, got.priority, got.last_used_at) == (
        AccountStatus.RATE_LIMITED, "429", 123.5, 3, 99.0)
    assert (got.primary, got.secondary_used_percent, got.credits) == (UsageWindow(40.0, 300, 1000.0), 10.0, 4.5)
    with pytest.raises(TypeError, match="access_token_enc"):
        await store.update(account.id, access_token_enc="x")
    with pytest.raises(ValueError):
        await store.update(account.id, status="bogus")
    await store.update("missing", priority=1)  # a deleted account is ignored


async def test_to_account_has_no_secrets(store: AccountStore) -> None:
    account, _ = await _login(store)
    await store.update(account.id, secondary=UsageWindow(25.0, 10080, 5000.0))
    plain = (await store.get(account.id)).to_account()  # type: ignore[union-attr]
    assert isinstance(plain, Account)
    assert (plain.id, plain.email, plain.weekly_remaining_pct, plain.secondary.resets_at) == (
        account.id, "user1@example.com", 75.0, 5000.0)
    assert "at-1" not in repr(plain) + repr(dataclasses.asdict(plain))
    assert "at-1" not in repr(account)


async def test_save_tokens(store: AccountStore) -> None:
    account, _ = await _login(store)
    await store.save_tokens(account.id, access_token="at-2", refresh_token=None, id_token="idt-2",
                            refreshed_at=1234.0)
    got = await store.get(account.id)
    assert (got.access_token, got.refresh_token, got.id_token, got.token_refreshed_at) == (  # type: ignore[union-attr]
        "at-2", "rt-1", "idt-2", 1234.0)
    with pytest.raises(KeyError):
        await store.save_tokens("missing", access_token="a", refresh_token="r", id_token=None, refreshed_at=1)


async def test_refresh_locked_is_single_flight_across_engines(
        store: AccountStore, settings: Settings) -> None:
    """Two engines stand in for two processes: only the first caller refreshes."""
    account, _ = await _login(store)
    other_engine = make_engine(settings)
    try:
        other = AccountStore(make_sessionmaker(other_engine), await load_cipher(settings, other_engine))
        calls: list[str | None] = []

        async def refresh(current: StoredAccount) -> TokenSet | None:
            calls.append(current.access_token)
            if current.access_token != "at-1":
                return None  # someone else already refreshed
            await asyncio.sleep(0.05)  # widen the window in which the other caller would race
            return TokenSet("at-fresh", "rt-fresh", None, refreshed_at=2000.0)

        results = await asyncio.gather(store.refresh_locked(account.id, refresh),
                                       other.refresh_locked(account.id, refresh))
    finally:
        await other_engine.dispose()
    assert calls == ["at-1", "at-fresh"]
    assert [(r.access_token, r.refresh_token, r.id_token, r.token_refreshed_at) for r in results] == [
        ("at-fresh", "rt-fresh", "idt-1", 2000.0)] * 2


async def test_refresh_locked_writes_nothing_when_fn_fails(store: AccountStore) -> None:
    account, _ = await _login(store)

    async def boom(current: StoredAccount) -> TokenSet | None:
        raise RuntimeError("upstream down")

    with pytest.raises(RuntimeError):
        await store.refresh_locked(account.id, boom)
    assert (await store.get(account.id)).access_token == "at-1"  # type: ignore[union-attr]
    with pytest.raises(KeyError):
        await store.refresh_locked("missing", boom)


async def test_delete_cascades_snapshots_and_keeps_request_logs(
        store: AccountStore, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    account, _ = await _login(store)
    await store.save_usage_snapshot(account.id, primary=UsageWindow(1.0), secondary=None, at=10.0)
    await insert_request_logs(sessionmaker, [{"time": 11.0, "endpoint": "/responses",
                                              "account_id": account.id}])
    assert await store.delete(account.id) is True
    assert await store.delete(account.id) is False
    assert await store.get(account.id) is None
    async with sessionmaker() as session:
        assert (await session.execute(text("SELECT count(*) FROM usage_snapshots"))).scalar() == 0
    logs = await recent_request_logs(sessionmaker)
    assert [(row["time"], row["account_id"]) for row in logs] == [(11.0, account.id)]  # history keeps the id


async def test_usage_snapshots_history_and_prune(store: AccountStore) -> None:
    account, _ = await _login(store)
    for at, used in ((100.0, 10.0), (200.0, 20.0), (300.0, 30.0)):
        await store.save_usage_snapshot(account.id, primary=UsageWindow(used, 300, at + 5),
                                        secondary=UsageWindow(used / 2, 10080), credits=used, at=at)
    history = await store.usage_history(account.id)
    assert [(s.time, s.primary.used_percent, s.secondary.used_percent, s.credits) for s in history] == [
        (100.0, 10.0, 5.0, 10.0), (200.0, 20.0, 10.0, 20.0), (300.0, 30.0, 15.0, 30.0)]
    got = await store.get(account.id)
    assert (got.primary, got.credits) == (UsageWindow(30.0, 300, 305.0), 30.0)  # type: ignore[union-attr]
    assert await store.prune_snapshots(older_than=250.0) == 2
    assert [s.time for s in await store.usage_history(account.id, since=0)] == [300.0]


async def test_tokens_survive_a_restart(store: AccountStore, settings: Settings) -> None:
    account, _ = await _login(store)
    engine = make_engine(settings)
    try:
        reopened = AccountStore(make_sessionmaker(engine), await load_cipher(settings, engine))
        assert (await reopened.get(account.id)).refresh_token == "rt-1"  # type: ignore[union-attr]
    finally:
        await engine.dispose()


def test_stored_account_repr_hides_tokens() -> None:
    account = StoredAccount(id="a", label="l", email=None, chatgpt_account_id=None, plan_type=None,
                            status=AccountStatus.ACTIVE, status_reason=None, priority=0,
                            access_token="secret-at", refresh_token="secret-rt", id_token=None,
                            token_issued_at=None, token_refreshed_at=None, cooldown_until=0.0,
                            last_used_at=None, primary_used_percent=None, primary_window_minutes=None,
                            primary_resets_at=None, secondary_used_percent=None,
                            secondary_window_minutes=None, secondary_resets_at=None, credits=None,
                            created_at=0.0, updated_at=0.0)
    assert "secret" not in repr(account)
