"""Window counters in memory: admission reserves a request at once; totals are shared every few seconds.

Each process keeps, per key and fixed window (:mod:`codexlb.keys.limits`), the totals all replicas
had written at its last sync plus its own counts since. :meth:`Counters.admit` checks and counts in
one synchronous step (no ``await``), so concurrent requests on one process can never pass a
request limit together: with 10 requests left, at most 10 of 50 concurrent requests are admitted.
Every stored key is counted in all four windows, limited or not: the counters are the usage of
every key (the dashboard's and ``keys show``'s), and a limit set later applies to what was
already used in its window.

Replicas add their counts to ``api_key_counters`` and read back the totals every sync interval.
Overshoot bound: a replica only knows the others' counts as of its last sync, so within one window
the requests admitted beyond a limit are at most what the other replicas admitted for that key
since their own last sync: at most ``(replicas - 1) x remaining`` when every replica spends the
same remaining budget in one interval, and zero when one replica serves the key. Token limits are
checked at admission against tokens of finished requests, so requests already in flight when a
token limit is crossed still finish (their tokens are counted when their streams end).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from codexlb.keys.limits import WINDOWS, Limit, window_bounds
from codexlb.keys.store import COUNTS, ApiKey, Counts, KeyStore, WindowKey

if TYPE_CHECKING:
    from codexlb.types import TokenUsage

REQUESTS, INPUT, CACHED, OUTPUT = range(len(COUNTS))


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a key may not make another request now."""

    limit: Limit
    used: int
    resets_at: float


def metric_value(counts: Counts | list[int], metric: str) -> int:
    """One metric from a counts tuple (``total_tokens`` is input plus output)."""
    if metric == "total_tokens":
        return counts[INPUT] + counts[OUTPUT]
    return counts[COUNTS.index(metric)]


class Counters:
    """Per-key window counts: shared totals from the last sync plus this process's counts since."""

    def __init__(self) -> None:
        self.base: dict[WindowKey, Counts] = {}
        self.pending: dict[WindowKey, list[int]] = {}
        self.flushing: dict[WindowKey, Counts] = {}
        """Counts a sync is writing right now: still this process's until the totals that hold them are read."""
        self.ends: dict[WindowKey, float] = {}
        self.last_used: dict[str, float] = {}
        self._windows: dict[str, tuple[float, float]] = {}

    def used(self, key_id: str, window: str, start: float) -> list[int]:
        """Counts of one window as this process knows them (the last totals, what is being written, and since)."""
        slot = (key_id, window, start)
        base, pending = self.base.get(slot, (0, 0, 0, 0)), self.pending.get(slot, [0, 0, 0, 0])
        flushing = self.flushing.get(slot, (0, 0, 0, 0))
        return [b + f + p for b, f, p in zip(base, flushing, pending, strict=True)]

    def admit(self, key: ApiKey, now: float | None = None) -> Refusal | None:
        """Check every limit, then count the request in every window (all four, limited or not), or refuse.

        Never awaits. Static keys (``CODEX_LB_API_KEYS``) are not stored and have no limits: not counted.
        """
        now = time.time() if now is None else now
        if key.id.startswith("static:"):
            return None
        self.last_used[key.id] = now
        bounds = self._bounds(now)
        for limit in key.limits:
            start, end = bounds[limit.window]
            used = metric_value(self.used(key.id, limit.window, start), limit.metric)
            if used >= limit.max:  # for requests: this one would be one too many
                return Refusal(limit, used, end)
        for window, (start, end) in bounds.items():
            self._slot(key.id, window, start, end)[REQUESTS] += 1
        return None

    def add_tokens(self, key: ApiKey, usage: TokenUsage, now: float | None = None) -> None:
        """Count a finished response's tokens in the key's current windows."""
        if key.id.startswith("static:"):
            return
        for window, (start, end) in self._bounds(time.time() if now is None else now).items():
            slot = self._slot(key.id, window, start, end)
            slot[INPUT] += usage.input
            slot[CACHED] += usage.cached
            slot[OUTPUT] += usage.output

    def _bounds(self, now: float) -> dict[str, tuple[float, float]]:
        """``window -> (start, end)`` of the windows holding ``now`` (recomputed only when one has moved on)."""
        if any(not start <= now < end for start, end in self._windows.values()) or not self._windows:
            self._windows = {window: window_bounds(window, now) for window in WINDOWS}
        return self._windows

    def _slot(self, key_id: str, window: str, start: float, end: float) -> list[int]:
        slot = (key_id, window, start)
        self.ends[slot] = end
        return self.pending.setdefault(slot, [0, 0, 0, 0])

    async def sync(self, store: KeyStore, key_ids: Iterable[str], now: float | None = None) -> None:
        """Write this process's counts and last-used times; take every replica's totals as the new base.

        While the database answers, the counts being written still count for admission here (in
        :attr:`flushing`); on failure they go back to pending and are written by the next sync.
        """
        now = time.time() if now is None else now
        deltas = {slot: (self.ends[slot], (c[0], c[1], c[2], c[3])) for slot, c in self.pending.items() if any(c)}
        last_used = self.last_used
        self.flushing = {slot: counts for slot, (_, counts) in deltas.items()}
        self.pending, self.last_used = {}, {}
        try:
            totals = await store.sync_counters(deltas, last_used, key_ids, now)
        except BaseException:
            self.flushing = {}
            for slot, (_, counts) in deltas.items():
                mine = self.pending.setdefault(slot, [0, 0, 0, 0])
                for i, value in enumerate(counts):
                    mine[i] += value
            for key_id, used in last_used.items():
                self.last_used[key_id] = max(used, self.last_used.get(key_id, 0.0))
            raise
        self.base, self.flushing = totals, {}
        live = set(totals) | set(self.pending)
        self.ends = {slot: end for slot, end in self.ends.items() if slot in live or end > now}
