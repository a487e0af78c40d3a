"""Fixtures for the storage tests. Every fixture that touches a database runs on both backends.

``database_url`` is SQLite in ``tmp_path`` or a fresh PostgreSQL database made by
:func:`tests.support.postgres.temp_postgres_database` on ``CODEX_LB_TEST_POSTGRES_URL`` (the
PostgreSQL half is skipped, with the reason shown, when that variable is unset). Other suites can
copy ``backend`` + ``database_url`` or call the helper directly.
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from codexlb.db.crypto import TokenCipher, load_cipher
from codexlb.db.engine import make_engine, make_sessionmaker
from codexlb.db.migrate import MIGRATIONS_DIR, MigrationReport, head_revision, prepare_database
from codexlb.db.store import AccountStore
from codexlb.settings import Settings
from tests.support.postgres import postgres_base_url, temp_postgres_database

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def database_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """A URL of an empty database of ``backend``, private to this test."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
        return
    async with temp_postgres_database(postgres_base_url()) as url:
        yield url


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=database_url, data_dir=str(tmp_path),
                    encryption_key_file=str(tmp_path / "keys" / "encryption.key"))


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(settings)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def migrated(settings: Settings, engine: AsyncEngine) -> MigrationReport:
    return await prepare_database(settings, engine)


@pytest.fixture
def sessionmaker(engine: AsyncEngine, migrated: MigrationReport) -> async_sessionmaker[AsyncSession]:
    return make_sessionmaker(engine)


@pytest.fixture
async def cipher(settings: Settings, engine: AsyncEngine, migrated: MigrationReport) -> TokenCipher:
    return await load_cipher(settings, engine)


@pytest.fixture
def store(sessionmaker: async_sessionmaker[AsyncSession], cipher: TokenCipher) -> AccountStore:
    return AccountStore(sessionmaker, cipher)


@pytest.fixture
def migrations_with(tmp_path: Path) -> Callable[[str], Path]:
    """Copy ``migrations/`` and add a revision ``0002_test`` (after the head) whose ``upgrade()`` body is given."""
    head = head_revision()

    def make(upgrade_body: str) -> Path:
        target = tmp_path / "migrations"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(MIGRATIONS_DIR, target, ignore=shutil.ignore_patterns("__pycache__"))
        (target / "versions" / "0002_test.py").write_text(textwrap.dedent(f'''\
            """Test revision."""
            import sqlalchemy as sa
            from alembic import op

            revision = "0002_test"
            down_revision = "{head}"
            branch_labels = None
            depends_on = None


            def upgrade():
            ''') + textwrap.indent(textwrap.dedent(upgrade_body), "    ") + "\n\ndef downgrade():\n    pass\n")
        return target

    return make
