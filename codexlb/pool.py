"""The in-memory account pool: routing state without a database round-trip.

Accounts are loaded from the store at start. Changes (cooldowns, usage windows, statuses)
are applied here at once and written back in the background by :meth:`AccountPool.flush`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from codexlb.types import Account, AccountStatus, UsageWindow

if TYPE_CHECKING:
    from codexlb.db.store import AccountStore, StoredAccount

log = logging.getLogger("codexlb.pool")
LIMITED = (AccountStatus.RATE_LIMITED, AccountStatus.QUOTA_EXCEEDED)
CAP_REASON = "cap:"
"""Prefix of the status reason of an account held back by its own usage cap."""
SPENT_REASON = "usage: window spent"
WEEK_MINUTES = 24 * 60


@dataclass(slots=True)
class Credentials:
    """Decrypted tokens of one account, kept out of :class:`Account` so plugins never see them."""

    access_token: str
    refresh_token: str | None = None
    id_token: str | None = None
    refreshed_at: float | None = None

    def __repr__(self) -> str:
        return "Credentials(***)"


SAME_WINDOW_SECONDS = 5.0
"""Two readings of a usage window whose resets are this close are readings of the same window."""


def newer_window(mine: UsageWindow, theirs: UsageWindow) -> UsageWindow | None:
    """The newer of two readings of one usage window: a later reset is a later window, and within
    a window usage only grows. ``None`` without both reset times to compare."""
    if mine.resets_at is None or theirs.resets_at is None:
        return None
    if abs(theirs.resets_at - mine.resets_at) > SAME_WINDOW_SECONDS:
        return theirs if theirs.resets_at > mine.resets_at else mine
    return theirs if theirs.used_percent >= mine.used_percent else mine


def account_from_stored(row: StoredAccount) -> Account:
    """The routing state of a stored account (label falls back to the email or id)."""
    account = row.to_account()
    account.label = row.label or row.email or row.id[:8]
    return account


STATUS, USAGE = "status", "usage"
"""Field groups written back separately, so one replica's usage update never undoes another's pause."""
ADMIN_STATUSES = (AccountStatus.PAUSED, AccountStatus.DEACTIVATED, AccountStatus.REAUTH_REQUIRED)
"""Statuses a person or a permanent failure sets; routing (active, limits) must not overwrite them."""


def persisted_fields(account: Account, groups: Iterable[str] = (STATUS, USAGE)) -> dict[str, Any]:
    """The columns the pool writes back for ``account``, by field group."""
    fields: dict[str, Any] = {}
    if STATUS in groups:
        fields.update(status=account.status.value, status_reason=account.status_reason,
                      cooldown_until=account.cooldown_until)
    if USAGE in groups:
        fields.update(
            last_used_at=account.last_used_at, plan_type=account.plan_type, credits=account.credits,
            primary_used_percent=account.primary.used_percent,
            primary_window_minutes=account.primary.window_minutes, primary_resets_at=account.primary.resets_at,
            secondary_used_percent=account.secondary.used_percent,
            secondary_window_minutes=account.secondary.window_minutes,
            secondary_resets_at=account.secondary.resets_at)
    return fields


class AccountPool:
    """Accounts by id, their credentials, and which of them changed since the last flush."""

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.credentials: dict[str, Credentials] = {}
        self._dirty: dict[str, set[str]] = {}
        self._seen: dict[str, float] = {}

    # -- loading -------------------------------------------------------------------------

    def load(self, rows: Iterable[StoredAccount]) -> None:
        for row in rows:
            self.put(row)

    def put(self, row: StoredAccount) -> Account:
        """Add or replace an account from its stored row (after login, import or refresh)."""
        account = account_from_stored(row)
        if row.id in self.accounts:  # keep live usage if the row is older than what we saw
            old = self.accounts[row.id]
            account.primary, account.secondary = old.primary, old.secondary
            account.last_used_at = old.last_used_at or account.last_used_at
        self.accounts[row.id] = account
        self._seen[row.id] = row.updated_at
        if row.access_token:
            self.credentials[row.id] = Credentials(row.access_token, row.refresh_token, row.id_token,
                                                   row.token_refreshed_at)
        return account

    def sync(self, rows: Iterable[StoredAccount]) -> None:
        """Merge the database's view: new accounts join, removed ones leave, newer rows win.

        Field groups changed here and not yet flushed keep their in-memory values; usage windows
        keep the newer reading (:func:`newer_window`), so another replica's late write of an older
        reading never undoes what this one saw since.
        """
        ids = set()
        for row in rows:
            ids.add(row.id)
            if row.updated_at <= self._seen.get(row.id, -1.0):
                continue
            fresh = row.id not in self.accounts
            account = account_from_stored(row)
            if fresh:
                self.accounts[row.id] = account
            else:
                current, dirty = self.accounts[row.id], self._dirty.get(row.id, set())
                names = ["label", "email", "priority", "max_primary_percent", "max_secondary_percent"]
                names += [] if STATUS in dirty else ["status", "status_reason", "cooldown_until"]
                names += [] if USAGE in dirty else ["plan_type", "credits"]
                for name in names:
                    setattr(current, name, getattr(account, name))
                for which in ("primary", "secondary"):
                    mine, theirs = getattr(current, which), getattr(account, which)
                    setattr(current, which, newer_window(mine, theirs) or (mine if USAGE in dirty else theirs))
            self._seen[row.id] = row.updated_at
            if row.access_token:
                self.credentials[row.id] = Credentials(row.access_token, row.refresh_token, row.id_token,
                                                       row.token_refreshed_at)
        for gone in set(self.accounts) - ids:
            self.remove(gone)

    def remove(self, account_id: str) -> None:
        self.accounts.pop(account_id, None)
        self.credentials.pop(account_id, None)
        self._dirty.pop(account_id, None)
        self._seen.pop(account_id, None)

    # -- reading -------------------------------------------------------------------------

    def get(self, account_id: str) -> Account | None:
        return self.accounts.get(account_id)

    def all(self) -> list[Account]:
        return list(self.accounts.values())

    def usable(self, exclude: Iterable[str] = (), now: float | None = None) -> list[Account]:
        """Accounts that may be routed to now, minus ``exclude``; expired limits are lifted."""
        now = time.time() if now is None else now
        excluded = set(exclude)
        out = []
        for account in self.accounts.values():
            if account.id in excluded:
                continue
            if (account.status is AccountStatus.ACTIVE and account.max_primary_percent is None
                    and account.max_secondary_percent is None and account.primary.used_percent < 100.0
                    and account.secondary.used_percent < 100.0):
                if account.cooldown_until <= now:  # the common case: no cap, nothing spent, nothing to lift
                    out.append(account)
                continue
            self._hold_back(account, now)
            if account.status in LIMITED and account.cooldown_until <= now:
                self.set_status(account, AccountStatus.ACTIVE, None)
            if account.usable(now):
                out.append(account)
        return out

    def _hold_back(self, account: Account, now: float) -> None:
        """Limit an account whose reported usage is at its cap or spent; lift a cap that no longer holds.

        So every strategy sees capped and spent accounts as unusable, and a pool where all are
        gives a 429 carrying the earliest reset.
        """
        capped = account.capped(now)
        if account.status is AccountStatus.RATE_LIMITED and (account.status_reason or "").startswith(CAP_REASON):
            if capped is None:
                account.cooldown_until = now
                self.set_status(account, AccountStatus.ACTIVE, None)
                self.mark_dirty(account, STATUS)
            return
        if account.status is not AccountStatus.ACTIVE:
            return
        window = account.spent(now)
        if window is not None:
            weekly = (window.window_minutes or 0) >= WEEK_MINUTES or window is account.secondary
            status = AccountStatus.QUOTA_EXCEEDED if weekly else AccountStatus.RATE_LIMITED
            self.cool_down(account, window.resets_at or now, status=status, reason=SPENT_REASON)
        elif capped is not None:
            which = "primary" if capped is account.primary else "secondary"
            cap = account.max_primary_percent if capped is account.primary else account.max_secondary_percent
            self.cool_down(account, capped.resets_at or now + 3600.0, status=AccountStatus.RATE_LIMITED,
                           reason=f"{CAP_REASON} {which} window at {capped.used_percent:g}% (cap {cap:g}%)")

    def next_available_at(self, now: float | None = None) -> float | None:
        """Earliest time a limited or cooling-down account becomes usable again."""
        now = time.time() if now is None else now
        for account in self.accounts.values():
            self._hold_back(account, now)
        times = [a.cooldown_until for a in self.accounts.values()
                 if a.cooldown_until > now and a.status in (AccountStatus.ACTIVE, *LIMITED)]
        return min(times) if times else None

    # -- changing ------------------------------------------------------------------------

    def mark_dirty(self, account: Account, group: str = USAGE) -> None:
        """Remember to write ``account``'s ``group`` fields (usage windows, or status and cooldown)."""
        self._dirty.setdefault(account.id, set()).add(group)

    def set_status(self, account: Account, status: AccountStatus, reason: str | None) -> None:
        if account.status is not status or account.status_reason != reason:
            if status is not account.status:
                log.info("account %s: %s -> %s%s", account.label, account.status.value, status.value,
                         f" ({reason})" if reason else "")
            account.status, account.status_reason = status, reason
            self.mark_dirty(account, STATUS)

    def cool_down(self, account: Account, until: float, *, status: AccountStatus | None = None,
                  reason: str | None = None) -> None:
        """Keep ``account`` out of routing until ``until`` (and set a status such as rate_limited)."""
        account.cooldown_until = max(account.cooldown_until, until)
        if status is not None:
            self.set_status(account, status, reason)
        self.mark_dirty(account, STATUS)

    def touch(self, account: Account, now: float | None = None) -> None:
        account.last_used_at = time.time() if now is None else now
        self.mark_dirty(account)

    async def flush(self, store: AccountStore) -> int:
        """Write changed field groups back; returns how many accounts were written.

        A routing status (active, rate limited) never overwrites a status a person or a permanent
        failure set meanwhile elsewhere (paused, deactivated, re-login): that one is adopted here.
        Kept dirty on failure.
        """
        dirty, self._dirty = self._dirty, {}
        written = 0
        for account_id, groups in dirty.items():
            account = self.accounts.get(account_id)
            if account is None:
                continue
            try:
                if STATUS in groups and account.status not in ADMIN_STATUSES:
                    row = await store.get(account_id)
                    if row is not None and row.status in ADMIN_STATUSES and row.updated_at > self._seen.get(
                            account_id, -1.0):
                        account.status, account.status_reason = row.status, row.status_reason
                        groups = groups - {STATUS}
                if groups:
                    await store.update(account_id, **persisted_fields(account, groups))
                written += 1
            except Exception:
                for group in groups:
                    self.mark_dirty(account, group)
                log.warning("could not save account %s; will retry", account.label, exc_info=True)
        return written
