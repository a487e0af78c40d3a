"""Make the database itself refuse request-log rows (a trigger), on SQLite and PostgreSQL alike.

``refuse_request_logs(sessionmaker, status=999)`` makes the database refuse every row with that status
as a constraint would (SQLite ``RAISE(ABORT)``, PostgreSQL SQLSTATE 23514): "not this row".
``unavailable=True`` makes every insert fail as a database that cannot be used now would (SQLite: an
``OperationalError``, "integer overflow" in the trigger; PostgreSQL SQLSTATE 55P03, lock not available).
(A SQLite trigger naming a missing table would not do: a connection that compiled it keeps failing to
compile the insert after the trigger is dropped, until it reloads the schema.)
``allow_request_logs`` removes the trigger.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from codexlb.db.engine import begin_write


async def refuse_request_logs(sessionmaker: async_sessionmaker[AsyncSession], *, status: int = 999,
                              unavailable: bool = False) -> None:
    """Install the refusing trigger (see the module docstring)."""
    async with begin_write(sessionmaker) as session:
        if (await session.connection()).dialect.name == "sqlite":
            action = ("BEGIN SELECT abs(-9223372036854775807 - 1); END" if unavailable  # SQLITE_ERROR at run time
                      else f"WHEN NEW.status = {status:d} BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END")
            await session.execute(text(f"CREATE TRIGGER refuse_request_log BEFORE INSERT ON request_log {action}"))
            return
        state = "55P03" if unavailable else "23514"
        await session.execute(text(f"""CREATE FUNCTION refuse_request_log() RETURNS trigger AS $$
            BEGIN
                IF {'TRUE' if unavailable else f'NEW.status = {status:d}'} THEN
                    RAISE EXCEPTION 'refused by test trigger' USING ERRCODE = '{state}';
                END IF;
                RETURN NEW;
            END $$ LANGUAGE plpgsql"""))
        await session.execute(text("CREATE TRIGGER refuse_request_log BEFORE INSERT ON request_log "
                                   "FOR EACH ROW EXECUTE FUNCTION refuse_request_log()"))


async def allow_request_logs(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """Remove the trigger :func:`refuse_request_logs` installed."""
    async with begin_write(sessionmaker) as session:
        if (await session.connection()).dialect.name == "sqlite":
            await session.execute(text("DROP TRIGGER refuse_request_log"))
            return
        await session.execute(text("DROP TRIGGER refuse_request_log ON request_log"))
        await session.execute(text("DROP FUNCTION refuse_request_log()"))
