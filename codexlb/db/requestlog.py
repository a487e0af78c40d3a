"""Request log writes: one multi-row insert per batch (the log plugin buffers and flushes).

Strings longer than their column (a client's model name, say) are cut to fit, so no row is refused
for its length on PostgreSQL (SQLite does not enforce lengths).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, Table, delete, insert, select

from codexlb.db.engine import begin_write
from codexlb.db.models import RequestLogRow

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

COLUMNS = tuple(c.name for c in RequestLogRow.__table__.columns if c.name != "id")
"""Keys a request log row may carry (``time`` and ``endpoint`` are required)."""
_COLUMN_SET = frozenset(COLUMNS)
_TABLE: Table = RequestLogRow.__table__  # type: ignore[assignment]
_DEFAULTS: dict[str, Any] = {name: None for name in COLUMNS} | {"attempts": 1}
_LENGTHS = {c.name: c.type.length for c in RequestLogRow.__table__.columns
            if isinstance(c.type, String) and c.type.length}


async def insert_request_logs(sessionmaker: async_sessionmaker[AsyncSession],
                              rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` in one transaction with one executemany (a Core insert: no ORM work per row).

    :raises ValueError: a row has a key that is not a column, or lacks ``time`` or ``endpoint``.
    """
    if not rows:
        return
    params = []
    for row in rows:
        if not row.keys() <= _COLUMN_SET:
            raise ValueError(f"request_log has no column {', '.join(sorted(row.keys() - _COLUMN_SET))}")
        if row.get("time") is None or row.get("endpoint") is None:
            raise ValueError("a request_log row needs time and endpoint")
        values = dict(row) if len(row) == len(COLUMNS) else _DEFAULTS | dict(row)
        for name, length in _LENGTHS.items():
            value = values[name]
            if isinstance(value, str) and len(value) > length:
                values[name] = value[:length]
        params.append(values)
    async with begin_write(sessionmaker) as session:
        await session.execute(insert(_TABLE), params)


async def recent_request_logs(sessionmaker: async_sessionmaker[AsyncSession], *, limit: int = 100,
                              account_id: str | None = None, before: float | None = None,
                              ) -> list[dict[str, Any]]:
    """Newest rows first, as dicts (served by the ``(time)`` and ``(account_id, time)`` indexes)."""
    query = select(RequestLogRow.__table__)
    if account_id is not None:
        query = query.where(RequestLogRow.account_id == account_id)
    if before is not None:
        query = query.where(RequestLogRow.time < before)
    async with sessionmaker() as session:
        result = await session.execute(query.order_by(RequestLogRow.time.desc()).limit(limit))
    return [dict(r) for r in result.mappings()]


async def latest_accounts_by_session(sessionmaker: async_sessionmaker[AsyncSession], *, since: float,
                                     limit: int) -> dict[str, str]:
    """``session_key_hash -> account_id`` of each conversation's newest logged request since ``since``."""
    query = (select(RequestLogRow.session_key_hash, RequestLogRow.account_id)
             .where(RequestLogRow.time >= since, RequestLogRow.session_key_hash.is_not(None),
                    RequestLogRow.account_id.is_not(None), RequestLogRow.status == 200)
             .order_by(RequestLogRow.time.desc()).limit(limit))
    async with sessionmaker() as session:
        rows = (await session.execute(query)).all()
    latest: dict[str, str] = {}
    for key_hash, account_id in rows:
        if key_hash is not None and account_id is not None:
            latest.setdefault(key_hash, account_id)
    return latest


async def recent_session_accounts(sessionmaker: async_sessionmaker[AsyncSession], *, since: float,
                                  limit: int) -> list[tuple[str, str, float]]:
    """``(session_key_hash, account_id, time)`` of answered requests since ``since``, newest first."""
    query = (select(RequestLogRow.session_key_hash, RequestLogRow.account_id, RequestLogRow.time)
             .where(RequestLogRow.time >= since, RequestLogRow.session_key_hash.is_not(None),
                    RequestLogRow.account_id.is_not(None), RequestLogRow.status == 200)
             .order_by(RequestLogRow.time.desc()).limit(limit))
    async with sessionmaker() as session:
        rows = (await session.execute(query)).all()
    return [(h, a, t) for h, a, t in rows if h is not None and a is not None]


async def prune_request_logs(sessionmaker: async_sessionmaker[AsyncSession], older_than: float) -> int:
    """Delete rows logged before ``older_than`` (served by the ``(time)`` index); returns how many."""
    async with begin_write(sessionmaker) as session:
        result = await session.execute(delete(RequestLogRow).where(RequestLogRow.time < older_than))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
