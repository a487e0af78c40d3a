"""Migrations: upgrade, autogenerate parity, remap, backups, fail-fast, readiness."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from codexlb.db.legacy_revisions import LEGACY_REVISIONS
from codexlb.db.migrate import (
    MigrationFailed,
    MigrationReport,
    behind_message,
    current_revision,
    head_revision,
    prepare_database,
    readiness,
)
from codexlb.db.models import Base
from codexlb.errors import ConfigError
from codexlb.settings import Settings

ADD_TABLE = 'op.create_table("extra", sa.Column("id", sa.Integer(), primary_key=True))'
HEAD = head_revision()
BROKEN = ADD_TABLE + '\nop.execute("SELECT * FROM no_such_table")'


def _backups(settings: Settings) -> list[Path]:
    path = settings.sqlite_path
    return [] if path is None else sorted(path.parent.glob(path.name + ".*.bak"))


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def test_upgrades_empty_database_to_head(engine: AsyncEngine, settings: Settings) -> None:
    report = await prepare_database(settings, engine)
    assert (report.before, report.current, report.upgraded, report.ok) == (None, HEAD, True, True)
    assert {"accounts", "request_log", "usage_snapshots", "model_registry", "meta"} <= await _tables(engine)
    again = await prepare_database(settings, engine)
    assert (again.before, again.upgraded, again.backup) == (HEAD, False, None)


async def test_autogenerate_finds_no_difference_after_upgrade(engine: AsyncEngine,
                                                             migrated: MigrationReport) -> None:
    def diff(sync_conn):  # type: ignore[no-untyped-def]
        context = MigrationContext.configure(sync_conn, opts={"compare_type": True,
                                                              "compare_server_default": True})
        return compare_metadata(context, Base.metadata)

    async with engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_indexes_for_dashboard_queries(engine: AsyncEngine, migrated: MigrationReport) -> None:
    async with engine.connect() as conn:
        indexes = await conn.run_sync(lambda c: inspect(c).get_indexes("request_log"))
    assert {tuple(i["column_names"]) for i in indexes} >= {("time",), ("account_id", "time")}


async def test_refuses_to_start_behind_when_migrate_on_startup_is_off(engine: AsyncEngine,
                                                                      settings: Settings) -> None:
    settings = dataclasses.replace(settings, database_migrate_on_startup=False)
    with pytest.raises(ConfigError) as info:
        await prepare_database(settings, engine)
    assert str(info.value) == behind_message(None, HEAD)
    assert str(info.value) == (
        "database is at revision none (empty database) but this version of codexlb needs revision "
        f"{HEAD}; run `codexlb db upgrade` to migrate it (back it up first), or set "
        "CODEX_LB_DATABASE_MIGRATE_ON_STARTUP=true to migrate at start")
    assert await current_revision(engine) is None


async def test_up_to_date_database_starts_with_migrate_on_startup_off(
        engine: AsyncEngine, settings: Settings, migrated: MigrationReport) -> None:
    report = await prepare_database(dataclasses.replace(settings, database_migrate_on_startup=False), engine)
    assert report.ok and not report.upgraded


async def test_remaps_legacy_revision_before_upgrading(engine: AsyncEngine, settings: Settings,
                                                       migrated: MigrationReport) -> None:
    from alembic import command

    from codexlb.db.migrate import alembic_config

    legacy = next(old for old, new in LEGACY_REVISIONS.items() if new == "0001_initial")
    await asyncio.to_thread(command.downgrade, alembic_config(settings), "0001_initial")  # the legacy schema
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": legacy})
    report = await prepare_database(settings, engine)
    assert report.remapped == {legacy: "0001_initial"}
    assert (report.before, report.current, report.ok) == (legacy, HEAD, True)
    assert await current_revision(engine) == HEAD


async def test_request_log_history_migration_keeps_rows_both_ways(engine: AsyncEngine, settings: Settings,
                                                                  migrated: MigrationReport) -> None:
    from alembic import command

    from codexlb.db.migrate import alembic_config

    cfg = alembic_config(settings)
    await asyncio.to_thread(command.downgrade, cfg, "0001_initial")
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO accounts (id, label, created_at, updated_at) "
                                "VALUES ('a1', 'one', 0, 0), ('a2', 'two', 0, 0)"))
        await conn.execute(text("INSERT INTO request_log (time, account_id, endpoint, attempts) "
                                "VALUES (1, 'a1', 'responses', 1), (2, 'a2', 'responses', 1)"))
    await asyncio.to_thread(command.upgrade, cfg, "head")
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM accounts WHERE id = 'a1'"))
        await conn.execute(text("INSERT INTO request_log (time, account_id, account_label, endpoint, attempts) "
                                "VALUES (3, 'a1', 'one', 'responses', 1)"))  # the account is gone: still fine
        rows = (await conn.execute(text("SELECT time, account_id, account_label FROM request_log ORDER BY time")
                                   )).all()
    assert [tuple(r) for r in rows] == [(1.0, "a1", None), (2.0, "a2", None), (3.0, "a1", "one")]
    await asyncio.to_thread(command.downgrade, cfg, "0001_initial")  # the foreign key comes back
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT time, account_id FROM request_log ORDER BY time"))).all()
    assert [tuple(r) for r in rows] == [(1.0, None), (2.0, "a2"), (3.0, None)]
    await asyncio.to_thread(command.upgrade, cfg, "head")
    assert await current_revision(engine) == HEAD


async def test_unknown_legacy_revision_fails_when_remap_is_off(engine: AsyncEngine, settings: Settings,
                                                               migrated: MigrationReport) -> None:
    legacy = next(iter(LEGACY_REVISIONS))
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": legacy})
    settings = dataclasses.replace(settings, database_alembic_auto_remap_enabled=False)
    with pytest.raises(MigrationFailed, match=f"revision {legacy}, which this version of codexlb does not"):
        await prepare_database(settings, engine)
    assert await current_revision(engine) == legacy


async def test_failing_migration_raises_and_rolls_back_when_fail_fast(
        engine: AsyncEngine, settings: Settings, migrated: MigrationReport,
        migrations_with: Callable[[str], Path]) -> None:
    folder = migrations_with(BROKEN)
    with pytest.raises(MigrationFailed) as info:
        await prepare_database(settings, engine, migrations_dir=folder)
    message = str(info.value)
    assert message.startswith(f"database migration from revision {HEAD} to 0002_test failed: ")
    assert "no_such_table" in message and f"The database is at revision {HEAD}" in message
    assert info.value.exit_status == 1
    assert await current_revision(engine) == HEAD
    assert "extra" not in await _tables(engine)  # the whole migration was rolled back


async def test_failing_migration_is_reported_when_not_fail_fast(
        engine: AsyncEngine, settings: Settings, migrated: MigrationReport,
        migrations_with: Callable[[str], Path]) -> None:
    folder = migrations_with(BROKEN)
    settings = dataclasses.replace(settings, database_migrations_fail_fast=False)
    report = await prepare_database(settings, engine, migrations_dir=folder)
    assert not report.ok and report.current == HEAD
    assert report.error is not None and "no_such_table" in report.error
    assert await readiness(engine, migrations_dir=folder) == {
        "database": "ok", "migrations": f"behind: {HEAD} -> 0002_test"}
    assert await readiness(engine, report=report, migrations_dir=folder) == {
        "database": "ok", "migrations": report.error}


async def test_readiness(engine: AsyncEngine, settings: Settings) -> None:
    assert await readiness(engine) == {"database": "ok", "migrations": f"behind: none -> {HEAD}"}
    await prepare_database(settings, engine)
    assert await readiness(engine) == {"database": "ok", "migrations": "ok"}


async def test_readiness_reports_unreachable_database(settings: Settings, tmp_path: Path) -> None:
    if settings.sqlite_path is not None:
        (tmp_path / "junk.db").write_bytes(b"this is not a database" * 200)
        broken = dataclasses.replace(settings, database_url=f"sqlite+aiosqlite:///{tmp_path / 'junk.db'}")
    else:
        broken = dataclasses.replace(settings, database_url="postgresql+asyncpg://postgres@127.0.0.1:1/x")
    from codexlb.db.engine import make_engine

    bad = make_engine(broken)
    try:
        result = await readiness(bad)
    finally:
        await bad.dispose()
    assert result["database"] != "ok" and result["migrations"] == "unknown: database unavailable"


async def test_backs_up_sqlite_before_a_pending_migration(
        engine: AsyncEngine, settings: Settings, migrated: MigrationReport,
        migrations_with: Callable[[str], Path]) -> None:
    assert _backups(settings) == []  # a fresh empty file is not backed up
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO meta (key, value) VALUES ('marker', 'before')"))
    umask = os.umask(0o022)  # the copy is private whatever the umask
    try:
        report = await prepare_database(settings, engine, migrations_dir=migrations_with(ADD_TABLE))
    finally:
        os.umask(umask)
    assert report.upgraded and report.current == "0002_test"
    if settings.sqlite_path is None:
        assert report.backup is None
        return
    assert _backups(settings) == [report.backup]
    assert stat.S_IMODE(report.backup.stat().st_mode) == 0o600
    assert report.backup.name.startswith("store.db.") and report.backup.name.endswith(
        f".{HEAD}-to-0002_test.bak")
    with sqlite3.connect(report.backup) as copy:
        assert copy.execute("SELECT value FROM meta WHERE key = 'marker'").fetchone() == ("before",)
        assert copy.execute("SELECT version_num FROM alembic_version").fetchone() == (HEAD,)
    copy.close()
    await prepare_database(settings, engine, migrations_dir=migrations_with(ADD_TABLE))
    assert _backups(settings) == [report.backup]  # nothing pending: no new backup


async def test_keeps_only_the_newest_backups(engine: AsyncEngine, settings: Settings,
                                             migrated: MigrationReport,
                                             migrations_with: Callable[[str], Path]) -> None:
    if settings.sqlite_path is None:  # PostgreSQL: no file to copy, so a migration never makes one
        report = await prepare_database(settings, engine, migrations_dir=migrations_with(ADD_TABLE))
        assert report.upgraded and report.backup is None
        return
    settings = dataclasses.replace(settings, database_sqlite_pre_migrate_backup_max_files=2)
    folder = migrations_with(ADD_TABLE)
    made = []
    for _ in range(3):
        report = await prepare_database(settings, engine, migrations_dir=folder)
        made.append(report.backup)
        async with engine.begin() as conn:  # go back so the next start migrates again
            await conn.execute(text("DROP TABLE extra"))
            await conn.execute(text(f"UPDATE alembic_version SET version_num = '{HEAD}'"))
    assert _backups(settings) == made[1:]


async def test_no_backup_when_disabled(engine: AsyncEngine, settings: Settings, migrated: MigrationReport,
                                       migrations_with: Callable[[str], Path]) -> None:
    settings = dataclasses.replace(settings, database_sqlite_pre_migrate_backup_enabled=False)
    report = await prepare_database(settings, engine, migrations_dir=migrations_with(ADD_TABLE))
    assert report.upgraded and report.backup is None and _backups(settings) == []


async def test_processes_starting_at_once_migrate_once(settings: Settings, engine: AsyncEngine) -> None:
    from codexlb.db.engine import make_engine

    other = make_engine(settings)  # a second engine stands in for a second process
    try:
        reports = await asyncio.gather(prepare_database(settings, engine), prepare_database(settings, other))
    finally:
        await other.dispose()
    assert all(r.ok for r in reports) and sorted(r.upgraded for r in reports) == [False, True]


async def test_env_py_runs_standalone_with_url_from_settings(settings: Settings, engine: AsyncEngine) -> None:
    """Without a shared connection, env.py opens its own engine from the settings it is given."""
    from alembic import command

    from codexlb.db.migrate import alembic_config

    await asyncio.to_thread(command.upgrade, alembic_config(settings), "head")
    assert await current_revision(engine) == HEAD


def test_env_py_offline_mode_emits_sql(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from alembic import command

    from codexlb.db.migrate import alembic_config

    settings = Settings(database_url="postgresql+asyncpg://u@localhost/x",
                        encryption_key_file=str(tmp_path / "k"))
    command.upgrade(alembic_config(settings), "head", sql=True)
    out = capsys.readouterr().out
    assert "CREATE TABLE accounts" in out and "CREATE INDEX ix_request_log_account_id_time" in out
