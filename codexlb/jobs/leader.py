"""Who runs the background jobs: exactly one process per database.

SQLite: the one process that owns the file is always the leader (:class:`SoloLeadership`).

PostgreSQL (:class:`AdvisoryLockLeadership`): the leader holds the session-level advisory lock
:data:`LOCK_KEY` (``pg_try_advisory_lock``) on a dedicated connection outside the pool. Followers try
to take it every ``retry_seconds``; the leader checks its connection just as often and steps down at
once when the check fails. The lock belongs to the database session, so it is released by the server
when the leader's session ends:

- clean stop: the connection is closed, a follower takes over at its next try (<= ``retry_seconds``);
- the process dies: the OS closes the socket, the server ends the session at once, same bound;
- host or network gone (no FIN): the server notices through TCP keepalives set on that session
  (:data:`KEEPALIVE`: idle 10 s, then 3 probes 5 s apart, so ~25 s), then the lock is free.

So takeover is bounded by ``retry_seconds`` (+ ~25 s for a silent host), without clocks or expiry
rows; the stale leader itself stops within ``retry_seconds`` + ``check_timeout`` of losing its link.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from sqlalchemy import text

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from codexlb.settings import Settings

log = logging.getLogger("codexlb.jobs.leader")

LOCK_KEY = 0x636F_6465_786C_6231 & 0x7FFF_FFFF_FFFF_FFFF
"""Advisory lock key ("codexlb1"); advisory locks are per database, so one cluster = one database."""
KEEPALIVE = {"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3"}


class SoloLeadership:
    """SQLite: this process is the only one, hence the leader."""

    backend = "sqlite"
    is_leader = True

    async def check(self) -> bool:
        return True

    async def close(self) -> None:
        return None


class AdvisoryLockLeadership:
    """PostgreSQL: leader while holding ``pg_try_advisory_lock(LOCK_KEY)`` on its own connection."""

    backend = "postgresql"

    def __init__(self, settings: Settings, instance: str, *, check_timeout: float = 5.0) -> None:
        self.settings, self.instance = settings, instance
        self.check_timeout = check_timeout
        self.is_leader = False
        self.backend_pid: int | None = None
        """Server process id of the lock connection (tests terminate it to simulate a dead leader)."""
        self._engine: AsyncEngine | None = None
        self._conn: AsyncConnection | None = None

    def _make_engine(self) -> AsyncEngine:
        from sqlalchemy.pool import NullPool

        from codexlb.db.engine import make_engine

        server_settings = {"application_name": f"codexlb-jobs-{self.instance}"[:63], **KEEPALIVE}
        return make_engine(self.settings, poolclass=NullPool, connect_args={"server_settings": server_settings})

    async def check(self) -> bool:
        """Keep or try to take the lock; returns whether this process is the leader now."""
        try:
            async with asyncio.timeout(self.check_timeout):
                conn = await self._connection()
                if self.is_leader:
                    await conn.execute(text("SELECT 1"))
                else:
                    got = await conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": LOCK_KEY})
                    if got:
                        log.info("jobs: this process (%s) is now the leader", self.instance)
                    self.is_leader = bool(got)
        except Exception as exc:  # lost connection, timeout, server gone: not (or no longer) leader
            if self.is_leader:
                log.warning("jobs: lost the leader lock (%s); stepping down", type(exc).__name__)
            else:
                log.debug("jobs: leader check failed: %s", exc)
            self.is_leader = False
            await self._drop()
        return self.is_leader

    async def _connection(self) -> AsyncConnection:
        if self._conn is None:
            if self._engine is None:
                self._engine = self._make_engine()
            conn = await self._engine.connect()
            try:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                self.backend_pid = await conn.scalar(text("SELECT pg_backend_pid()"))
            except BaseException:
                await conn.close()
                raise
            self._conn = conn
        return self._conn

    async def _drop(self) -> None:
        """Forget the connection (closing it releases the lock if the server still has the session)."""
        conn, self._conn, self.backend_pid = self._conn, None, None
        if conn is not None:
            try:
                async with asyncio.timeout(self.check_timeout):
                    await conn.invalidate()
                    await conn.close()
            except Exception:  # already broken: nothing to release
                pass

    async def close(self) -> None:
        """Give up leadership (if held) and close the connection."""
        was_leader, self.is_leader = self.is_leader, False
        conn = self._conn
        if conn is not None and was_leader:
            try:
                async with asyncio.timeout(self.check_timeout):
                    await conn.scalar(text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
            except Exception:
                pass
        await self._drop()
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None


def make_leadership(settings: Settings, instance: str) -> SoloLeadership | AdvisoryLockLeadership:
    """The leadership for the configured database."""
    if settings.database_url.startswith("postgresql"):
        return AdvisoryLockLeadership(settings, instance)
    return SoloLeadership()
