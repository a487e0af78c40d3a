"""Engines: SQLite pragmas, PostgreSQL pool settings, session factory."""

from __future__ import annotations

import dataclasses

import asyncpg
import pytest
from sqlalchemy import exc, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from codexlb.db.engine import is_unavailable, make_engine, make_sessionmaker
from codexlb.settings import Settings
from tests.support.postgres import postgres_base_url, temp_postgres_database


async def test_sqlite_connections_use_wal_foreign_keys_and_busy_timeout(engine: AsyncEngine,
                                                                        backend: str) -> None:
    async with engine.connect() as conn:
        if backend != "sqlite":
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
            return
        pragma = {name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
                  for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")}
    assert pragma == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 60_000, "synchronous": 2}


async def test_pool_follows_settings(settings: Settings, backend: str) -> None:
    settings = dataclasses.replace(settings, database_pool_size=3, database_max_overflow=2,
                                   database_pool_timeout_seconds=4.5)
    engine = make_engine(settings)
    try:
        if backend == "sqlite":
            assert engine.url.get_backend_name() == "sqlite"
            return
        pool = engine.pool
        assert (pool.size(), pool._max_overflow, pool._timeout, pool._pre_ping) == (3, 2, 4.5, True)
    finally:
        await engine.dispose()


async def test_sessionmaker_keeps_objects_readable_after_commit(engine: AsyncEngine) -> None:
    assert make_sessionmaker(engine).kw["expire_on_commit"] is False


async def test_a_postgres_database_refusing_connections_is_unavailable_not_a_refused_statement() -> None:
    base = postgres_base_url()
    async with temp_postgres_database(base) as url:
        name = make_url(url).database
        admin = await asyncpg.connect(make_url(base).set(drivername="postgresql").render_as_string(False))
        try:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            engine = create_async_engine(url)
            try:
                with pytest.raises(exc.DBAPIError) as refused:
                    async with engine.connect():
                        pass
            finally:
                await engine.dispose()
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        finally:
            await admin.close()
    assert "not currently accepting connections" in str(refused.value)
    assert is_unavailable(refused.value)


async def test_a_row_the_database_refuses_is_not_unavailability(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("CREATE TEMPORARY TABLE refusing (x INTEGER NOT NULL)"))
        with pytest.raises(exc.DBAPIError) as refused:
            await conn.execute(text("INSERT INTO refusing (x) VALUES (NULL)"))
    assert not is_unavailable(refused.value)
