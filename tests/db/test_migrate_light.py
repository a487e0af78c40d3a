"""Start-up on an up-to-date database reads the head from the files and never loads Alembic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from codexlb.db.migrate import MIGRATIONS_DIR, _script, head_revision

CHECK = """
import asyncio, sys
from codexlb.db.engine import make_engine
from codexlb.db.migrate import prepare_database
from codexlb.settings import Settings

async def main():
    settings = Settings(database_url="sqlite+aiosqlite:///{db}", encryption_key_file="{db}.key")
    engine = make_engine(settings)
    report = await prepare_database(settings, engine)
    await engine.dispose()
    print(report.upgraded, report.current, "alembic" in sys.modules)

asyncio.run(main())
"""


def test_head_from_files_matches_alembic() -> None:
    assert head_revision() == _script(MIGRATIONS_DIR).get_heads()[0]


def test_alembic_loaded_only_when_a_migration_runs(tmp_path: Path) -> None:
    code = CHECK.replace("{db}", str(tmp_path / "store.db"))
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == ["True", head_revision(), "True"]
    second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    assert second.stdout.split() == ["False", head_revision(), "False"]
