"""Dashboard read models on both backends: keyset pages and filters, hourly rollups, sessions."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from codexlb.db.dashboard_auth import create_session, end_session, load_session, set_password
from codexlb.db.dashboard_queries import (
    LogFilter,
    account_conversations,
    hourly_totals,
    parse_cursor,
    request_detail,
    request_page,
)
from codexlb.db.models import RequestRollupRow
from codexlb.db.requestlog import insert_request_logs

NOW = 1_800_000_000.0  # a fixed hour boundary + 0: 500,000 h


def _rows(count: int, *, start: float, step: float, **extra: object) -> list[dict[str, object]]:
    return [{"time": start + n * step, "endpoint": "responses", "model": "gpt-5" if n % 2 else "gpt-5-mini",
             "status": 429 if n % 5 == 0 else 200, "account_id": "a" if n % 3 else "b", "route": "sticky:new",
             "input_tokens": 100, "cached_tokens": 40, "output_tokens": 10, "reasoning_tokens": 1,
             "session_key_hash": f"conv{n % 4}", **extra} for n in range(count)]


async def test_keyset_pages_walk_the_log_once_newest_first(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    same_time = [{"time": NOW - 10, "endpoint": "responses"} for _ in range(7)]  # ties broken by id
    await insert_request_logs(sessionmaker, _rows(53, start=NOW - 5000, step=60) + same_time)
    seen: list[int] = []
    cursor = None
    while True:
        page = await request_page(sessionmaker, LogFilter(), cursor=cursor, limit=10)
        seen += [row["id"] for row in page.rows]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(seen) == 60 and len(set(seen)) == 60
    detail = [await request_detail(sessionmaker, ident) for ident in seen]
    keys = [(row["time"], row["id"]) for row in detail if row]
    assert keys == sorted(keys, reverse=True)


async def test_filters(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    await insert_request_logs(sessionmaker, _rows(30, start=NOW - 3000, step=100))
    async def ids(**kw: object) -> list[dict[str, object]]:
        return (await request_page(sessionmaker, LogFilter(**kw), limit=100)).rows  # type: ignore[arg-type]
    assert {r["model"] for r in await ids(model="gpt-5")} == {"gpt-5"}
    assert {r["status"] for r in await ids(status="error")} == {429}
    assert {r["status"] for r in await ids(status="ok")} == {200}
    assert len(await ids(status=429)) == 6
    assert {r["account_id"] for r in await ids(account_id="b")} == {"b"}
    window = await ids(since=NOW - 1000, until=NOW - 500)
    assert window and all(NOW - 1000 <= r["time"] < NOW - 500 for r in window)
    assert await ids(route="nope") == []
    assert len(await ids(model="gpt-5", status="error", account_id="a")) == 2


def test_unreadable_cursor_means_first_page() -> None:
    assert parse_cursor("garbage") is None and parse_cursor("1.5:3") == (1.5, 3)


async def test_hourly_totals_roll_up_finished_hours_once(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    await insert_request_logs(sessionmaker, _rows(40, start=NOW - 10 * 3600, step=900))  # 10 h, 4 an hour
    buckets = await hourly_totals(sessionmaker, 12, now=NOW + 1)
    assert len(buckets) == 12
    assert sum(b.values["requests"] for b in buckets) == 40
    assert sum(b.values["errors"] for b in buckets) == 8
    assert sum(b.values["cached_tokens"] for b in buckets) == 40 * 40
    async with sessionmaker() as session:
        stored = await session.scalar(select(func.count()).select_from(RequestRollupRow))
    assert stored == 10  # every hour that ended an hour ago or more (the empty first one too)
    late = _rows(1, start=NOW - 5 * 3600 + 5, step=0)  # a row arriving for a rolled-up hour is not counted again
    await insert_request_logs(sessionmaker, late)
    again = await hourly_totals(sessionmaker, 12, now=NOW + 1)
    assert [b.values for b in again] == [b.values for b in buckets]
    live = _rows(3, start=NOW + 0.1, step=0.1)  # the current hour is read live
    await insert_request_logs(sessionmaker, live)
    latest = await hourly_totals(sessionmaker, 12, now=NOW + 1)
    assert latest[-1].values["requests"] == buckets[-1].values["requests"] + 3


async def test_conversations_of_an_account(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    await insert_request_logs(sessionmaker, _rows(24, start=NOW - 2400, step=100))
    found = await account_conversations(sessionmaker, "a", since=NOW - 10_000)
    assert {c["key"] for c in found} == {"conv1", "conv2", "conv3", "conv0"}
    assert sum(c["requests"] for c in found) == 16


async def test_sessions_expire_and_end(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    sid, session = await create_session(sessionmaker, kind="admin", lifetime=60)
    assert (await load_session(sessionmaker, sid)) == session
    assert await load_session(sessionmaker, sid + "x") is None
    await end_session(sessionmaker, session.id_hash)
    assert await load_session(sessionmaker, sid) is None
    short, _ = await create_session(sessionmaker, kind="admin", lifetime=-1)
    assert await load_session(sessionmaker, short) is None
    kept, _ = await create_session(sessionmaker, kind="admin", lifetime=60)
    await set_password(sessionmaker, "a new password")  # a new password signs every admin out
    assert await load_session(sessionmaker, kept) is None
