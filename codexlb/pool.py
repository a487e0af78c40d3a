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

from codexlb.types import Account, AccountStatus

if TYPE_CHECKING:
    from codexlb.db.store import AccountStore, StoredAccount

log = logging.getLogger("codexlb.pool")
LIMITED = (AccountStatus.RATE_LIMITED, AccountStatus.QUOTA_EXCEEDED)


@dataclass(slots=True)
class Credentials:
    """Decrypted tokens of one account, kept out of :class:`Account` so plugins never see them."""

    access_token: str
    refresh_token: str | None = None
    id_token: str | None = None
    refreshed_at: float | None = None

    def __repr__(self) -> str:
        return "Credentials(***)"


def account_from_stored(row: StoredAccount) -> Account:
    """The routing state of a stored account (label falls back to the email or id)."""
    account = row.to_account()
    account.label = row.label or row.email or row.id[:8]
    return account


def persisted_fields(account: Account) -> dict[str, Any]:
    """The columns the pool writes back for ``account``."""
    return {
        "status": account.status.value, "status_reason": account.status_reason,
        "cooldown_until": account.cooldown_until, "last_used_at": account.last_used_at,
        "plan_type": account.plan_type, "credits": account.credits,
        "primary_used_percent": account.primary.used_percent,
        "primary_window_minutes": account.primary.window_minutes,
        "primary_resets_at": account.primary.resets_at,
        "secondary_used_percent": account.secondary.used_percent,
        "secondary_window_minutes": account.secondary.window_minutes,
        "secondary_resets_at": account.secondary.resets_at,
    }


class AccountPool:
    """Accounts by id, their credentials, and which of them changed since the last flush."""

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.credentials: dict[str, Credentials] = {}
        self._dirty: set[str] = set()
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

        Accounts changed here and not yet flushed keep their in-memory state.
        """
        ids = set()
        for row in rows:
            ids.add(row.id)
            if row.id in self._dirty or row.updated_at <= self._seen.get(row.id, -1.0):
                continue
            fresh = row.id not in self.accounts
            account = account_from_stored(row)
            if fresh:
                self.accounts[row.id] = account
            else:
                current = self.accounts[row.id]
                for name in ("label", "email", "plan_type", "status", "status_reason", "priority",
                             "cooldown_until", "primary", "secondary", "credits"):
                    setattr(current, name, getattr(account, name))
            self._seen[row.id] = row.updated_at
            if row.access_token:
                self.credentials[row.id] = Credentials(row.access_token, row.refresh_token, row.id_token,
                                                       row.token_refreshed_at)
        for gone in set(self.accounts) - ids:
            self.remove(gone)

    def remove(self, account_id: str) -> None:
        self.accounts.pop(account_id, None)
        self.credentials.pop(account_id, None)
        self._dirty.discard(account_id)
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
            if account.status in LIMITED and account.cooldown_until <= now:
                self.set_status(account, AccountStatus.ACTIVE, None)
            if account.usable(now):
                out.append(account)
        return out

    def next_available_at(self, now: float | None = None) -> float | None:
        """Earliest time a limited or cooling-down account becomes usable again."""
        now = time.time() if now is None else now
        times = [a.cooldown_until for a in self.accounts.values()
                 if a.cooldown_until > now and a.status in (AccountStatus.ACTIVE, *LIMITED)]
        return min(times) if times else None

    # -- changing ------------------------------------------------------------------------

    def mark_dirty(self, account: Account) -> None:
        self._dirty.add(account.id)

    def set_status(self, account: Account, status: AccountStatus, reason: str | None) -> None:
        if account.status is not status or account.status_reason != reason:
            if status is not account.status:
                log.info("account %s: %s -> %s%s", account.label, account.status.value, status.value,
                         f" ({reason})" if reason else "")
            account.status, account.status_reason = status, reason
            self.mark_dirty(account)

    def cool_down(self, account: Account, until: float, *, status: AccountStatus | None = None,
                  reason: str | None = None) -> None:
        """Keep ``account`` out of routing until ``until`` (and set a status such as rate_limited)."""
        account.cooldown_until = max(account.cooldown_until, until)
        if status is not None:
            self.set_status(account, status, reason)
        self.mark_dirty(account)

    def touch(self, account: Account, now: float | None = None) -> None:
        account.last_used_at = time.time() if now is None else now
        self.mark_dirty(account)

    async def flush(self, store: AccountStore) -> int:
        """Write changed accounts back; returns how many were written. Kept dirty on failure."""
        dirty, self._dirty = self._dirty, set()
        written = 0
        for account_id in dirty:
            account = self.accounts.get(account_id)
            if account is None:
                continue
            try:
                await store.update(account_id, **persisted_fields(account))
                written += 1
            except Exception:
                self._dirty.add(account_id)
                log.warning("could not save account %s; will retry", account.label, exc_info=True)
        return written
