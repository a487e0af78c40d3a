"""Read models of the dashboard: request-log pages, hourly rollups, usage pace, conversations.

Every query is an index range read. The request log is paged by keyset on ``(time, id)``, newest
first: a page is "the next ``limit`` rows older than the cursor", never an ``OFFSET`` and never a
``count(*)`` of the table. Chart totals come from ``request_rollup_hourly``: an hour that ended
more than :data:`SETTLE_SECONDS` ago is aggregated once from the log (by the ``(time)`` index) and
stored; only the last hours are read live.
"""

from __future__ import annotations

import time as _time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, Integer, case, cast, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from codexlb.db.engine import begin_write
from codexlb.db.models import RequestLogRow, RequestRollupRow, UsageSnapshotRow

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

SETTLE_SECONDS = 3600.0
"""An hour is final (rolled up) once it ended this long ago: rows are logged when a request ends."""
HOUR = 3600
TOTALS = ("requests", "errors", "input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens")
LOG = RequestLogRow.__table__.c


@dataclass(frozen=True, slots=True)
class LogFilter:
    """Request-log filters; ``None`` means any. ``status``: a code, ``"ok"`` (< 400) or ``"error"``."""

    account_id: str | None = None
    api_key_id: str | None = None
    model: str | None = None
    status: int | str | None = None
    route: str | None = None
    since: float | None = None
    until: float | None = None


@dataclass(slots=True)
class LogPage:
    rows: list[dict[str, Any]]
    next_cursor: str | None
    """Give it back as ``cursor`` for the next (older) page; ``None`` on the last page."""


@dataclass(slots=True)
class HourTotals:
    hour: int
    values: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOTALS, 0))


def parse_cursor(text: str | None) -> tuple[float, int] | None:
    """``"<time>:<id>"`` as a pair; ``None`` for no or an unreadable cursor."""
    if not text:
        return None
    try:
        when, _, ident = text.partition(":")
        return float(when), int(ident)
    except ValueError:
        return None


def _conditions(filters: LogFilter) -> list[Any]:
    conditions: list[Any] = []
    if filters.account_id is not None:
        conditions.append(LOG.account_id == filters.account_id)
    if filters.api_key_id is not None and "api_key_id" in LOG:
        conditions.append(LOG["api_key_id"] == filters.api_key_id)
    if filters.model is not None:
        conditions.append(LOG.model == filters.model)
    if filters.route is not None:
        conditions.append(LOG.route == filters.route)
    if filters.status == "ok":
        conditions.append(LOG.status < 400)
    elif filters.status == "error":
        conditions.append(LOG.status >= 400)
    elif isinstance(filters.status, int):
        conditions.append(LOG.status == filters.status)
    if filters.since is not None:
        conditions.append(LOG.time >= filters.since)
    if filters.until is not None:
        conditions.append(LOG.time < filters.until)
    return conditions


async def request_page(sessionmaker: async_sessionmaker[AsyncSession], filters: LogFilter, *,
                       cursor: str | None = None, limit: int = 50) -> LogPage:
    """One page of the request log, newest first, older than ``cursor``."""
    conditions = _conditions(filters)
    after = parse_cursor(cursor)
    if after is not None:
        # "older than (time, id)", written so the time bound alone is an index range
        conditions += [LOG.time <= after[0], or_(LOG.time < after[0], LOG.id < after[1])]
    query = (select(RequestLogRow.__table__).where(*conditions)
             .order_by(LOG.time.desc(), LOG.id.desc()).limit(limit + 1))
    async with sessionmaker() as session:
        rows = [dict(r) for r in (await session.execute(query)).mappings()]
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if more and rows else None
    return LogPage(rows, f"{last['time']!r}:{last['id']}" if last else None)


async def request_detail(sessionmaker: async_sessionmaker[AsyncSession], ident: int) -> dict[str, Any] | None:
    """One request-log row by id."""
    async with sessionmaker() as session:
        row = (await session.execute(select(RequestLogRow.__table__).where(LOG.id == ident))).mappings().first()
    return None if row is None else dict(row)


def _hour_expr(dialect: str) -> Any:
    if dialect == "postgresql":
        return cast(func.floor(LOG.time / HOUR), BigInteger)
    return cast(LOG.time / HOUR, Integer)  # SQLite truncates toward zero; times are positive


def _total_columns() -> list[Any]:
    def tokens(column: Any) -> Any:
        return func.coalesce(func.sum(column), 0)

    return [func.count().label("requests"),
            func.coalesce(func.sum(case((or_(LOG.status >= 400, LOG.error_code.is_not(None)), 1), else_=0)),
                          0).label("errors"),
            tokens(LOG.input_tokens).label("input_tokens"), tokens(LOG.cached_tokens).label("cached_tokens"),
            tokens(LOG.output_tokens).label("output_tokens"),
            tokens(LOG.reasoning_tokens).label("reasoning_tokens")]


async def _aggregate(session: AsyncSession, start_hour: int, end_hour: int) -> dict[int, dict[str, int]]:
    """Totals per hour of ``[start_hour, end_hour)`` straight from the log (``(time)`` index range)."""
    hour = _hour_expr(session.get_bind().dialect.name).label("hour")
    query = (select(hour, *_total_columns())
             .where(LOG.time >= start_hour * HOUR, LOG.time < end_hour * HOUR).group_by(hour))
    return {int(r["hour"]): {name: int(r[name] or 0) for name in TOTALS}
            for r in (await session.execute(query)).mappings()}


def _insert_ignore(dialect: str) -> Any:
    table = RequestRollupRow
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=["hour"])
    return sqlite.insert(table).on_conflict_do_nothing(index_elements=["hour"])


async def hourly_totals(sessionmaker: async_sessionmaker[AsyncSession], hours: int, *,
                        now: float | None = None) -> list[HourTotals]:
    """Totals of each of the last ``hours`` hours (oldest first, the current hour last)."""
    now = _time.time() if now is None else now
    current = int(now // HOUR)
    first = current - hours + 1
    final_end = max(first, min(current + 1, int((now - SETTLE_SECONDS) // HOUR)))
    out = {h: HourTotals(h) for h in range(first, current + 1)}
    async with sessionmaker() as session:
        stored = (await session.execute(select(RequestRollupRow.__table__).where(
            RequestRollupRow.hour >= first, RequestRollupRow.hour < final_end))).mappings().all()
        for r in stored:
            out[int(r["hour"])].values = {name: int(r[name]) for name in TOTALS}
        missing = sorted(set(range(first, final_end)) - {int(r["hour"]) for r in stored})
        fresh: dict[int, dict[str, int]] = {}
        if missing:
            fresh = await _aggregate(session, missing[0], missing[-1] + 1)
        live = await _aggregate(session, final_end, current + 1)
        dialect = session.get_bind().dialect.name
    if missing:
        params = [{"hour": h, **fresh.get(h, dict.fromkeys(TOTALS, 0))} for h in missing]
        async with begin_write(sessionmaker) as write:
            await write.execute(_insert_ignore(dialect), params)
        for h in missing:
            out[h].values = fresh.get(h, dict.fromkeys(TOTALS, 0))
    for h, totals in live.items():
        if h in out:
            out[h].values = totals
    return list(out.values())


async def recent_snapshots(sessionmaker: async_sessionmaker[AsyncSession], since: float,
                           ) -> list[dict[str, Any]]:
    """Every account's usage snapshots since ``since`` (``(time)`` index), oldest first."""
    table = UsageSnapshotRow.__table__.c
    query = (select(table.account_id, table.time, table.primary_used_percent, table.primary_resets_at,
                    table.secondary_used_percent, table.secondary_resets_at)
             .where(table.time >= since).order_by(table.time))
    async with sessionmaker() as session:
        return [dict(r) for r in (await session.execute(query)).mappings()]


async def account_conversations(sessionmaker: async_sessionmaker[AsyncSession], account_id: str, *,
                                since: float, scan: int = 2000) -> list[dict[str, Any]]:
    """Conversations (``session_key_hash``) this account answered since ``since``, newest first.

    Reads at most the account's ``scan`` newest rows (the ``(account_id, time)`` index).
    """
    query = (select(LOG.session_key_hash, LOG.time, LOG.model)
             .where(LOG.account_id == account_id, LOG.time >= since, LOG.session_key_hash.is_not(None))
             .order_by(LOG.time.desc()).limit(scan))
    async with sessionmaker() as session:
        rows = (await session.execute(query)).mappings().all()
    seen: dict[str, dict[str, Any]] = {}
    for r in rows:
        entry = seen.setdefault(r["session_key_hash"], {"key": r["session_key_hash"], "last": r["time"],
                                                         "model": r["model"], "requests": 0})
        entry["requests"] += 1
    return list(seen.values())


async def usage_points(sessionmaker: async_sessionmaker[AsyncSession], account_id: str, *, since: float,
                       points: int = 120) -> tuple[int, list[dict[str, Any]]]:
    """An account's usage since ``since`` (``(account_id, time)`` index), thinned to about ``points``.

    Returns how many snapshots there were and the kept ones (time, 5 h and weekly used percent).
    """
    table = UsageSnapshotRow.__table__.c
    query = (select(table.time, table.primary_used_percent, table.secondary_used_percent)
             .where(table.account_id == account_id, table.time >= since).order_by(table.time))
    async with sessionmaker() as session:
        rows = (await session.execute(query)).all()
    step = max(1, len(rows) // points)
    return len(rows), [{"time": r[0], "primary": r[1] or 0.0, "secondary": r[2] or 0.0} for r in rows[::step]]
