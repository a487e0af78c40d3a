"""The in-memory pool: usability, cooldowns, and merging the database's view."""

from __future__ import annotations

import dataclasses
import time

from codexlb.db.store import StoredAccount
from codexlb.pool import AccountPool
from codexlb.types import AccountStatus, UsageWindow


def stored(id: str, **changes: object) -> StoredAccount:
    now = time.time()
    row = StoredAccount(id=id, label=id, email=f"{id}@x", chatgpt_account_id=f"c-{id}", plan_type="plus",
                        status=AccountStatus.ACTIVE, status_reason=None, priority=0, access_token=f"at-{id}",
                        refresh_token=f"rt-{id}", id_token=None, token_issued_at=now, token_refreshed_at=now,
                        cooldown_until=0.0, last_used_at=None, primary_used_percent=0.0,
                        primary_window_minutes=300, primary_resets_at=None, secondary_used_percent=0.0,
                        secondary_window_minutes=10080, secondary_resets_at=None, credits=None,
                        created_at=now, updated_at=now)
    return dataclasses.replace(row, **changes)


def test_expired_limit_lifted_on_read() -> None:
    pool = AccountPool()
    account = pool.put(stored("a"))
    pool.cool_down(account, time.time() - 1, status=AccountStatus.RATE_LIMITED, reason="usage_limit_reached")
    assert [a.id for a in pool.usable()] == ["a"] and account.status is AccountStatus.ACTIVE


def test_cooldown_and_next_available() -> None:
    pool = AccountPool()
    a, b = pool.put(stored("a")), pool.put(stored("b"))
    until = time.time() + 100
    pool.cool_down(a, until, status=AccountStatus.RATE_LIMITED)
    assert [x.id for x in pool.usable()] == ["b"]
    assert pool.next_available_at() == until
    assert [x.id for x in pool.usable(exclude=["b"])] == []
    assert b.usable()


def test_sync_adds_removes_and_applies_newer_rows() -> None:
    pool = AccountPool()
    pool.load([stored("a"), stored("b")])
    row_a = stored("a", status=AccountStatus.PAUSED, label="renamed", updated_at=time.time() + 5,
                   access_token="at-new")
    pool.sync([row_a, stored("c")])
    assert set(pool.accounts) == {"a", "c"}
    assert pool.accounts["a"].status is AccountStatus.PAUSED and pool.accounts["a"].label == "renamed"
    assert pool.credentials["a"].access_token == "at-new" and "b" not in pool.credentials


def test_sync_keeps_unflushed_local_changes() -> None:
    pool = AccountPool()
    account = pool.put(stored("a"))
    pool.cool_down(account, time.time() + 60, status=AccountStatus.RATE_LIMITED)
    pool.sync([stored("a", updated_at=time.time() + 5)])
    assert account.status is AccountStatus.RATE_LIMITED


def test_sync_ignores_rows_not_newer() -> None:
    pool = AccountPool()
    row = stored("a")
    account = pool.put(row)
    account.label = "local"
    pool.sync([dataclasses.replace(row, label="db")])
    assert account.label == "local"


class MemoryStore:
    """Just enough of AccountStore for flush: rows by id, updates recorded."""

    def __init__(self, *rows: StoredAccount) -> None:
        self.rows = {r.id: r for r in rows}
        self.updates: list[dict[str, object]] = []

    async def get(self, id: str) -> StoredAccount | None:
        return self.rows.get(id)

    async def update(self, id: str, **fields: object) -> None:
        self.updates.append(fields)


async def test_usage_flush_never_writes_status() -> None:
    pool = AccountPool()
    account = pool.put(stored("a"))
    pool.touch(account)
    store = MemoryStore(stored("a"))
    await pool.flush(store)  # type: ignore[arg-type]
    assert store.updates and "status" not in store.updates[0] and "last_used_at" in store.updates[0]


async def test_routing_status_does_not_undo_a_pause_made_elsewhere() -> None:
    pool = AccountPool()
    account = pool.put(stored("a"))
    pool.cool_down(account, time.time() + 30)  # a transient failure here...
    paused = stored("a", status=AccountStatus.PAUSED, updated_at=time.time() + 5)  # ...while paused there
    store = MemoryStore(paused)
    await pool.flush(store)  # type: ignore[arg-type]
    assert account.status is AccountStatus.PAUSED
    assert all("status" not in update for update in store.updates)


def test_sync_applies_status_while_only_usage_is_unflushed() -> None:
    pool = AccountPool()
    account = pool.put(stored("a"))
    pool.touch(account)
    pool.sync([stored("a", status=AccountStatus.PAUSED, updated_at=time.time() + 5)])
    assert account.status is AccountStatus.PAUSED


def test_sync_keeps_the_newer_reading_of_a_usage_window() -> None:
    pool = AccountPool()
    account = pool.put(stored("a"))
    reset = time.time() + 3600
    account.primary = UsageWindow(80.0, 300, reset)  # read from an answer here, written back since
    later = time.time() + 5
    pool.sync([stored("a", primary_used_percent=60.0, primary_resets_at=reset + 1, updated_at=later)])
    assert account.primary.used_percent == 80.0  # another replica's older reading of the same window
    pool.sync([stored("a", primary_used_percent=85.0, primary_resets_at=reset, updated_at=later + 1)])
    assert account.primary.used_percent == 85.0
    pool.sync([stored("a", primary_used_percent=3.0, primary_resets_at=reset + 300 * 60, updated_at=later + 2)])
    assert (account.primary.used_percent, account.primary.resets_at) == (3.0, reset + 300 * 60)  # the next window
