"""``codexlb db``: upgrade the schema, show the current revision, list the migration history."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from codexlb.db.engine import make_engine
from codexlb.db.migrate import current_revision, head_revision, history, prepare_database, revision_text
from codexlb.errors import CodexLBError

if TYPE_CHECKING:
    from codexlb.db.migrate import MigrationReport
    from codexlb.settings import Settings

_ERRORS = (CodexLBError, SQLAlchemyError, OSError)


def register(subparsers: Any) -> None:
    """Add ``db upgrade | current | history`` to the main parser's subparsers."""
    parser = subparsers.add_parser("db", help="database schema: upgrade, current, history",
                                   description="Upgrade the database schema, show its revision, list the "
                                   "migrations.")
    commands = parser.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    commands.add_parser("upgrade", help="migrate the database to the schema this codexlb needs "
                        "(backs up a SQLite file first)").set_defaults(func=upgrade)
    commands.add_parser("current", help="show the database's schema revision").set_defaults(func=current)
    commands.add_parser("history", help="list the migrations, oldest first").set_defaults(func=show_history)


def _fail(command: str, exc: BaseException) -> int:
    print(f"codexlb db {command}: {exc}", file=sys.stderr)
    return 1


def upgrade(args: argparse.Namespace, settings: Settings) -> int:
    """Migrate to head whatever ``DATABASE_MIGRATE_ON_STARTUP`` says; exit 1 when it fails."""
    settings = dataclasses.replace(settings, database_migrate_on_startup=True,
                                   database_migrations_fail_fast=True)

    async def run() -> MigrationReport:
        engine = make_engine(settings, poolclass=NullPool)
        try:
            return await prepare_database(settings, engine)
        finally:
            await engine.dispose()

    try:
        report = asyncio.run(run())
    except _ERRORS as exc:
        return _fail("upgrade", exc)
    for old, new in report.remapped.items():
        print(f"remapped legacy revision {old} to {new}")
    if report.backup is not None:
        print(f"backed up the database to {report.backup}")
    if report.upgraded:
        print(f"upgraded the database from revision {revision_text(report.before)} to {report.head}")
    else:
        print(f"the database is already at revision {report.head} (head); nothing to do")
    return 0


async def _current(settings: Settings) -> str | None:
    engine = make_engine(settings, poolclass=NullPool)
    try:
        return await current_revision(engine)
    finally:
        await engine.dispose()


def current(args: argparse.Namespace, settings: Settings) -> int:
    """Print the revision and whether it is the head this code needs."""
    head = head_revision()
    path = settings.sqlite_path
    if path is not None and not path.exists():
        print(f"none (no database file at {path}); this codexlb needs {head}")
        return 0
    try:
        revision = asyncio.run(_current(settings))
    except _ERRORS as exc:
        return _fail("current", exc)
    if revision == head:
        print(f"{head} (head)")
    else:
        print(f"{revision_text(revision)}; this codexlb needs {head}: run `codexlb db upgrade`")
    return 0


def show_history(args: argparse.Namespace, settings: Settings) -> int:
    """Print each migration; mark the head and (when the database is reachable) the current one."""
    head = head_revision()
    revision: str | None = None
    path = settings.sqlite_path
    if path is None or path.exists():
        try:
            revision = asyncio.run(_current(settings))
        except _ERRORS as exc:
            print(f"(current revision unknown: {exc})", file=sys.stderr)
    for rev, down, message in history():
        marks = [name for name, on in (("head", rev == head), ("current", rev == revision)) if on]
        suffix = f"  ({', '.join(marks)})" if marks else ""
        title = message.strip().splitlines()[0] if message.strip() else ""
        print(f"{down or '<base>'} -> {rev}  {title}{suffix}")
    return 0
