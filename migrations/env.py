"""Alembic environment of codexlb (async; no alembic.ini).

The URL comes from codexlb settings: ``config.attributes["settings"]`` when the caller passes them,
otherwise ``load_settings()`` (so ``CODEX_LB_DATABASE_URL`` and ``.env`` apply). A caller that already
holds a connection passes it as ``config.attributes["connection"]`` (Alembic's connection-sharing
recipe); :func:`codexlb.db.migrate.prepare_database` does that.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from codexlb.db.engine import make_engine
from codexlb.db.models import Base
from codexlb.settings import Settings, load_settings

config = context.config
target_metadata = Base.metadata


def _settings() -> Settings:
    settings = config.attributes.get("settings")
    return settings if settings is not None else load_settings()


def run_migrations_offline() -> None:
    """Emit SQL to stdout instead of running it (``--sql``)."""
    context.configure(url=_settings().database_url, target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True,
                      dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    """Run the migrations on one (sync-facade) connection, in one transaction."""
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                      transactional_ddl=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    """Open a one-off engine from settings and migrate through it."""
    engine = make_engine(_settings(), poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        asyncio.run(run_async_migrations())
    else:
        do_run_migrations(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
