"""One replica's window on the routing state replicas share: the ``conversation_pins`` table
(:mod:`codexlb.db.pins`) and the running totals of ``account_spend`` (:mod:`codexlb.db.spend`).

Used by ``select_sticky`` when replicas share a PostgreSQL database. The pin table is asked only about
a conversation this replica does not know (once per conversation per replica) and written on a
placement or a move; known pins are served from memory. Every call is bounded by ``timeout``; a
failure opens a breaker for ``backoff`` seconds (the caller then decides alone, as a single process
would) and the decision is kept to be written once the database answers again. :meth:`sync` (every
``SYNC_SECONDS``) reads the rows other replicas changed, writes what was kept, marks used pins (at
most every ``TOUCH_SECONDS`` per pin) and prunes pins idle longer than ``IDLE_SECONDS``;
:meth:`spend` adds this replica's spend to the shared totals at the same pace.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from codexlb.db import pins as table
from codexlb.db.pins import Pin
from codexlb.db.spend import add_spend

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

T = TypeVar("T")
log = logging.getLogger("codexlb.select_sticky")

SYNC_SECONDS = 1.0
"""How often the rows other replicas placed or moved are read."""
SKEW_SECONDS = 5.0
"""Each read looks this far behind the previous one (clocks of other hosts, slow commits)."""
TOUCH_SECONDS = 600.0
"""A pin's row is marked used at most this often by one replica (enough to tell idle from live)."""
IDLE_SECONDS = 24 * 3600.0
"""A pin no turn used for this long is pruned (the same horizon the start-up warm-up reads)."""
PRUNE_SECONDS = 600.0
"""How often a replica deletes the idle pins (every replica may; the delete is idempotent)."""
LOOKUP_CHANGES = 1000
"""At most this many rows changed since the last read come with a lookup (the periodic read gets the rest)."""
MAX_PENDING = 10_000
"""Decisions kept while the database is away (the oldest are dropped beyond this)."""
PENDING_PER_SYNC = 200
"""Kept decisions written per sync (the rest at the next ones), so one sync stays short."""


class SharedState:
    """Bounded reads and writes of the shared pins and spend, a breaker, and decisions kept for later."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], *, timeout: float = 1.0,
                 backoff: float = 5.0) -> None:
        self.sessionmaker = sessionmaker
        self.timeout = timeout
        self.backoff = backoff
        self._skip_until = 0.0
        self._pending: OrderedDict[str, tuple[str | None, str]] = OrderedDict()
        self._touched: dict[str, float] = {}
        self._to_touch: set[str] = set()
        self._since: float | None = None
        self._newest = time.time()
        """``changed_at`` of the newest row read (a lookup reads what changed after it)."""
        self._pruned_at = 0.0

    def available(self, now: float | None = None) -> bool:
        """Whether the table is asked at all (the breaker is closed)."""
        return (time.monotonic() if now is None else now) >= self._skip_until

    async def _call(self, what: str, make: Callable[[], Awaitable[T]]) -> T | None:
        if not self.available():
            return None
        try:
            async with asyncio.timeout(self.timeout):
                return await make()
        except Exception:  # the table is shared knowledge, never a reason to fail a request
            self._skip_until = time.monotonic() + self.backoff
            log.warning("shared pins: could not %s; deciding alone for %g s", what, self.backoff, exc_info=True)
            return None

    # -- on the request path (once per conversation per replica, and on moves) ------------------

    async def lookup(self, key_hash: str) -> tuple[Pin | None, list[Pin]]:
        """The conversation's row (``None`` when absent or the table cannot be asked now) and, from
        the same read, the rows placed or moved since the newest this replica has seen (so a new
        conversation is placed knowing what the others placed a moment ago)."""
        found = await self._call("read a pin", lambda: table.get_pin_and_changes(
            self.sessionmaker, key_hash, self._newest, LOOKUP_CHANGES))
        if found is None:
            return None, []
        self.saw(found[1])
        return found

    async def claim(self, key_hash: str, account_id: str, old: str | None = None) -> Pin | None:
        """Place (``old`` is ``None``) or move the conversation; the row after, naming the winner.

        ``None`` when the table cannot be asked: the decision is kept and written by :meth:`sync`.
        """
        now = time.time()
        result = await self._call("write a pin", lambda: table.move_pin(self.sessionmaker, key_hash, old,
                                                                         account_id, now))
        if result is None:
            self._keep(key_hash, old, account_id)
            return None
        self._touched[key_hash] = now
        self.saw([result[0]])
        return result[0]

    def saw(self, rows: list[Pin]) -> None:
        """Remember the newest ``changed_at`` read, where the next lookup's changes start."""
        for row in rows:
            if row.changed_at > self._newest:
                self._newest = row.changed_at

    def used(self, key_hash: str, now: float) -> None:
        """A turn used the pin: mark its row used at the next sync, if not done recently."""
        if now - self._touched.get(key_hash, 0.0) >= TOUCH_SECONDS:
            self._to_touch.add(key_hash)

    def _keep(self, key_hash: str, old: str | None, new: str) -> None:
        first_old = self._pending.pop(key_hash, (old, new))[0]  # a second move still starts from the table's
        self._pending[key_hash] = (first_old, new)
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)

    # -- in the background -------------------------------------------------------------------

    async def warm(self, limit: int) -> list[Pin]:
        """Pins used within ``IDLE_SECONDS``, least recently used first (for the start-up warm-up)."""
        since = time.time() - IDLE_SECONDS
        self._since = time.time() - SKEW_SECONDS
        return await table.pins_used_since(self.sessionmaker, since, limit)

    async def sync(self, limit: int) -> tuple[list[Pin], list[Pin]]:
        """Read the rows changed since the last read, write kept decisions and touches, prune now
        and then. Returns ``(changed rows, rows after the kept decisions)``: the latter name the
        winners this replica must follow, whatever it decided alone meanwhile.

        Raises when the database cannot be reached (the caller retries at its next tick).
        """
        now = time.time()
        since = now - SKEW_SECONDS if self._since is None else self._since
        async with asyncio.timeout(max(self.timeout, 5.0)):
            changed = await table.pins_changed_since(self.sessionmaker, since, limit)
            self.saw(changed)
            self._since = now - SKEW_SECONDS
            self._skip_until = 0.0  # the database answers again
            written = await self._write_pending()
            await self._touch(now)
            if now - self._pruned_at >= PRUNE_SECONDS:
                self._pruned_at = now
                pruned = await table.prune_pins(self.sessionmaker, now - IDLE_SECONDS)
                if pruned:
                    log.info("shared pins: pruned %d idle for a day", pruned)
        return changed, written

    async def spend(self, added: dict[str, float]) -> dict[str, float]:
        """Add this replica's spend per account to the shared totals; every account's total after.

        Raises when the database cannot be reached (the spend is added at the next tick).
        """
        async with asyncio.timeout(max(self.timeout, 5.0)):
            return await add_spend(self.sessionmaker, added)

    async def _write_pending(self) -> list[Pin]:
        out: list[Pin] = []
        while self._pending and len(out) < PENDING_PER_SYNC:
            key_hash, (old, new) = next(iter(self._pending.items()))
            pin, _ = await table.move_pin(self.sessionmaker, key_hash, old, new, time.time())
            del self._pending[key_hash]
            out.append(pin)
        return out

    async def _touch(self, now: float) -> None:
        for key_hash, at in list(self._touched.items()):
            if now - at >= TOUCH_SECONDS:
                del self._touched[key_hash]
        if self._to_touch:
            keys, self._to_touch = self._to_touch, set()
            await table.touch_pins(self.sessionmaker, keys, now)
            self._touched.update(dict.fromkeys(keys, now))
