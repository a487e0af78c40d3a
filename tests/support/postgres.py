"""Database helpers for tests: a throw-away PostgreSQL database per test.

Many test modules share one PostgreSQL server (``CODEX_LB_TEST_POSTGRES_URL``, e.g.
``postgresql+asyncpg://postgres@127.0.0.1:5432/test``). Each test gets its own database, created
from that URL's server and dropped afterwards, so no test sees another's tables::

    async with temp_postgres_database(os.environ[POSTGRES_URL_ENV]) as url:
        settings = Settings(database_url=url, ...)
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy.engine import make_url

POSTGRES_URL_ENV = "CODEX_LB_TEST_POSTGRES_URL"
"""Environment variable with the URL of a PostgreSQL database the tests may connect to."""


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@asynccontextmanager
async def temp_postgres_database(base_url: str, *, prefix: str = "test_") -> AsyncIterator[str]:
    """Create ``<prefix><random>`` on ``base_url``'s server; yield its SQLAlchemy URL; drop it after.

    ``base_url`` only needs to reach a database the user may connect to and a role allowed to
    ``CREATE DATABASE``. The drop uses ``WITH (FORCE)``, so connections a test leaked do not block it.
    """
    name = f"{prefix}{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(_asyncpg_dsn(base_url))
    try:
        for attempt in range(20):
            try:
                await admin.execute(f'CREATE DATABASE "{name}"')
                break
            except asyncpg.ObjectInUseError:  # another CREATE DATABASE is copying template1
                if attempt == 19:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))
    finally:
        await admin.close()
    try:
        yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        admin = await asyncpg.connect(_asyncpg_dsn(base_url))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def postgres_base_url() -> str:
    """``CODEX_LB_TEST_POSTGRES_URL``, or skip the calling test (with the reason shown) when unset."""
    import os

    import pytest

    url = os.environ.get(POSTGRES_URL_ENV)
    if not url:
        pytest.skip(f"PostgreSQL not configured: set {POSTGRES_URL_ENV}, "
                    "e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    return url
