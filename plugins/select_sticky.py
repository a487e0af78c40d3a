"""Strategy: keep each conversation on one account so the upstream prompt cache stays warm.

Hooks: ``configure``, ``startup`` (pins warmed from the request log), ``select_account``,
``flow_done`` (budgets and living conversations learned from answers).

The conversation key is ``plugins._conversation_key.conversation_key`` (``prompt_cache_key``, the
session headers, else a hash of the first input item); it is stored raw in ``flow.session_key``.

A conversation is placed once and then pinned to its account (an in-memory LRU of ``max_pins``
keys). Later turns go to the same account for as long as the pool offers it (the pool holds back
an account at its cap or with a window reported spent), even when it is low: what is left still
pays for turns, and leaving early is a cache miss the conversation may never have needed. It moves
when the account is no candidate any more (cap, usage limit, revoked, paused), or early, once, when
the account's learned headroom cannot pay one more turn of every conversation living on it and
this conversation is among the cheaper half to move (``plugins._headroom``), and some other
candidate is above ``min_remaining_pct``. A moved conversation stays on its new account, where its
cache now is.

New and moved conversations go to the candidate with the most quota tokens left per living
conversation (budgets learned from usage headers, windows about to reset counted as nearly full),
skipping candidates below ``min_remaining_pct`` while another is above; ties are broken by
rendezvous hashing (``blake2b(account.id + "\\0" + key)``), stable across processes. Pins are
kept in memory (keyed by the same hash the request log stores) and warmed at start from the
request log's last 24 hours.

Replicas sharing a PostgreSQL database agree through the ``conversation_pins`` table
(``plugins._shared_state``): a replica asks it once about a conversation it does not know, claims a
new placement there (the first claim wins, the others follow it) and moves a conversation by
compare-and-set (a replica that loses follows the winner); every second each replica reads the
rows others changed and adds what it spent to the ``account_spend`` totals (budgets are learned
from every replica's spend). Known pins are served from memory, so the table costs a round-trip
per new conversation per replica and per move, never per turn. On SQLite (one process:
``serve --workers`` refuses SQLite) neither table is used and no turn waits for the database: the
process's own pins are all there is (warmed from the request log at start).

Route reasons: ``sticky:new`` (first placement), ``sticky:hit`` (its pinned account), and on a
move ``sticky:moved-<why> from=<old id[:8]> to=<new id[:8]>`` with ``<why>`` one of ``cap``,
``low-headroom`` (an early move, above), ``429``, ``revoked``, ``removed``, ``unavailable``;
on a retry of the same flow the core's ``fallback-after-<status>`` / ``retry-after-401`` reason
replaces ``moved-<why>`` and the accounts are still named. Without a key ``None`` is returned
(``flow.route`` set to ``sticky:no-key`` when still empty) and the next strategy decides.

Settings table ``[plugins.select_sticky]``:

- ``min_remaining_pct`` (float 0..100, default 2.0): an account whose short or weekly remaining
  quota is below this takes no new or moved conversations while another candidate has more (its
  pinned conversations stay); 0 turns it off. Remaining is
  ``codexlb.quota.effective_remaining`` with its default ramp: a window that resets within 5
  minutes counts as (nearly) full, one already past its reset as full.
- ``weight_by_quota`` (bool, default true): place by learned headroom and move early (above);
  off: pure rendezvous hashing, no early moves.
- ``max_pins`` (int, default 50000): conversations remembered; 0 turns pinning off, so every turn
  is placed by rendezvous alone (and returns to its first account when that recovers).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from codexlb import Account, Flow, hookimpl
from codexlb.db.pins import Pin
from codexlb.options import PluginOptions
from codexlb.pool import CAP_REASON
from codexlb.quota import effective_remaining
from codexlb.types import AccountStatus
from plugins._conversation_key import conversation_key
from plugins._headroom import Headroom
from plugins._shared_state import SYNC_SECONDS as SHARED_SYNC_SECONDS
from plugins._shared_state import SharedState

if TYPE_CHECKING:
    from codexlb.types import AppView

__all__ = ["SelectSticky", "conversation_key"]

NAME = "sticky"
OPTIONS = ("min_remaining_pct", "weight_by_quota", "max_pins")
WARM_SECONDS = 24 * 3600
ACCOUNT_SYNC_SECONDS = 10.0
"""A shared pin naming an account this replica has not loaded: younger than this, the account is
taken to be new (loaded at the next pool merge; the turn is served elsewhere, unpinned); older, to be
removed (the conversation moves)."""
log = logging.getLogger("codexlb.select_sticky")


class SelectSticky:
    """Rendezvous-hashes conversation keys onto accounts; see the module docstring."""

    def __init__(self) -> None:
        self.min_remaining_pct = 2.0
        self.weight_by_quota = True
        self.max_pins = 50_000
        self._prefixes: dict[str, Any] = {}
        self._pins: OrderedDict[str, str] = OrderedDict()
        self._moved: set[str] = set()
        self._pinned_at: dict[str, float] = {}
        self.headroom = Headroom()
        self.shared: SharedState | None = None
        """The shared pin table, when replicas share a PostgreSQL database (set at start)."""

    @hookimpl
    def configure(self, config: Mapping[str, Any]) -> None:
        options = PluginOptions("select_sticky", config, OPTIONS)
        self.min_remaining_pct = options.number("min_remaining_pct", self.min_remaining_pct, low=0, high=100)
        self.weight_by_quota = options.flag("weight_by_quota", self.weight_by_quota)
        self.max_pins = options.number("max_pins", self.max_pins, low=0, integer=True)

    # -- ranking -------------------------------------------------------------------------

    def _prefix(self, account_id: str) -> Any:
        """The BLAKE2b state after ``account_id + "\\0"``, computed once per account."""
        if len(self._prefixes) > 4096:  # accounts come and go; never grow without bound
            self._prefixes.clear()
        prefix = self._prefixes[account_id] = hashlib.blake2b(account_id.encode() + b"\0", digest_size=8)
        return prefix

    def _hash(self, account_id: str, key: bytes) -> int:
        h = (self._prefixes.get(account_id) or self._prefix(account_id)).copy()
        h.update(key)
        return int.from_bytes(h.digest(), "big")

    @staticmethod
    def _remaining(account: Account, now: float) -> float:
        short = effective_remaining(account.primary, now)
        weekly = effective_remaining(account.secondary, now)
        return short if short < weekly else weekly

    # -- hook ----------------------------------------------------------------------------

    @hookimpl
    async def select_account(self, flow: Flow, candidates: Sequence[Account],
                             app: AppView | None) -> Account | None:
        key = conversation_key(flow)
        if key is None:
            if flow.route is None:
                flow.set_route(NAME, "no-key")
            return None
        flow.session_key = key
        if not candidates:
            return None
        now = time.time()
        pin = flow.session_key_hash or key
        pinned_id = self._pins.get(pin)
        keep = True
        if pinned_id is None and self.shared is not None:
            pinned_id, keep = await self._recall(pin, app, now)
        pinned = next((a for a in candidates if a.id == pinned_id), None) if pinned_id is not None else None
        # a usable pinned account is ridden to its end, unless an early move to a fuller account pays
        if pinned is not None and (not any(self._above_floor(a, now) for a in candidates)
                                   or not self._should_leave(pinned, pin, now)):
            self._pins.move_to_end(pin)
            self.headroom.live_on(pinned.id, pin, now)
            if self.shared is not None:
                self.shared.used(pin, now)
            flow.set_route(NAME, "hit")
            return pinned
        above = [a for a in candidates if self._above_floor(a, now)]
        pool = candidates if pinned is None else [a for a in candidates if a is not pinned]
        chosen = self._place(key, [a for a in pool if a in above] or pool or candidates, now)
        at = None
        if self.shared is not None and keep:
            chosen, at = await self._agree(pin, pinned_id, chosen, candidates)
        if pinned_id is None:
            flow.set_route(NAME, "new")
        else:
            why = self._why_gone(app, pinned_id) if keep else "unavailable"  # not loaded here yet
            why = "low-headroom" if pinned is not None else why
            # on a retry the core's reason (fallback-after-429, ...) takes the place of moved-<why>
            flow.set_route(NAME, f"moved-{why}", f"from={pinned_id[:8]} to={chosen.id[:8]}")
            self._moved.add(pin)
        if keep:
            self._pin(pin, chosen.id, at)
        self.headroom.live_on(chosen.id, pin, now)
        return chosen

    async def _recall(self, pin: str, app: AppView | None, now: float) -> tuple[str | None, bool]:
        """Ask the shared table about a conversation this replica does not know (and follow what the
        others placed since the last read, so a new conversation is placed on an up-to-date view).

        Returns its account id (``None``: a new conversation, or the table cannot be asked) and
        whether this turn's decision may be kept: not when the row names an account this replica
        has not loaded yet (added moments ago elsewhere); that turn is served elsewhere, unpinned.
        """
        assert self.shared is not None
        row, changed = await self.shared.lookup(pin)
        accounts = getattr(getattr(app, "pool", None), "accounts", {})
        for other in changed:
            self._take(other, accounts)
        if row is None:
            return None, True
        if row.account_id not in accounts and now - row.changed_at < ACCOUNT_SYNC_SECONDS:
            return row.account_id, False
        self._take(row)
        return row.account_id, True

    async def _agree(self, pin: str, old: str | None, chosen: Account,
                     candidates: Sequence[Account]) -> tuple[Account, float | None]:
        """Claim this placement or move in the shared table; follow another replica's if it won first.

        Returns the account to use and when the table says it was placed (``None``: decided alone).
        """
        assert self.shared is not None
        row = await self.shared.claim(pin, chosen.id, old)
        if row is None or row.account_id == chosen.id:
            return chosen, None if row is None else row.changed_at
        winner = next((a for a in candidates if a.id == row.account_id), None)
        if winner is not None:
            if row.moves:
                self._moved.add(pin)
            return winner, row.changed_at
        row = await self.shared.claim(pin, chosen.id, row.account_id)  # its choice is no candidate here
        return chosen, None if row is None else row.changed_at

    def _should_leave(self, account: Account, pin: str, now: float) -> bool:
        """Move early: the account cannot give its living conversations one more round, and this one
        is among the cheaper half to move (a small context), has not moved before, and can go elsewhere.
        """
        if not self.weight_by_quota or pin in self._moved or not self.headroom.knows(account):
            return False
        if self.headroom.remaining(account, now) >= self.headroom.round_cost(account.id, now):
            return False
        return self.headroom.cheaper_half(account.id, pin, now)

    @staticmethod
    def _why_gone(app: AppView | None, account_id: str) -> str:
        """Why a pinned account is no candidate: cap, 429 (a usage limit), revoked, or unavailable."""
        pool = getattr(app, "pool", None)
        account = pool.accounts.get(account_id) if pool is not None else None
        if account is None:
            return "removed" if pool is not None else "unavailable"
        if account.status_reason and account.status_reason.startswith(CAP_REASON):
            return "cap"
        if account.status in (AccountStatus.REAUTH_REQUIRED, AccountStatus.DEACTIVATED):
            return "revoked"
        if account.status in (AccountStatus.RATE_LIMITED, AccountStatus.QUOTA_EXCEEDED):
            return "429"
        return "unavailable"

    def _above_floor(self, account: Account, now: float) -> bool:
        return self.min_remaining_pct <= 0 or self._remaining(account, now) >= self.min_remaining_pct

    def _place(self, key: str, candidates: Sequence[Account], now: float) -> Account:
        """Most quota tokens per living conversation (ties: rendezvous hash); pure rendezvous when
        ``weight_by_quota`` is off."""
        raw = key.encode("utf-8", "surrogatepass")
        if not self.weight_by_quota:
            return max(candidates, key=lambda a: self._hash(a.id, raw))
        return max(candidates, key=lambda a: (round(self.headroom.share(a, now), 6), self._hash(a.id, raw)))

    @hookimpl
    async def flow_done(self, flow: Flow) -> None:
        """Learn budgets and living conversations from every answered turn."""
        account = flow.account
        if account is None or flow.status != 200:
            return
        key = flow.session_key_hash if flow.session_key is not None else None
        self.headroom.observe(account, key, flow.usage, time.time())

    async def _shared_sync_loop(self, app: AppView) -> None:
        while True:
            await asyncio.sleep(SHARED_SYNC_SECONDS)
            try:
                await self.follow(app.pool.accounts)
            except Exception:  # the database is away: keep routing on what this replica knows
                log.debug("could not read or write the shared routing state", exc_info=True)

    async def follow(self, accounts: Mapping[str, Any]) -> None:
        """One read of the shared state: follow what other replicas placed or moved, and the winners
        of what this replica decided alone while the database was away; share what it spent (so
        budgets are learned from every replica's spend). Raises if the database is still away."""
        assert self.shared is not None
        changed, settled = await self.shared.sync(self.max_pins)
        for row in changed:
            self._take(row, accounts)
        for row in settled:
            self._take(row, accounts, force=True)
        added = self.headroom.unshared()
        self.headroom.shared(await self.shared.spend(added), added)

    def _take(self, row: Pin, accounts: Mapping[str, Any] | None = None, *, force: bool = False) -> None:
        """Follow a row of the shared table if it is newer than what this replica decided (or ``force``);
        the conversation counts as living on its account from when it was placed or moved.

        A row naming an account this replica has not loaded drops the pin: the next turn asks again.
        """
        key = row.key_hash
        if not force and row.changed_at <= self._pinned_at.get(key, 0.0):
            return
        if accounts is not None and row.account_id not in accounts:
            if self._pins.get(key, row.account_id) != row.account_id:
                self._forget(key)
            return
        if row.moves:
            self._moved.add(key)
        self._pin(key, row.account_id, row.changed_at)
        self.headroom.live_on(row.account_id, key, row.changed_at)  # load placed by others counts here too

    @hookimpl
    async def startup(self, app: AppView) -> None:
        """Warm the pins from the request log (and the shared table), so a restart keeps conversations
        where they were; then follow what the other replicas decide."""
        if self.max_pins <= 0 or app.sessionmaker is None:
            return
        from codexlb.db.engine import is_sqlite
        from codexlb.db.requestlog import latest_accounts_by_session

        try:
            latest = await latest_accounts_by_session(app.sessionmaker, since=time.time() - WARM_SECONDS,
                                                      limit=self.max_pins * 4)
        except Exception:  # a log we cannot read must not stop the proxy
            log.warning("could not read recent conversations from the request log", exc_info=True)
            latest = {}
        for pin, account_id in reversed(list(latest.items())):  # oldest first: the newest end up hottest
            if account_id in app.pool.accounts:
                self._pin(pin, account_id, 0.0)
        if is_sqlite(app.settings.database_url):  # one process: nobody to agree with
            return
        self.shared = SharedState(app.sessionmaker)
        try:
            for row in await self.shared.warm(self.max_pins):
                self._take(row, app.pool.accounts, force=True)
            self.headroom.shared(await self.shared.spend({}), {})
        except Exception:
            log.warning("could not read the shared routing state; it is read again in a second", exc_info=True)
        app.tasks.spawn(self._shared_sync_loop(app), "sticky-pin-sync")

    def _pin(self, key: str, account_id: str, at: float | None = None) -> None:
        if self.max_pins <= 0:
            return
        self._pins[key] = account_id
        self._pinned_at[key] = time.time() if at is None else at
        self._pins.move_to_end(key)
        while len(self._pins) > self.max_pins:
            self._forget(next(iter(self._pins)))

    def _forget(self, key: str) -> None:
        self._pins.pop(key, None)
        self._moved.discard(key)
        self._pinned_at.pop(key, None)
