"""Engines: SQLite pragmas, PostgreSQL pool settings, session factory."""

from __future__ import annotations

import dataclasses

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from codexlb.db.engine import make_engine, make_sessionmaker
from codexlb.settings import Settings


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
