"""Schema migrations at start-up and from the CLI: remap, back up, upgrade, report.

Alembic runs without an ``alembic.ini``: :func:`alembic_config` builds the configuration in code,
pointing at the repository's ``migrations/`` folder, and hands over the app's own connection
(Alembic's connection-sharing recipe), so the URL always comes from codexlb settings.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import logging
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect, text
from sqlalchemy.exc import SQLAlchemyError

import codexlb
from codexlb.db.engine import BEGIN_IMMEDIATE, create_private_file, is_sqlite
from codexlb.db.legacy_revisions import LEGACY_REVISIONS
from codexlb.errors import CodexLBError, ConfigError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import Connection
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from codexlb.settings import Settings

log = logging.getLogger("codexlb.db")

MIGRATIONS_DIR = Path(codexlb.__file__).resolve().parent / "migrations"
"""``codexlb/migrations``: in a checkout a link to the repository's ``migrations/``, in a wheel a copy."""
PG_MIGRATION_LOCK = 0x636F6465786C62
"""``pg_advisory_xact_lock`` key that serialises migrations of several processes starting at once."""


class MigrationFailed(CodexLBError):
    """A migration failed while ``DATABASE_MIGRATIONS_FAIL_FAST`` is true; start-up exits with status 1."""

    exit_status = 1


class DatabaseUnavailable(CodexLBError):
    """The database could not be reached at start-up; start-up exits with status 1."""

    exit_status = 1


def unreachable_message(engine: AsyncEngine, exc: BaseException) -> str:
    """One line naming the database (password masked) and why connecting failed."""
    url = engine.url
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    reason = f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__
    if url.password:
        reason = reason.replace(str(url.password), "***")
    return f"cannot connect to the database {url.render_as_string(hide_password=True)}: {reason}"


async def connect(engine: AsyncEngine) -> AsyncConnection:
    """A started connection; :class:`DatabaseUnavailable` when the database cannot be reached."""
    try:
        return await engine.connect()
    except (OSError, SQLAlchemyError) as exc:
        raise DatabaseUnavailable(unreachable_message(engine, exc)) from exc


@dataclass
class MigrationReport:
    """What :func:`prepare_database` found and did."""

    head: str
    """The revision this code needs."""
    before: str | None
    """Revision found in the database (``None``: empty database), before any remapping."""
    current: str | None
    """Revision the database is at now."""
    remapped: dict[str, str] = field(default_factory=dict)
    upgraded: bool = False
    backup: Path | None = None
    error: str | None = None
    """Why the migration failed (only when fail-fast is off); shown by :func:`readiness`."""

    @property
    def ok(self) -> bool:
        return self.error is None and self.current == self.head


def revision_text(revision: str | None) -> str:
    """A revision as people read it (``none (empty database)`` for no revision)."""
    return revision or "none (empty database)"


def behind_message(current: str | None, head: str) -> str:
    """The start-up error when the schema is old and ``DATABASE_MIGRATE_ON_STARTUP`` is false."""
    return (f"database is at revision {revision_text(current)} but this version of codexlb needs "
            f"revision {head}; run `codexlb db upgrade` to migrate it (back it up first), or set "
            "CODEX_LB_DATABASE_MIGRATE_ON_STARTUP=true to migrate at start")


def unknown_revision_message(current: str, head: str) -> str:
    """The error when ``alembic_version`` holds a revision this code does not know."""
    return (f"database is at revision {current}, which this version of codexlb does not know (it needs "
            f"{head}); it was written by a newer codexlb or carries a legacy id: upgrade codexlb, or "
            "add the id to codexlb/db/legacy_revisions.py and enable "
            "CODEX_LB_DATABASE_ALEMBIC_AUTO_REMAP_ENABLED")


def failed_message(before: str | None, head: str, now: str | None, exc: BaseException,
                   backup: Path | None) -> str:
    """The error when running the migration itself failed."""
    saved = f"; a copy taken before the attempt is at {backup}" if backup else ""
    return (f"database migration from revision {revision_text(before)} to {head} failed: "
            f"{type(exc).__name__}: {exc}. The database is at revision {revision_text(now)}{saved}. "
            "Fix the cause and start again (or run `codexlb db upgrade`).")


def alembic_config(settings: Settings | None = None, *, migrations_dir: Path | None = None) -> Config:
    """An Alembic ``Config`` built in code (no ini file)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir or MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if settings is not None:
        cfg.attributes["settings"] = settings
    return cfg


@functools.lru_cache(maxsize=8)
def _script(migrations_dir: Path) -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(migrations_dir=migrations_dir))


def head_revision(migrations_dir: Path | None = None) -> str:
    """The single head revision of the migration history.

    Read from the revision files' ``revision``/``down_revision`` assignments without importing
    Alembic (11 MB of memory): a server whose database is already at head never loads it.
    """
    return _head_from_files(migrations_dir or MIGRATIONS_DIR)


@functools.lru_cache(maxsize=8)
def _head_from_files(migrations_dir: Path) -> str:
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (migrations_dir / "versions").glob("*.py"):
        values = _assignments(path)
        if isinstance(values.get("revision"), str):
            revisions.add(values["revision"])
            down = values.get("down_revision")
            parents.update([down] if isinstance(down, str) else list(down or ()))
    heads = sorted(revisions - parents)
    if len(heads) != 1:
        raise CodexLBError(f"migration history must have exactly one head, found {heads}")
    return heads[0]


def _assignments(path: Path) -> dict[str, Any]:
    """Top-level ``name = <literal>`` / ``name: T = <literal>`` assignments of a revision file."""
    out: dict[str, Any] = {}
    for node in ast.parse(path.read_text()).body:
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
        value = getattr(node, "value", None)
        if isinstance(target, ast.Name) and target.id in ("revision", "down_revision") and value is not None:
            try:
                out[target.id] = ast.literal_eval(value)
            except ValueError:
                continue
    return out


def history(migrations_dir: Path | None = None) -> list[tuple[str, str | None, str]]:
    """``(revision, down_revision, message)`` from base to head."""
    script = _script(migrations_dir or MIGRATIONS_DIR)
    revs = list(script.walk_revisions())[::-1]
    return [(r.revision, r.down_revision if isinstance(r.down_revision, str | None)
             else ",".join(r.down_revision), r.doc or "") for r in revs]


def _heads(sync_conn: Connection) -> str | None:
    return ",".join(sorted(_version_rows(sync_conn))) or None


def _version_rows(sync_conn: Connection) -> list[str]:
    """The revisions in ``alembic_version`` (read with plain SQL, so Alembic stays unloaded)."""
    if not inspect(sync_conn).has_table("alembic_version"):
        return []
    return [row[0] for row in sync_conn.execute(text("SELECT version_num FROM alembic_version"))]


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision in ``alembic_version`` (``None`` for an empty database)."""
    async with engine.connect() as conn:
        return await conn.run_sync(_heads)


def _remap(sync_conn: Connection) -> dict[str, str]:
    done: dict[str, str] = {}
    for old in _version_rows(sync_conn):
        new = LEGACY_REVISIONS.get(old)
        if new is None:
            continue
        present = sync_conn.execute(text("SELECT count(*) FROM alembic_version WHERE version_num = :r"),
                                    {"r": new}).scalar_one()
        if present:
            sync_conn.execute(text("DELETE FROM alembic_version WHERE version_num = :r"), {"r": old})
        else:
            sync_conn.execute(text("UPDATE alembic_version SET version_num = :new WHERE version_num = :old"),
                              {"new": new, "old": old})
        done[old] = new
    return done


def _has_tables(sync_conn: Connection) -> bool:
    return bool(sync_conn.execute(text("SELECT count(*) FROM sqlite_master WHERE type = 'table'")).scalar())


def _upgrade(sync_conn: Connection, cfg: Config, head: str) -> bool:
    """Upgrade inside the caller's locked transaction; ``False`` if another process already did."""
    if sync_conn.dialect.name == "postgresql":
        sync_conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK})
    if _heads(sync_conn) == head:
        return False
    from alembic import command

    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, "head")
    return True


def backup_sqlite(path: Path, before: str | None, head: str, max_files: int) -> Path:
    """Copy a live SQLite file consistently (backup API) next to it, mode 0600; keep the newest ``max_files``."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    target = path.with_name(f"{path.name}.{stamp}.{before or 'unversioned'}-to-{head}.bak")
    create_private_file(target)
    src, dst = sqlite3.connect(path), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    backups = sorted(p for p in path.parent.iterdir()
                     if p.name.startswith(path.name + ".") and p.name.endswith(".bak"))
    for old in backups[:-max_files]:
        old.unlink(missing_ok=True)
    return target


async def prepare_database(settings: Settings, engine: AsyncEngine, *,
                           migrations_dir: Path | None = None) -> MigrationReport:
    """Bring the schema to head as the settings allow; see ``DATABASE_*`` in the settings.

    :raises DatabaseUnavailable: the database cannot be reached.
    :raises ConfigError: the schema is behind and ``DATABASE_MIGRATE_ON_STARTUP`` is false.
    :raises MigrationFailed: a migration failed (or the revision is unknown) and fail-fast is on.
    :returns: the report; with fail-fast off, ``report.error`` holds the failure.
    """
    migrations_dir = migrations_dir or MIGRATIONS_DIR
    head = head_revision(migrations_dir)
    conn = await connect(engine)
    try:
        await conn.execution_options(**BEGIN_IMMEDIATE)  # the remap writes; SQLite: lock first
        await conn.begin()
        before = await conn.run_sync(_heads)
        remapped = await conn.run_sync(_remap) if settings.database_alembic_auto_remap_enabled else {}
        current = await conn.run_sync(_heads) if remapped else before
        has_tables = await conn.run_sync(_has_tables) if is_sqlite(engine) else True
        await conn.commit()
    finally:
        await conn.close()
    report = MigrationReport(head=head, before=before, current=current, remapped=remapped)
    for old, new in remapped.items():
        log.warning("alembic_version: legacy revision %s remapped to %s", old, new)
    if current == head:
        return report
    if current is not None and any(_unknown(r, migrations_dir) for r in current.split(",")):
        return _fail(settings, report, unknown_revision_message(current, head))
    if not settings.database_migrate_on_startup:
        raise ConfigError(behind_message(current, head))
    path = settings.sqlite_path
    if (settings.database_sqlite_pre_migrate_backup_enabled and path is not None and path.exists()
            and has_tables and is_sqlite(engine)):
        try:
            report.backup = await asyncio.to_thread(
                backup_sqlite, path, current, head, settings.database_sqlite_pre_migrate_backup_max_files)
        except (OSError, sqlite3.Error) as exc:
            return _fail(settings, report, f"could not back up {path} before migrating, so the migration "
                                           f"did not run: {type(exc).__name__}: {exc}")
        log.info("database backed up to %s before migrating", report.backup)
    log.info("migrating database from revision %s to %s", revision_text(current), head)
    cfg = alembic_config(settings, migrations_dir=migrations_dir)
    try:
        async with engine.connect() as conn:
            await conn.execution_options(**BEGIN_IMMEDIATE)  # one migrator at a time (SQLite)
            async with conn.begin():
                report.upgraded = await conn.run_sync(_upgrade, cfg, head)
    except Exception as exc:
        report.current = await _current_or_none(engine)
        return _fail(settings, report, failed_message(current, head, report.current, exc, report.backup),
                     exc)
    report.current = head
    return report


def _unknown(revision: str, migrations_dir: Path) -> bool:
    from alembic.util import CommandError

    try:
        return _script(migrations_dir).get_revision(revision) is None
    except CommandError:
        return True


async def _current_or_none(engine: AsyncEngine) -> str | None:
    try:
        return await current_revision(engine)
    except Exception:  # the database itself may be what failed
        return None


def _fail(settings: Settings, report: MigrationReport, message: str,
          exc: BaseException | None = None) -> MigrationReport:
    if settings.database_migrations_fail_fast:
        raise MigrationFailed(message) from exc
    log.error("%s (CODEX_LB_DATABASE_MIGRATIONS_FAIL_FAST is false: starting anyway)", message,
              exc_info=exc)
    report.error = message
    return report


async def readiness(engine: AsyncEngine, *, report: MigrationReport | None = None,
                    migrations_dir: Path | None = None, timeout: float = 5.0) -> dict[str, Any]:
    """``{"database": "ok" | error, "migrations": "ok" | "behind: X -> Y" | error}`` for ``/readyz``."""
    try:
        async with asyncio.timeout(timeout), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            current = await conn.run_sync(_heads)
    except Exception as exc:
        return {"database": f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
                "migrations": "unknown: database unavailable"}
    head = head_revision(migrations_dir)
    if current == head:
        return {"database": "ok", "migrations": "ok"}
    if report is not None and report.error:
        return {"database": "ok", "migrations": report.error}
    if current is not None and any(_unknown(r, migrations_dir or MIGRATIONS_DIR) for r in current.split(",")):
        return {"database": "ok", "migrations": unknown_revision_message(current, head)}
    return {"database": "ok", "migrations": f"behind: {current or 'none'} -> {head}"}
