"""``codexlb jobs``: the background jobs' status as the running server(s) last recorded it.

Jobs run inside the server; the leader writes each job's status (enabled, leader, last run, next
run, last error) to the ``meta`` table, which this command reads (it never starts a job).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from codexlb.errors import CodexLBError

if TYPE_CHECKING:
    from codexlb.jobs.base import JobStatus
    from codexlb.settings import Settings

JOB_NAMES = ("usage", "models", "tokens")


def register(subparsers: Any) -> None:
    """Add ``jobs [--json]``."""
    parser = subparsers.add_parser("jobs", help="background jobs: enabled, leader, last/next run, last error",
                                   description="The background jobs' status as the running server(s) last "
                                   "recorded it. Jobs run inside the server; the leader writes each job's status "
                                   "(enabled, leader, last run, next run, last error) to the meta table, which this "
                                   "command reads (it never starts a job).")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=show)


def _enabled(settings: Settings) -> dict[str, bool]:
    return {"usage": settings.usage_refresh_enabled, "models": settings.model_registry_enabled, "tokens": True}


async def _read(settings: Settings) -> tuple[dict[str, Any] | None, dict[str, JobStatus]]:
    from sqlalchemy.pool import NullPool

    from codexlb.db.engine import make_engine, make_sessionmaker
    from codexlb.jobs.base import read_statuses

    engine = make_engine(settings, poolclass=NullPool)
    try:
        return await read_statuses(make_sessionmaker(engine))
    finally:
        await engine.dispose()


def collect(settings: Settings) -> dict[str, Any]:
    """Leader and job rows (``enabled`` from these settings when the server recorded nothing yet)."""
    leader, stored = asyncio.run(_read(settings))
    enabled = _enabled(settings)
    jobs = []
    for name in dict.fromkeys([*JOB_NAMES, *stored]):
        status = stored.get(name)
        row: dict[str, Any] = {"name": name, "enabled": enabled.get(name, False) if status is None
                               else status.enabled, "recorded": status is not None}
        if status is not None:
            row.update({k: getattr(status, k) for k in ("description", "last_run", "last_duration", "last_ok",
                                                        "next_run", "last_error", "last_error_at", "runs",
                                                        "errors", "leader")})
        jobs.append(row)
    return {"leader": leader, "jobs": jobs}


def _when(value: float | None, now: float) -> str:
    if value is None:
        return "-"
    delta = value - now
    stamp = datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")
    span = abs(delta)
    ago = f"{span:.0f}s" if span < 120 else f"{span / 60:.0f}m" if span < 7200 else f"{span / 3600:.1f}h"
    return f"{stamp} ({'in ' + ago if delta > 0 else ago + ' ago'})"


def _who(leader: dict[str, Any] | None) -> str:
    if not leader:
        return "-"
    return f"{leader.get('host', '?')} pid {leader.get('pid', '?')} ({leader.get('instance', '?')})"


def render(data: dict[str, Any], now: float | None = None) -> str:
    """The human-readable table."""
    now = time.time() if now is None else now
    leader = data.get("leader")
    lines = []
    if leader:
        lines.append(f"leader: {_who(leader)} on {leader.get('backend', '?')}, since "
                     f"{_when(leader.get('since'), now)}, last heartbeat {_when(leader.get('heartbeat'), now)}")
    else:
        lines.append("leader: none recorded (has a server with this database run yet?)")
    rows = [("JOB", "ENABLED", "LAST RUN", "NEXT RUN", "RUNS", "LAST ERROR")]
    for job in data["jobs"]:
        error = job.get("last_error") or "-"
        if job.get("last_error") and job.get("last_ok"):
            error = f"(ok since) {error}"
        rows.append((job["name"], "yes" if job["enabled"] else "no", _when(job.get("last_run"), now),
                     _when(job.get("next_run"), now) if job["enabled"] else "-",
                     f"{job.get('runs', 0)}/{job.get('errors', 0)} err" if job.get("recorded") else "-",
                     error[:80]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
                     + "  " + row[-1])
    return "\n".join(line.rstrip() for line in lines)


def show(args: argparse.Namespace, settings: Settings) -> int:
    """Print the table (or JSON); exit 1 when the database cannot be read."""
    path = settings.sqlite_path
    if path is not None and not path.exists():
        print(f"codexlb jobs: no database file at {path}; start the server first", file=sys.stderr)
        return 1
    try:
        data = collect(settings)
    except (CodexLBError, SQLAlchemyError, OSError) as exc:
        print(f"codexlb jobs: cannot read the job status: {exc}\n(run `codexlb db upgrade` if the database "
              "is new)", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(render(data))
    return 0
