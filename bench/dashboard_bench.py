"""Dashboard page times at the server over a large request log (not a timed test).

    .venv/bin/python -m bench.dashboard_bench                      # SQLite, 1,000,000 rows
    .venv/bin/python -m bench.dashboard_bench --postgres URL       # PostgreSQL (a scratch database)
    .venv/bin/python -m bench.dashboard_bench --rows 100000 --repeat 20 --json FILE
    .venv/bin/python -m bench.dashboard_bench --tiny               # smoke run (a few seconds)

Seeds ``--rows`` request-log rows spread over 30 days and 30 days of usage snapshots (one every
5 minutes) for 20 accounts with bulk inserts, starts the app (no password set: loopback), and
times each page through Quart's ASGI test client, so the figure is the server's own time: route,
queries, template. Each page is requested ``--repeat`` times after one warm-up request; the first
Overview (which fills the hourly rollups for the last 7 days) is reported on its own, and the
Overview is timed twice: as served (charts cached for 20 s) and with the chart cache cleared before
each request (every query and chart rebuilt).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, text

from codexlb.app import create_app, lb_of
from codexlb.db.models import RequestLogRow, UsageSnapshotRow
from codexlb.testing.harness import make_settings

ACCOUNTS = 20
DAYS = 30
SNAPSHOT_EVERY = 300
MODELS = ("gpt-5", "gpt-5-codex", "gpt-5-mini", "gpt-5.1")
ROUTES = ("sticky:pinned", "sticky:new", "least_used:lowest", "round_robin:next")
BATCH = 20_000
LOOPBACK = {"client": ("127.0.0.1", 40000)}


def _log_rows(count: int, accounts: list[tuple[str, str]], now: float, seed: int = 1) -> Any:
    rng = random.Random(seed)
    span = DAYS * 86400
    for n in range(count):
        account_id, label = accounts[n % len(accounts)]
        status = 200 if rng.random() > 0.03 else rng.choice((429, 502, 401))
        yield {"time": now - span + span * n / count, "account_id": account_id, "account_label": label,
               "endpoint": "responses", "model": MODELS[n % len(MODELS)], "status": status,
               "error_code": None if status == 200 else "upstream_error", "input_tokens": 2000 + n % 5000,
               "cached_tokens": 1000 + n % 3000, "output_tokens": 300 + n % 900, "reasoning_tokens": n % 200,
               "ttfb_ms": 150.0 + n % 400, "duration_ms": 1500.0 + n % 9000, "client_ip": "127.0.0.1",
               "session_key_hash": f"{n % 5000:064x}", "route": ROUTES[n % len(ROUTES)],
               "attempts": 1 if status == 200 else 2}


def _snapshot_rows(accounts: list[tuple[str, str]], now: float) -> Any:
    steps = DAYS * 86400 // SNAPSHOT_EVERY
    for account_id, _ in accounts:
        for step in range(steps):
            at = now - DAYS * 86400 + step * SNAPSHOT_EVERY
            week = int(at // (7 * 86400))
            yield {"account_id": account_id, "time": at, "primary_used_percent": (step % 60) * 1.5,
                   "primary_window_minutes": 300, "primary_resets_at": at + 3600,
                   "secondary_used_percent": (at % (7 * 86400)) / (7 * 86400) * 90,
                   "secondary_window_minutes": 10080, "secondary_resets_at": (week + 1) * 7 * 86400,
                   "credits": None}


async def _bulk(lb: Any, table: Any, rows: Any) -> int:
    """Insert in batches of :data:`BATCH` (executemany), one transaction per batch."""
    total, batch = 0, []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            async with lb.engine.begin() as conn:
                await conn.execute(insert(table), batch)
            total, batch = total + len(batch), []
    if batch:
        async with lb.engine.begin() as conn:
            await conn.execute(insert(table), batch)
        total += len(batch)
    return total


async def seed(lb: Any, rows: int, now: float) -> tuple[list[tuple[str, str]], dict[str, float]]:
    store = lb.store
    accounts = []
    for n in range(ACCOUNTS):
        row, _ = await store.upsert(chatgpt_account_id=f"bench-{n}", email=None, plan_type="pro",
                                    access_token="bench-access", refresh_token="bench-refresh", id_token=None,
                                    label=f"bench{n:02d}")
        accounts.append((row.id, row.label))
        lb.pool.put(row)
    timings = {}
    start = time.perf_counter()
    await _bulk(lb, RequestLogRow, _log_rows(rows, accounts, now))
    timings["seed request_log s"] = time.perf_counter() - start
    start = time.perf_counter()
    count = await _bulk(lb, UsageSnapshotRow, _snapshot_rows(accounts, now))
    timings["seed usage_snapshots s"] = time.perf_counter() - start
    timings["usage_snapshots rows"] = count
    async with lb.engine.begin() as conn:
        await conn.execute(text("ANALYZE"))
    return accounts, timings


async def _deep_cursor(lb: Any, depth: int) -> str:
    async with lb.sessionmaker() as session:
        row = (await session.execute(select(RequestLogRow.time, RequestLogRow.id)
                                     .order_by(RequestLogRow.time.desc(), RequestLogRow.id.desc())
                                     .offset(depth).limit(1))).first()
    assert row is not None
    return f"{row[0]!r}:{row[1]}"


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        overrides: dict[str, Any] = {"pipeline_plugins": ("select_round_robin", "upstream")}
        if args.postgres:
            overrides["database_url"] = args.postgres
        settings = make_settings(Path(tmp), **overrides)
        app = create_app(settings)
        lb = lb_of(app)
        async with app.test_app() as test_app:
            now = time.time()
            accounts, result = await seed(lb, args.rows, now)
            client = test_app.test_client()
            cursor = await _deep_cursor(lb, int(args.rows * 0.9))

            async def timed(path: str) -> float:
                start = time.perf_counter()
                answer = await client.get(path, headers={"host": "localhost"}, scope_base=LOOPBACK)
                elapsed = (time.perf_counter() - start) * 1000
                if answer.status_code != 200:
                    body = await answer.get_data(as_text=True)
                    raise SystemExit(f"{path}: HTTP {answer.status_code}: {body[:300]}")
                return elapsed

            result["overview first (fills rollups) ms"] = await timed("/dashboard/")
            pages = {
                "overview": "/dashboard/",
                "overview live status": "/dashboard/overview/live?part=status",
                "requests first page": "/dashboard/requests",
                "requests filtered (model + status=error)": "/dashboard/requests?model=gpt-5-mini&status=error",
                "requests filtered (account, 7 days ago)":
                    f"/dashboard/requests?account={accounts[3][0]}&until={now - 7 * 86400:.0f}",
                "requests deep page (90 % back)": f"/dashboard/requests?cursor={cursor}",
                "account detail": f"/dashboard/accounts/{accounts[0][0]}",
            }
            async def uncached(path: str) -> float:
                app.extensions.pop("codexlb_dashboard_charts", None)
                return await timed(path)

            pages["overview, charts rebuilt (cache cleared)"] = "/dashboard/"
            for name, path in pages.items():
                await timed(path)
                measure = uncached if "cache cleared" in name else timed
                times = sorted([await measure(path) for _ in range(args.repeat)])
                p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
                result[name] = {"p50 ms": round(statistics.median(times), 1), "p95 ms": round(p95, 1),
                                "max ms": round(times[-1], 1)}
                print(f"{name:45s} p50 {result[name]['p50 ms']:8.1f} ms  p95 {result[name]['p95 ms']:8.1f} ms",
                      flush=True)
        result["rows"] = args.rows
        result["database"] = "postgresql" if args.postgres else "sqlite"
        return result


async def _scratch_postgres(url: str) -> tuple[str, Any]:
    """A fresh database next to ``url``'s (dropped afterwards)."""
    import asyncpg

    name = f"codexlb_bench_{uuid.uuid4().hex[:8]}"
    raw = url.replace("postgresql+asyncpg://", "postgresql://")
    admin = await asyncpg.connect(raw)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()

    async def drop() -> None:
        conn = await asyncpg.connect(raw)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()

    return url.rsplit("/", 1)[0] + "/" + name, drop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--postgres", metavar="URL", help="postgresql+asyncpg://... (a scratch database is made)")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--tiny", action="store_true", help="2,000 rows, 3 repeats (smoke run)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.rows, args.repeat = 2_000, 3

    async def run() -> dict[str, Any]:
        drop = None
        if args.postgres:
            args.postgres, drop = await _scratch_postgres(args.postgres)
        try:
            return await measure(args)
        finally:
            if drop is not None:
                await drop()

    result = asyncio.run(run())
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
