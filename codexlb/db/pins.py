"""The ``conversation_pins`` table: which account each conversation lives on, agreed by replicas.

A placement is claimed with ``INSERT ... ON CONFLICT DO NOTHING`` and the winner read back, so two
replicas placing the same new conversation at once end up naming the same account. A move is a
compare-and-set ``UPDATE`` (only while the row still names the old account); a loser reads the
winner back. Every function is one short transaction; callers bound the wait themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from codexlb.db.engine import begin_write
from codexlb.db.models import ConversationPinRow

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

PINS = ConversationPinRow
TOUCH_BATCH = 500
"""Keys per ``UPDATE ... WHERE key_hash IN (...)`` when marking pins used."""


@dataclass(frozen=True, slots=True)
class Pin:
    """One row: the conversation's account, how often it moved, when it was placed or last moved."""

    key_hash: str
    account_id: str
    moves: int
    changed_at: float


_COLUMNS = (PINS.key_hash, PINS.account_id, PINS.moves, PINS.changed_at)


def _pin(row: Any) -> Pin:
    return Pin(row.key_hash, row.account_id, int(row.moves or 0), float(row.changed_at))


async def _read(session: AsyncSession, key_hash: str) -> Pin | None:
    row = (await session.execute(select(*_COLUMNS).where(PINS.key_hash == key_hash))).first()
    return None if row is None else _pin(row)


def _insert_if_absent(dialect: str, values: dict[str, Any]) -> Any:
    module: Any = postgresql if dialect == "postgresql" else sqlite
    return module.insert(PINS).values(**values).on_conflict_do_nothing(index_elements=["key_hash"])


async def get_pin(sessionmaker: async_sessionmaker[AsyncSession], key_hash: str) -> Pin | None:
    """The conversation's row, or ``None`` when no replica placed it (or it was pruned)."""
    async with sessionmaker() as session:
        return await _read(session, key_hash)


async def get_pin_and_changes(sessionmaker: async_sessionmaker[AsyncSession], key_hash: str, since: float,
                              limit: int) -> tuple[Pin | None, list[Pin]]:
    """The conversation's row (or ``None``) and, in the same read, the rows changed at or after
    ``since`` (oldest first, at most ``limit``)."""
    query = (select(*_COLUMNS).where(or_(PINS.key_hash == key_hash, PINS.changed_at >= since))
             .order_by(PINS.changed_at.desc()).limit(limit + 1))
    async with sessionmaker() as session:
        rows = [_pin(r) for r in (await session.execute(query)).all()]
    mine = next((p for p in rows if p.key_hash == key_hash), None)
    if mine is None and len(rows) > limit:  # the row itself may be past the limit: ask for it alone
        async with sessionmaker() as session:
            mine = await _read(session, key_hash)
    return mine, [p for p in reversed(rows) if p.changed_at >= since][-limit:]


async def claim_pin(sessionmaker: async_sessionmaker[AsyncSession], key_hash: str, account_id: str,
                    now: float) -> tuple[Pin, bool]:
    """Place the conversation on ``account_id`` unless a row exists; ``(the row, whether ours won)``."""
    values = {"key_hash": key_hash, "account_id": account_id, "moves": 0, "changed_at": now, "used_at": now}
    async with begin_write(sessionmaker) as session:
        dialect = session.get_bind().dialect.name
        inserted = (await session.execute(_insert_if_absent(dialect, values).returning(*_COLUMNS))).first()
        if inserted is not None:
            return _pin(inserted), True
        winner = await _read(session, key_hash)  # READ COMMITTED: the conflicting row is committed
    if winner is None:  # pruned in between: the place is free again
        return await claim_pin(sessionmaker, key_hash, account_id, now)
    return winner, False


async def move_pin(sessionmaker: async_sessionmaker[AsyncSession], key_hash: str, old: str | None, new: str,
                   now: float) -> tuple[Pin, bool]:
    """Move the conversation from ``old`` to ``new`` if the row still names ``old`` (or is gone).

    Returns ``(the row, whether this move won)``; a lost move returns the account another replica
    chose meanwhile.
    """
    if old is None:
        return await claim_pin(sessionmaker, key_hash, new, now)
    statement = (update(PINS).where(PINS.key_hash == key_hash, PINS.account_id == old)
                 .values(account_id=new, moves=PINS.moves + 1, changed_at=now, used_at=now)
                 .returning(*_COLUMNS).execution_options(synchronize_session=False))
    async with begin_write(sessionmaker) as session:
        moved = (await session.execute(statement)).first()
        if moved is not None:
            return _pin(moved), True
        current = await _read(session, key_hash)
    if current is None:
        return await claim_pin(sessionmaker, key_hash, new, now)
    return current, current.account_id == new


async def _pins_since(sessionmaker: async_sessionmaker[AsyncSession], column: Any, since: float,
                      limit: int) -> list[Pin]:
    """The ``limit`` newest rows with ``column`` at or after ``since``, oldest first."""
    query = select(*_COLUMNS).where(column >= since).order_by(column.desc()).limit(limit)
    async with sessionmaker() as session:
        rows = (await session.execute(query)).all()
    return [_pin(r) for r in reversed(rows)]


async def pins_changed_since(sessionmaker: async_sessionmaker[AsyncSession], since: float,
                             limit: int) -> list[Pin]:
    """Rows placed or moved at or after ``since``, oldest first (served by the ``changed_at`` index)."""
    return await _pins_since(sessionmaker, PINS.changed_at, since, limit)


async def pins_used_since(sessionmaker: async_sessionmaker[AsyncSession], since: float,
                          limit: int) -> list[Pin]:
    """Rows used at or after ``since``, least recently used first (at most the ``limit`` newest)."""
    return await _pins_since(sessionmaker, PINS.used_at, since, limit)


async def touch_pins(sessionmaker: async_sessionmaker[AsyncSession], key_hashes: Iterable[str],
                     now: float) -> None:
    """Mark pins used at ``now`` (rows that are gone stay gone)."""
    keys: Sequence[str] = sorted(set(key_hashes))  # one lock order for every replica
    async with begin_write(sessionmaker) as session:
        for start in range(0, len(keys), TOUCH_BATCH):
            batch = keys[start:start + TOUCH_BATCH]
            await session.execute(update(PINS).where(PINS.key_hash.in_(batch)).values(used_at=now)
                                  .execution_options(synchronize_session=False))


async def prune_pins(sessionmaker: async_sessionmaker[AsyncSession], older_than: float) -> int:
    """Delete pins unused since ``older_than``; returns how many."""
    async with begin_write(sessionmaker) as session:
        result = await session.execute(delete(PINS).where(PINS.used_at < older_than)
                                       .execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
