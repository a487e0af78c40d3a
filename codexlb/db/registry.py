"""Small key/value storage: the model registry cache and the ``meta`` table."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from codexlb.db.engine import begin_write
from codexlb.db.models import MetaRow, ModelRegistryRow

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
    from sqlalchemy.orm import DeclarativeBase


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    """One cached model-registry response."""

    key: str
    etag: str | None
    payload: Any
    """The decoded JSON payload."""
    fetched_at: float


async def _upsert(session: AsyncSession, model: type[DeclarativeBase], values: dict[str, Any]) -> None:
    """``INSERT ... ON CONFLICT (key) DO UPDATE`` on SQLite and PostgreSQL."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(model).values(**values)
    update = {k: getattr(stmt.excluded, k) for k in values if k != "key"}
    await session.execute(stmt.on_conflict_do_update(index_elements=["key"], set_=update))


async def get_registry(sessionmaker: async_sessionmaker[AsyncSession], key: str) -> RegistryEntry | None:
    """The cached entry for ``key`` (e.g. a client version), or ``None``."""
    async with sessionmaker() as session:
        row = await session.get(ModelRegistryRow, key)
    if row is None:
        return None
    return RegistryEntry(row.key, row.etag, json.loads(row.payload), row.fetched_at)


async def put_registry(sessionmaker: async_sessionmaker[AsyncSession], key: str, *, payload: Any,
                       etag: str | None, fetched_at: float) -> None:
    """Store (replace) the cached entry for ``key``; ``payload`` must be JSON-serialisable."""
    values = {"key": key, "etag": etag, "payload": json.dumps(payload, separators=(",", ":")),
              "fetched_at": fetched_at}
    async with begin_write(sessionmaker) as session:
        await _upsert(session, ModelRegistryRow, values)


async def get_meta(sessionmaker: async_sessionmaker[AsyncSession], key: str) -> str | None:
    """A ``meta`` value, or ``None``."""
    async with sessionmaker() as session:
        return await session.scalar(select(MetaRow.value).where(MetaRow.key == key))


async def put_meta(sessionmaker: async_sessionmaker[AsyncSession], key: str, value: str) -> None:
    """Set a ``meta`` value (insert or replace)."""
    async with begin_write(sessionmaker) as session:
        await _upsert(session, MetaRow, {"key": key, "value": value})
