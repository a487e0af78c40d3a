"""Request log writes: one executemany per batch (the log plugin buffers and flushes).

On SQLite (aiosqlite) the batch goes to the driver as tuples in column order, in one ``executemany``
of a qmark statement built once: SQLAlchemy's Core insert cost half as much again per row (parameter
handling; 10.0 against 6.6 us CPU a row in batches of 600). Elsewhere (PostgreSQL) it is a Core
insert. Strings longer than their column (a client's model name, say) are cut to fit on both, so no
row is refused for its length on PostgreSQL (SQLite does not enforce lengths) and both store the
same values.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, Table, delete, exc, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from codexlb.db.engine import begin_write, is_sqlite
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
_VALUES = itemgetter(*COLUMNS)
"""A row's values in column order (a C-level lookup of every key)."""
_CUTS = tuple((COLUMNS.index(name), length) for name, length in _LENGTHS.items())
_TIME, _ENDPOINT = COLUMNS.index("time"), COLUMNS.index("endpoint")
_SQLITE_INSERT = f"INSERT INTO request_log ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"


def _unknown_columns(row: Mapping[str, Any]) -> ValueError:
    return ValueError(f"request_log has no column {', '.join(sorted(row.keys() - _COLUMN_SET))}")


_MISSING = "a request_log row needs time and endpoint"


def _values(rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    """Each row's values in :data:`COLUMNS` order, defaults filled in, over-long strings cut."""
    params = []
    for row in rows:
        try:  # a row with every column (the log plugin's) needs no merge; an unknown key makes one miss
            values: tuple[Any, ...] | None = _VALUES(row) if len(row) == len(COLUMNS) else None
        except KeyError:
            values = None
        if values is None:
            if not row.keys() <= _COLUMN_SET:
                raise _unknown_columns(row)
            values = _VALUES({**_DEFAULTS, **row})
        if values[_TIME] is None or values[_ENDPOINT] is None:
            raise ValueError(_MISSING)
        for i, length in _CUTS:
            value = values[i]
            if isinstance(value, str) and len(value) > length:
                values = (*values[:i], value[:length], *values[i + 1:])
        params.append(values)
    return params


async def insert_request_logs(sessionmaker: async_sessionmaker[AsyncSession],
                              rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` in one transaction (``BEGIN IMMEDIATE`` on SQLite) with one executemany.

    A driver error on SQLite is raised as SQLAlchemy's (``OperationalError`` for a locked or full
    database, ``IntegrityError``...), as the Core path raises it, so callers tell "database not
    available" from "row refused" the same way on both backends.

    :raises ValueError: a row has a key that is not a column, or lacks ``time`` or ``endpoint``.
    """
    if not rows:
        return
    bind = sessionmaker.kw.get("bind")
    params = _values(rows)
    if not (isinstance(bind, AsyncEngine) and is_sqlite(bind)):  # PostgreSQL: the Core insert takes dicts
        async with begin_write(sessionmaker) as session:
            await session.execute(insert(_TABLE), [dict(zip(COLUMNS, values, strict=True)) for values in params])
        return
    async with begin_write(sessionmaker) as session:
        driver = (await (await session.connection()).get_raw_connection()).driver_connection
        assert driver is not None, "a connection in a transaction has its driver connection"
        try:
            await driver.executemany(_SQLITE_INSERT, params)
        except sqlite3.Error as error:
            raise exc.DBAPIError.instance(_SQLITE_INSERT, None, error, sqlite3.Error,
                                          hide_parameters=True) from error
        except ValueError as error:  # aiosqlite's closed connection, mapped as SQLAlchemy maps it
            if str(error).lower() not in ("no active connection", "connection closed"):
                raise
            raise exc.OperationalError(_SQLITE_INSERT, None, error) from error


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


async def prune_request_logs(sessionmaker: async_sessionmaker[AsyncSession], older_than: float) -> int:
    """Delete rows logged before ``older_than`` (served by the ``(time)`` index); returns how many."""
    async with begin_write(sessionmaker) as session:
        result = await session.execute(delete(RequestLogRow).where(RequestLogRow.time < older_than))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
