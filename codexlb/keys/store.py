"""The key store: the only code that reads or writes ``api_keys`` and ``api_key_counters``.

Returns plain :class:`ApiKey` records (the hash, never a key). Every method is one transaction.
Used by the CLI, ``/api/keys`` and the ``api_keys`` plugin's background sync, never per request.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from codexlb.db.engine import begin_write
from codexlb.db.models import ApiKeyCounterRow, ApiKeyRow
from codexlb.keys.limits import Limit, limit_from_dict
from codexlb.keys.secret import hash_key, new_key, shown_prefix

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from codexlb.settings import Settings

COUNTS = ("requests", "input_tokens", "cached_tokens", "output_tokens")
"""Counter columns, in the order :class:`Counts` tuples use."""
COUNTER_RETENTION_SECONDS = 40 * 86400
"""Counters of windows that ended longer ago than this are deleted by :meth:`KeyStore.sync_counters`."""

Counts = tuple[int, int, int, int]
WindowKey = tuple[str, str, float]
"""``(key_id, window, window_start)``."""


class KeyExists(Exception):
    """Another key already has this name."""


class KeyNotFound(LookupError):
    """No key has this name (or id)."""


@dataclass(slots=True)
class ApiKey:
    """A stored key without its secret."""

    id: str
    name: str
    key_hash: str = field(repr=False)
    key_prefix: str
    limits: tuple[Limit, ...] = ()
    models: tuple[str, ...] | None = None
    accounts: tuple[str, ...] | None = None
    """Account ids the key may use (``None``: any)."""
    created_at: float = 0.0
    expires_at: float | None = None
    revoked_at: float | None = None
    rotated_at: float | None = None
    last_used_at: float | None = None

    def state(self, now: float | None = None) -> str:
        """``active``, ``revoked`` or ``expired``."""
        now = time.time() if now is None else now
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


def _record(row: ApiKeyRow) -> ApiKey:
    return ApiKey(id=row.id, name=row.name, key_hash=row.key_hash, key_prefix=row.key_prefix,
                  limits=tuple(limit_from_dict(item) for item in json.loads(row.limits or "[]")),
                  models=tuple(json.loads(row.models)) if row.models is not None else None,
                  accounts=tuple(json.loads(row.accounts)) if row.accounts is not None else None,
                  created_at=row.created_at, expires_at=row.expires_at, revoked_at=row.revoked_at,
                  rotated_at=row.rotated_at, last_used_at=row.last_used_at)


def _json_list(values: Sequence[str] | None) -> str | None:
    return None if values is None else json.dumps(list(values))


class KeyStore:
    """CRUD for keys and the shared window counters."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessionmaker = sessionmaker

    async def list(self) -> list[ApiKey]:
        """Every key (revoked and expired too), oldest first."""
        async with self.sessionmaker() as session:
            rows = (await session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.name))).all()
        return [_record(row) for row in rows]

    async def count(self) -> int:
        """How many keys are stored (revoked and expired too: they still make keys required)."""
        async with self.sessionmaker() as session:
            return int(await session.scalar(select(func.count()).select_from(ApiKeyRow)) or 0)

    async def get(self, name: str) -> ApiKey:
        """The key called ``name`` (or with that id). :raises KeyNotFound:"""
        async with self.sessionmaker() as session:
            row = (await session.scalars(select(ApiKeyRow).where(ApiKeyRow.name == name))).first()
            if row is None:
                row = await session.get(ApiKeyRow, name)
        if row is None:
            raise KeyNotFound(f"no API key named {name!r}")
        return _record(row)

    async def create(self, name: str, *, limits: Iterable[Limit] = (), models: Sequence[str] | None = None,
                     accounts: Sequence[str] | None = None, expires_at: float | None = None,
                     ) -> tuple[ApiKey, str]:
        """A new key; returns the record and the key itself (shown once, never stored).

        :raises KeyExists: the name is taken.
        """
        secret, now = new_key(), time.time()
        row = ApiKeyRow(id=uuid.uuid4().hex, name=name, key_hash=hash_key(secret), key_prefix=shown_prefix(secret),
                        limits=json.dumps([limit.as_dict() for limit in limits]), models=_json_list(models),
                        accounts=_json_list(accounts), created_at=now, expires_at=expires_at)
        try:
            async with begin_write(self.sessionmaker) as session:
                session.add(row)
        except IntegrityError:
            raise KeyExists(f"an API key named {name!r} already exists") from None
        return _record(row), secret

    async def revoke(self, name: str) -> ApiKey:
        """Mark the key revoked (it stays listed and its usage stays). :raises KeyNotFound:"""
        key = await self.get(name)
        async with begin_write(self.sessionmaker) as session:
            await session.execute(update(ApiKeyRow).where(ApiKeyRow.id == key.id, ApiKeyRow.revoked_at.is_(None))
                                  .values(revoked_at=time.time()))
        return await self.get(key.id)

    async def find_secret(self, secret: str) -> ApiKey | None:
        """The stored key whose secret is ``secret`` (any state), or ``None``."""
        async with self.sessionmaker() as session:
            row = (await session.scalars(select(ApiKeyRow).where(ApiKeyRow.key_hash == hash_key(secret)))).first()
        return None if row is None else _record(row)

    async def update(self, name: str, *, limits: Iterable[Limit], models: Sequence[str] | None,
                     accounts: Sequence[str] | None) -> ApiKey:
        """Replace the key's limits and scope (``None``: any model or account). :raises KeyNotFound:"""
        key = await self.get(name)
        async with begin_write(self.sessionmaker) as session:
            await session.execute(update(ApiKeyRow).where(ApiKeyRow.id == key.id).values(
                limits=json.dumps([limit.as_dict() for limit in limits]), models=_json_list(models),
                accounts=_json_list(accounts)))
        return await self.get(key.id)

    async def rotate(self, name: str) -> tuple[ApiKey, str]:
        """Give the key a new secret (the old one stops working); limits and usage stay. :raises KeyNotFound:"""
        key = await self.get(name)
        secret = new_key()
        async with begin_write(self.sessionmaker) as session:
            await session.execute(update(ApiKeyRow).where(ApiKeyRow.id == key.id).values(
                key_hash=hash_key(secret), key_prefix=shown_prefix(secret), rotated_at=time.time()))
        return await self.get(key.id), secret

    async def sync_counters(self, deltas: Mapping[WindowKey, tuple[float, Counts]], last_used: Mapping[str, float],
                            key_ids: Iterable[str], now: float) -> dict[WindowKey, Counts]:
        """Add this process's counts, write last-used times, and read every current window's totals.

        One transaction: either the deltas are added and the totals read, or nothing happens.

        :param deltas: ``(key_id, window, start) -> (window_end, counts to add)``.
        :param key_ids: keys whose current windows to read (the totals of all replicas).
        :returns: ``(key_id, window, start) -> totals`` of windows not yet ended.
        """
        async with begin_write(self.sessionmaker) as session:
            connection = await session.connection()
            dialect: Any = sqlite if connection.dialect.name == "sqlite" else postgresql
            for (key_id, window, start), (end, counts) in sorted(deltas.items()):
                values = {"key_id": key_id, "window": window, "window_start": start, "window_end": end,
                          **dict(zip(COUNTS, counts, strict=True))}
                stmt = dialect.insert(ApiKeyCounterRow).values(**values)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["key_id", "window", "window_start"],
                    set_={name: getattr(ApiKeyCounterRow, name) + getattr(stmt.excluded, name) for name in COUNTS})
                await session.execute(stmt)
            for key_id, used in last_used.items():
                await session.execute(update(ApiKeyRow).where(ApiKeyRow.id == key_id).where(
                    (ApiKeyRow.last_used_at.is_(None)) | (ApiKeyRow.last_used_at < used)).values(last_used_at=used))
            await session.execute(delete(ApiKeyCounterRow).where(
                ApiKeyCounterRow.window_end < now - COUNTER_RETENTION_SECONDS))
            ids = list(key_ids)
            rows = (await session.execute(select(ApiKeyCounterRow).where(
                ApiKeyCounterRow.key_id.in_(ids), ApiKeyCounterRow.window_end > now))).scalars().all() if ids else []
        return {(row.key_id, row.window, row.window_start): (row.requests, row.input_tokens, row.cached_tokens,
                                                              row.output_tokens) for row in rows}

    async def current_counts(self, key_id: str, now: float | None = None) -> dict[str, Counts]:
        """``window -> totals`` of the key's windows that have not ended (for ``keys show``)."""
        return (await self.all_current_counts(now, key_id)).get(key_id, {})

    async def all_current_counts(self, now: float | None = None, key_id: str | None = None,
                                 ) -> dict[str, dict[str, Counts]]:
        """``key_id -> window -> totals`` of every key's current windows (one indexed read)."""
        now = time.time() if now is None else now
        query = select(ApiKeyCounterRow).where(ApiKeyCounterRow.window_end > now,
                                               ApiKeyCounterRow.window_start <= now)
        if key_id is not None:
            query = query.where(ApiKeyCounterRow.key_id == key_id)
        async with self.sessionmaker() as session:
            rows = (await session.scalars(query)).all()
        out: dict[str, dict[str, Counts]] = {}
        for row in rows:
            out.setdefault(row.key_id, {})[row.window] = (row.requests, row.input_tokens, row.cached_tokens,
                                                          row.output_tokens)
        return out


async def stored_key_count(settings: Settings) -> int:
    """Keys in the configured database, read with a short-lived engine (0 before the key table exists).

    For a process that checks the bind without opening the app (``serve --workers``'s parent).
    :raises codexlb.db.migrate.DatabaseUnavailable: the database cannot be reached.
    """
    from sqlalchemy import inspect

    from codexlb.db.engine import make_engine
    from codexlb.db.migrate import connect

    engine = make_engine(settings)
    try:
        conn = await connect(engine)
        try:
            if not await conn.run_sync(lambda c: inspect(c).has_table(ApiKeyRow.__tablename__)):
                return 0
            return int(await conn.scalar(select(func.count()).select_from(ApiKeyRow)) or 0)
        finally:
            await conn.close()
    finally:
        await engine.dispose()
