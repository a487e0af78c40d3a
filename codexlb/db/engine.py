"""Async engines and session factories for SQLite (default) and PostgreSQL.

SQLite: every connection gets WAL, ``foreign_keys=ON``, ``synchronous=FULL`` and a busy timeout, and
SQLAlchemy (not the driver) emits ``BEGIN``, so DDL is transactional and a transaction that writes can
take the write lock up front: use :func:`begin_write` for every transaction that writes (it sends
``BEGIN IMMEDIATE`` on SQLite and is a plain transaction on PostgreSQL).
SQLite files are private: a new database file is created with mode 0600 before SQLite opens it
(SQLite gives its ``-wal``/``-shm``/journal files the database file's mode), whatever the umask.
PostgreSQL: a pre-pinged pool sized from settings.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

if TYPE_CHECKING:
    from codexlb.settings import Settings

log = logging.getLogger("codexlb.db")

SQLITE_BUSY_TIMEOUT_MS = 60_000
"""How long a SQLite writer waits for the write lock (covers a token refresh holding it)."""

BEGIN_IMMEDIATE: dict[str, Any] = {"codexlb_sqlite_begin": "BEGIN IMMEDIATE"}
"""Execution options that make a SQLite transaction take the write lock at ``BEGIN`` (ignored elsewhere)."""


def is_sqlite(engine_or_url: AsyncEngine | str) -> bool:
    """Whether an engine or URL is SQLite."""
    url = engine_or_url if isinstance(engine_or_url, str) else engine_or_url.url
    return make_url(url).get_backend_name() == "sqlite"


UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "55", "57", "58"})
"""PostgreSQL error classes that say "not now" rather than "not this row": connection, transaction
rollback, insufficient resources, object not in prerequisite state (a database not accepting
connections, a lock not available), operator intervention (shutdown, cannot connect now), system error."""


def is_unavailable(error: BaseException) -> bool:
    """Whether an error means the database cannot be used right now (down, locked, timed out),
    as opposed to one statement being refused (a constraint, a bad value): retry the former later."""
    if isinstance(error, OSError | exc.OperationalError | exc.InterfaceError | exc.DisconnectionError
                  | exc.TimeoutError):
        return True
    if not isinstance(error, exc.DBAPIError):
        return False
    state = getattr(error.orig, "sqlstate", None)
    return error.connection_invalidated or (isinstance(state, str) and state[:2] in UNAVAILABLE_SQLSTATE_CLASSES)


def make_engine(settings: Settings, **kwargs: Any) -> AsyncEngine:
    """Create the engine for ``settings.database_url``; ``kwargs`` go to ``create_async_engine``."""
    url = settings.database_url
    if is_sqlite(url):
        if settings.sqlite_path is not None:
            settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
            if not create_private_file(settings.sqlite_path):
                _warn_if_shared(settings.sqlite_path)
        connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, **kwargs.pop("connect_args", {})}
        engine = create_async_engine(url, connect_args=connect_args, **kwargs)
        _configure_sqlite(engine)
        return engine
    options: dict[str, Any] = {
        "pool_size": settings.database_pool_size,
        "max_overflow": settings.database_max_overflow,
        "pool_timeout": settings.database_pool_timeout_seconds,
        "pool_pre_ping": True,
    }
    if "poolclass" in kwargs:  # e.g. NullPool for one-shot commands: sizing options do not apply
        options = {}
    return create_async_engine(url, **{**options, **kwargs})


def create_private_file(path: Path) -> bool:
    """Create an empty file with mode 0600 (not subject to the umask); ``False`` if it already exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    try:
        if os.name == "posix":
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    return True


def _warn_if_shared(path: Path) -> None:
    try:
        shared = os.name == "posix" and path.is_file() and bool(path.stat().st_mode & 0o077)
    except OSError:
        return
    if shared:
        log.warning("database file %s is readable by other users; chmod 600 it (and its -wal/-shm files)",
                    path)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Session factory; objects stay readable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def begin_write(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session in a transaction that will write: commits on success, rolls back on error.

    On SQLite it begins with ``BEGIN IMMEDIATE``: a transaction that reads before it writes would
    otherwise fail with "database is locked" (no busy wait) when another writer got in between.
    """
    async with sessionmaker() as session, session.begin():
        await session.connection(execution_options=BEGIN_IMMEDIATE)
        yield session


def _configure_sqlite(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Stop the driver from issuing its own BEGIN (it skips DDL); the "begin" hook below does it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get("codexlb_sqlite_begin", "BEGIN"))
