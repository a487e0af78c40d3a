"""The account store: the only way other code reads or writes account rows.

It returns plain dataclasses (never ORM rows), decrypts tokens on the way out and encrypts them on
the way in. Every method is one transaction. :meth:`AccountStore.refresh_locked` gives a token
refresh single flight across processes by holding a row lock (PostgreSQL ``SELECT ... FOR UPDATE``)
or the database write lock (SQLite ``BEGIN IMMEDIATE``) while the refresh runs.
"""

from __future__ import annotations

import builtins
import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError

from codexlb.db.engine import begin_write
from codexlb.db.models import AccountRow, UsageSnapshotRow
from codexlb.db.requestlog import latest_accounts_by_session
from codexlb.types import Account, AccountStatus, UsageWindow

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from codexlb.db.crypto import TokenCipher

USAGE_FIELDS = ("primary_used_percent", "primary_window_minutes", "primary_resets_at",
                "secondary_used_percent", "secondary_window_minutes", "secondary_resets_at", "credits")
UPDATABLE_FIELDS = frozenset({"label", "email", "plan_type", "status", "status_reason", "priority",
                              "cooldown_until", "last_used_at", *USAGE_FIELDS,
                              "max_primary_percent", "max_secondary_percent"})
"""Columns :meth:`AccountStore.update` accepts (never tokens: use ``save_tokens``)."""


def default_label(chatgpt_account_id: str | None) -> str:
    """``acct-<8 hex>`` derived from the ChatGPT account id: stable, and not the owner's email."""
    return "acct-" + hashlib.sha256((chatgpt_account_id or uuid.uuid4().hex).encode()).hexdigest()[:8]


class AmbiguousAccount(LookupError):
    """A reference given to :meth:`AccountStore.find` matches more than one account."""

    def __init__(self, ref: str, matches: list[StoredAccount]) -> None:
        self.ref, self.matches = ref, matches
        names = ", ".join(f"{a.id[:8]} ({a.label})" for a in matches)
        super().__init__(f"{ref!r} matches {len(matches)} accounts: {names}; use a longer id")


@dataclass(slots=True)
class TokenSet:
    """Tokens returned by a refresh. ``None`` for ``refresh_token``/``id_token`` keeps the stored one."""

    access_token: str
    refresh_token: str | None
    id_token: str | None
    refreshed_at: float = field(default_factory=time.time)


@dataclass(slots=True)
class StoredAccount:
    """One account row with decrypted tokens (keep it away from logs and plugins)."""

    id: str
    label: str
    email: str | None
    chatgpt_account_id: str | None
    plan_type: str | None
    status: AccountStatus
    status_reason: str | None
    priority: int
    access_token: str | None = field(repr=False)
    refresh_token: str | None = field(repr=False)
    id_token: str | None = field(repr=False)
    token_issued_at: float | None
    """When the current tokens were stored (login or refresh)."""
    token_refreshed_at: float | None
    """Last login or successful refresh; drives the refresh interval."""
    cooldown_until: float
    last_used_at: float | None
    primary_used_percent: float | None
    primary_window_minutes: int | None
    primary_resets_at: float | None
    secondary_used_percent: float | None
    secondary_window_minutes: int | None
    secondary_resets_at: float | None
    credits: float | None
    created_at: float
    updated_at: float
    max_primary_percent: float | None = None
    max_secondary_percent: float | None = None

    @property
    def primary(self) -> UsageWindow:
        return UsageWindow(self.primary_used_percent or 0.0, self.primary_window_minutes,
                           self.primary_resets_at)

    @property
    def secondary(self) -> UsageWindow:
        return UsageWindow(self.secondary_used_percent or 0.0, self.secondary_window_minutes,
                           self.secondary_resets_at)

    def to_account(self) -> Account:
        """The in-memory account (no secrets)."""
        return Account(id=self.id, label=self.label, email=self.email,
                       chatgpt_account_id=self.chatgpt_account_id, plan_type=self.plan_type,
                       status=self.status, status_reason=self.status_reason, priority=self.priority,
                       cooldown_until=self.cooldown_until, last_used_at=self.last_used_at,
                       primary=self.primary, secondary=self.secondary, credits=self.credits,
                       max_primary_percent=self.max_primary_percent,
                       max_secondary_percent=self.max_secondary_percent)


@dataclass(frozen=True, slots=True)
class UsageSnapshot:
    """One point of an account's usage history."""

    account_id: str
    time: float
    primary: UsageWindow
    secondary: UsageWindow
    credits: float | None


def _window_columns(prefix: str, window: UsageWindow | None) -> dict[str, Any]:
    if window is None:
        return {}
    return {f"{prefix}_used_percent": window.used_percent, f"{prefix}_window_minutes": window.window_minutes,
            f"{prefix}_resets_at": window.resets_at}


class AccountStore:
    """Reads and writes accounts through a session factory, encrypting tokens with ``cipher``."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], cipher: TokenCipher) -> None:
        self._sessionmaker = sessionmaker
        self._cipher = cipher

    # -- reading ------------------------------------------------------------------------------
    async def list(self) -> list[StoredAccount]:
        """Every account, oldest first."""
        async with self._sessionmaker() as session:
            rows = (await session.scalars(select(AccountRow).order_by(AccountRow.created_at,
                                                                      AccountRow.id))).all()
        return [self._stored(row) for row in rows]

    async def get(self, id: str) -> StoredAccount | None:
        async with self._sessionmaker() as session:
            row = await session.get(AccountRow, id)
        return None if row is None else self._stored(row)

    async def find(self, ref: str) -> StoredAccount | None:
        """Look an account up by id, label, email, ChatGPT account id or a unique id prefix.

        :raises AmbiguousAccount: ``ref`` names several accounts.
        """
        ref = ref.strip()
        if not ref:
            return None
        async with self._sessionmaker() as session:
            row = await session.get(AccountRow, ref)
            if row is not None:
                return self._stored(row)
            for condition in (
                or_(AccountRow.label == ref, func.lower(AccountRow.email) == ref.lower(),
                    AccountRow.chatgpt_account_id == ref),
                AccountRow.id.startswith(ref.lower(), autoescape=True),
            ):
                rows = (await session.scalars(select(AccountRow).where(condition).limit(10))).all()
                if len(rows) == 1:
                    return self._stored(rows[0])
                if rows:
                    raise AmbiguousAccount(ref, [self._stored(r) for r in rows])
        return None

    # -- writing ------------------------------------------------------------------------------
    async def upsert(self, *, chatgpt_account_id: str | None, email: str | None, plan_type: str | None,
                     access_token: str, refresh_token: str | None, id_token: str | None,
                     label: str | None = None, token_refreshed_at: float | None = None,
                     ) -> tuple[StoredAccount, bool]:
        """Store a login: update the account with this ``chatgpt_account_id``, or create one.

        A re-login of an account in ``reauth_required`` makes it ``active`` again; other statuses
        (e.g. ``paused``) stay. ``label=None`` keeps the existing label (new accounts: :func:`default_label`).

        :returns: ``(account, created)``.
        """
        for attempt in range(2):
            now = time.time()
            try:
                async with begin_write(self._sessionmaker) as session:
                    row = None
                    if chatgpt_account_id is not None:
                        row = await session.scalar(select(AccountRow).where(
                            AccountRow.chatgpt_account_id == chatgpt_account_id).with_for_update())
                    created = row is None
                    if row is None:
                        row = AccountRow(id=uuid.uuid4().hex,
                                         label=label or default_label(chatgpt_account_id),
                                         status=AccountStatus.ACTIVE.value, priority=0, cooldown_until=0.0,
                                         created_at=now)
                        session.add(row)
                    elif label is not None:
                        row.label = label
                    if row.status == AccountStatus.REAUTH_REQUIRED.value:
                        row.status, row.status_reason = AccountStatus.ACTIVE.value, None
                    row.chatgpt_account_id = chatgpt_account_id
                    row.email = email if email is not None else row.email
                    row.plan_type = plan_type if plan_type is not None else row.plan_type
                    self._set_tokens(row, access_token, refresh_token, id_token,
                                     token_refreshed_at if token_refreshed_at is not None else now, now)
                    await session.flush()
                    stored = self._stored(row)
                return stored, created
            except IntegrityError:  # a concurrent login created the same account first
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def update(self, id: str, **fields: Any) -> None:
        """Set non-secret columns (see :data:`UPDATABLE_FIELDS`); ``primary=``/``secondary=`` take a
        :class:`UsageWindow`. A missing account is ignored (it may have been deleted meanwhile).
        """
        values = {**_window_columns("primary", fields.pop("primary", None)),
                  **_window_columns("secondary", fields.pop("secondary", None)), **fields}
        unknown = set(values) - UPDATABLE_FIELDS
        if unknown:
            raise TypeError(f"AccountStore.update() cannot set {', '.join(sorted(unknown))}")
        if "status" in values:
            values["status"] = AccountStatus(values["status"]).value
        if values.get("cooldown_until", 0.0) is None:
            values["cooldown_until"] = 0.0
        async with begin_write(self._sessionmaker) as session:
            row = await session.get(AccountRow, id)
            if row is not None:
                for name, value in values.items():
                    setattr(row, name, value)
                row.updated_at = time.time()

    async def save_tokens(self, id: str, *, access_token: str, refresh_token: str | None,
                          id_token: str | None, refreshed_at: float) -> None:
        """Store refreshed tokens (``None`` keeps the stored refresh/id token).

        :raises KeyError: no such account.
        """
        async with begin_write(self._sessionmaker) as session:
            row = await session.get(AccountRow, id, with_for_update=True)
            if row is None:
                raise KeyError(id)
            self._set_tokens(row, access_token, refresh_token, id_token, refreshed_at, time.time())

    async def refresh_locked(self, id: str,
                             fn: Callable[[StoredAccount], Awaitable[TokenSet | None]]) -> StoredAccount:
        """Run ``fn`` on the current row while holding its lock; store what it returns.

        Concurrent callers (in this or other processes) run one after another, and each sees the
        tokens the previous one stored, so ``fn`` can return ``None`` when they are already fresh.
        If ``fn`` raises, nothing is written and the error propagates.

        :raises KeyError: no such account.
        """
        async with begin_write(self._sessionmaker) as session:
            row = await session.scalar(select(AccountRow).where(AccountRow.id == id).with_for_update())
            if row is None:
                raise KeyError(id)
            tokens = await fn(self._stored(row))
            if tokens is not None:
                self._set_tokens(row, tokens.access_token, tokens.refresh_token, tokens.id_token,
                                 tokens.refreshed_at, time.time())
                await session.flush()
            return self._stored(row)

    async def delete(self, id: str) -> bool:
        """Delete an account (its snapshots go too; its request logs keep a NULL account)."""
        async with begin_write(self._sessionmaker) as session:
            result = await session.execute(delete(AccountRow).where(AccountRow.id == id))
        return bool(result.rowcount)  # type: ignore[attr-defined]

    # -- usage history -----------------------------------------------------------------------
    async def save_usage_snapshot(self, account_id: str, *, primary: UsageWindow | None,
                                  secondary: UsageWindow | None, credits: float | None = None,
                                  at: float | None = None, update_account: bool = True) -> None:
        """Append a usage snapshot and (by default) copy it onto the account row, in one transaction."""
        at = time.time() if at is None else at
        columns = {**_window_columns("primary", primary), **_window_columns("secondary", secondary),
                   "credits": credits}
        async with begin_write(self._sessionmaker) as session:
            session.add(UsageSnapshotRow(account_id=account_id, time=at, **columns))
            if update_account:
                row = await session.get(AccountRow, account_id)
                if row is not None:
                    for name, value in columns.items():
                        setattr(row, name, value)
                    row.updated_at = time.time()

    async def usage_history(self, account_id: str, *,
                            since: float | None = None) -> builtins.list[UsageSnapshot]:
        """Snapshots of one account, oldest first."""
        query = select(UsageSnapshotRow).where(UsageSnapshotRow.account_id == account_id)
        if since is not None:
            query = query.where(UsageSnapshotRow.time >= since)
        async with self._sessionmaker() as session:
            rows = (await session.scalars(query.order_by(UsageSnapshotRow.time))).all()
        return [UsageSnapshot(r.account_id, r.time,
                              UsageWindow(r.primary_used_percent or 0.0, r.primary_window_minutes,
                                          r.primary_resets_at),
                              UsageWindow(r.secondary_used_percent or 0.0, r.secondary_window_minutes,
                                          r.secondary_resets_at), r.credits) for r in rows]

    async def prune_snapshots(self, older_than: float) -> int:
        """Delete snapshots taken before ``older_than`` (unix time); return how many."""
        async with begin_write(self._sessionmaker) as session:
            result = await session.execute(delete(UsageSnapshotRow).where(UsageSnapshotRow.time < older_than))
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def pinned_conversations(self, since: float, *, limit: int = 100_000) -> dict[str, int]:
        """Conversations per account id: each counts for the account its newest answered turn since
        ``since`` went to (from the request log; at most ``limit`` newest rows are read)."""
        counts: dict[str, int] = {}
        for account_id in (await latest_accounts_by_session(self._sessionmaker, since=since, limit=limit)).values():
            counts[account_id] = counts.get(account_id, 0) + 1
        return counts

    # -- helpers ------------------------------------------------------------------------------
    def _set_tokens(self, row: AccountRow, access_token: str, refresh_token: str | None,
                    id_token: str | None, refreshed_at: float, now: float) -> None:
        row.access_token_enc = self._cipher.encrypt(access_token)
        if refresh_token is not None:
            row.refresh_token_enc = self._cipher.encrypt(refresh_token)
        if id_token is not None:
            row.id_token_enc = self._cipher.encrypt(id_token)
        row.token_issued_at, row.token_refreshed_at, row.updated_at = now, refreshed_at, now

    def _decrypt(self, value: str | None) -> str | None:
        return None if value is None else self._cipher.decrypt(value)

    def _stored(self, row: AccountRow) -> StoredAccount:
        return StoredAccount(
            id=row.id, label=row.label, email=row.email, chatgpt_account_id=row.chatgpt_account_id,
            plan_type=row.plan_type, status=AccountStatus(row.status), status_reason=row.status_reason,
            priority=row.priority, access_token=self._decrypt(row.access_token_enc),
            refresh_token=self._decrypt(row.refresh_token_enc), id_token=self._decrypt(row.id_token_enc),
            token_issued_at=row.token_issued_at, token_refreshed_at=row.token_refreshed_at,
            cooldown_until=row.cooldown_until or 0.0, last_used_at=row.last_used_at,
            primary_used_percent=row.primary_used_percent, primary_window_minutes=row.primary_window_minutes,
            primary_resets_at=row.primary_resets_at, secondary_used_percent=row.secondary_used_percent,
            secondary_window_minutes=row.secondary_window_minutes,
            secondary_resets_at=row.secondary_resets_at, credits=row.credits,
            created_at=row.created_at, updated_at=row.updated_at,
            max_primary_percent=row.max_primary_percent, max_secondary_percent=row.max_secondary_percent)
