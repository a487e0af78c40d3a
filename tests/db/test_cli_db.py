"""``codexlb db upgrade | current | history``: handlers directly and through ``python -m codexlb``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

import codexlb
from codexlb.cli import db as cli_db
from codexlb.db.migrate import current_revision, head_revision
from codexlb.settings import Settings

HEAD = head_revision()
REPO = Path(codexlb.__file__).resolve().parent.parent


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli_db.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(list(argv))


def _run(settings: Settings, *argv: str) -> int:
    args = _parse(*argv)
    return int(args.func(args, settings))


def test_register_adds_the_three_commands() -> None:
    for name, func in (("upgrade", cli_db.upgrade), ("current", cli_db.current),
                       ("history", cli_db.show_history)):
        assert _parse("db", name).func is func
    with pytest.raises(SystemExit):
        _parse("db")


async def test_upgrade_current_history(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    """The handlers call ``asyncio.run``, so they run in a thread here."""

    def run(*argv: str) -> tuple[int, str]:
        code = _run(settings, *argv)
        return code, capsys.readouterr().out

    assert await asyncio.to_thread(run, "db", "current") == (
        0, f"none (empty database); this codexlb needs {HEAD}: run `codexlb db upgrade`\n"
        if settings.sqlite_path is None else
        f"none (no database file at {settings.sqlite_path}); this codexlb needs {HEAD}\n")
    assert await asyncio.to_thread(run, "db", "upgrade") == (
        0, f"upgraded the database from revision none (empty database) to {HEAD}\n")
    assert await asyncio.to_thread(run, "db", "upgrade") == (
        0, f"the database is already at revision {HEAD} (head); nothing to do\n")
    assert await asyncio.to_thread(run, "db", "current") == (0, f"{HEAD} (head)\n")
    code, out = await asyncio.to_thread(run, "db", "history")
    assert code == 0 and out.startswith("<base> -> 0001_initial  Initial schema")
    assert out.rstrip().endswith("(head, current)")


async def test_upgrade_ignores_migrate_on_startup_and_reports_failure(
        settings: Settings, engine: AsyncEngine, capsys: pytest.CaptureFixture[str]) -> None:
    settings = dataclasses.replace(settings, database_migrate_on_startup=False)
    assert await asyncio.to_thread(_run, settings, "db", "upgrade") == 0
    assert await current_revision(engine) == HEAD
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = 'from_the_future'"))
    await engine.dispose()
    capsys.readouterr()
    assert await asyncio.to_thread(_run, settings, "db", "upgrade") == 1
    err = capsys.readouterr().err
    assert err.startswith("codexlb db upgrade: database is at revision from_the_future, which this")


def _cli(tmp_path: Path, url: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_LB_")}
    env |= {"CODEX_LB_DATABASE_URL": url, "CODEX_LB_DATA_DIR": str(tmp_path),
            "CODEX_LB_ENCRYPTION_KEY_FILE": str(tmp_path / "encryption.key"),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "codexlb", *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)


def test_python_m_codexlb_db(tmp_path: Path, database_url: str) -> None:
    upgraded = _cli(tmp_path, database_url, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"to {HEAD}" in upgraded.stdout
    history = _cli(tmp_path, database_url, "db", "history")
    assert history.returncode == 0 and HEAD in history.stdout
    assert history.stdout.rstrip().endswith("(head, current)")
