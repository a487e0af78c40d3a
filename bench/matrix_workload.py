"""Pool shapes and Codex-shaped conversations for the routing matrix (``bench.routing_matrix``).

Time is virtual and real-sized: a 5-hour short window, a 7-day weekly one, a 10-minute prompt cache.
A conversation is ~25 requests (turns) whose context starts at 8-16k tokens and grows to ~70k; most
gaps are tool loops (seconds), some are a person reading (minutes), a few are idle for longer than
the cache TTL. Budgets are set so the workload's demand (with perfect caching) is a given share of
the pool's capacity over the run.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

SHORT_SECONDS = 5 * 3600
WEEKLY_SECONDS = 7 * 24 * 3600
CACHE_TTL = 600.0
CACHED_WEIGHT = 0.1
PRO_FACTOR = 10.0
"""Budget of a pro account over a plus one (both windows)."""


@dataclass
class Turn:
    tokens: int
    """Input tokens of this request (the whole context so far)."""
    output: int
    gap: float
    """Seconds from this turn's answer to the next request."""


@dataclass
class Conversation:
    id: str
    start: float
    turns: list[Turn] = field(default_factory=list)


@dataclass
class AccountSpec:
    plan: str = "plus"
    short_used: float = 0.0
    weekly_used: float = 0.0
    short_reset_in: float | None = None
    weekly_reset_in: float | None = None
    weekly_factor: float = 10.0
    """Weekly budget / short budget (a week holds 33.6 short windows; below that the week binds)."""
    added_at: float | None = None
    """Seconds into the run when the account joins the pool."""
    revoked_at: float | None = None
    """Seconds into the run when its tokens are revoked (every request then answers 401)."""


@dataclass
class Scenario:
    name: str
    description: str
    accounts: list[AccountSpec]
    conversations: int
    demand: float
    """Demand with perfect caching over the pool's capacity during the run."""
    duration: float = 4 * 3600.0
    """Seconds over which conversations start."""


def scenarios() -> list[Scenario]:
    """The pool shapes of the matrix (each runs with several seeds)."""
    plus = AccountSpec
    return [
        Scenario("uneven", "5 plus, starting usage 0-90 % of the 5h window, 10-60 % of the week", [
            plus(short_used=u, weekly_used=w, short_reset_in=r * SHORT_SECONDS) for u, w, r in
            ((0.0, 0.1, 0.9), (0.2, 0.3, 0.7), (0.5, 0.2, 0.5), (0.75, 0.6, 0.35), (0.9, 0.4, 0.2))],
            conversations=60, demand=0.85),
        Scenario("exhausted-start", "4 plus, every 5h window spent, resets 10-40 min into the run", [
            plus(short_used=1.0, short_reset_in=m * 60) for m in (10, 20, 30, 40)],
            conversations=40, demand=0.5),
        Scenario("weekly-binds", "4 plus, 80-92 % of the week spent: the week binds before the 5h window", [
            plus(weekly_used=w, short_used=u) for w, u in ((0.8, 0.0), (0.85, 0.3), (0.9, 0.1), (0.92, 0.0))],
            conversations=50, demand=0.8),
        Scenario("mixed-plans", "2 pro + 4 plus (pro budgets 10x), uneven usage", [
            plus("pro", short_used=0.3), plus("pro", short_used=0.6, weekly_used=0.3),
            *(plus(short_used=u) for u in (0.0, 0.4, 0.7, 0.85))],
            conversations=150, demand=0.8),
        Scenario("added-mid-run", "3 plus from the start, a 4th added after 80 min", [
            plus(short_used=0.3), plus(short_used=0.6), plus(), plus(added_at=4800.0)],
            conversations=60, demand=0.9),
        Scenario("revoked-mid-run", "5 plus; one is revoked (permanent 401) after 90 min", [
            plus(), plus(short_used=0.2), plus(short_used=0.4, revoked_at=5400.0), plus(short_used=0.6), plus()],
            conversations=80, demand=0.6),
        Scenario("light-many", "8 plus, 200 conversations, demand 40 %", [
            plus(short_used=0.1 * (i % 5), short_reset_in=(i + 1) * SHORT_SECONDS / 8) for i in range(8)],
            conversations=200, demand=0.4),
        Scenario("heavy-few", "3 plus, 20 long conversations, demand 90 %", [
            plus(short_used=0.5), plus(short_used=0.1), plus(short_used=0.8)],
            conversations=20, demand=0.9),
    ]


def make_conversations(seed: int, count: int, duration: float) -> list[Conversation]:
    """``count`` Codex-shaped conversations starting uniformly over ``duration`` seconds."""
    rng = random.Random(seed)
    out = []
    for n in range(count):
        conv = Conversation(id=f"conv-{seed}-{n}-{rng.getrandbits(32):08x}", start=rng.uniform(0, duration))
        turns = max(3, min(60, round(rng.lognormvariate(math.log(22), 0.5))))
        tokens = rng.randint(8000, 16000)
        growth = rng.uniform(1500, 3000)
        for _ in range(turns):
            r = rng.random()
            gap = (rng.uniform(3, 40) if r < 0.7 else rng.uniform(60, 300) if r < 0.95
                   else rng.uniform(CACHE_TTL * 1.5, CACHE_TTL * 6))
            conv.turns.append(Turn(tokens, rng.randint(200, 1500), gap))
            tokens += int(rng.expovariate(1 / growth))
        out.append(conv)
    out.sort(key=lambda c: c.start)
    return out


def perfect_cost(conversations: list[Conversation]) -> float:
    """Quota the workload spends when every prefix is cached and nothing moves."""
    total = 0.0
    for conv in conversations:
        previous = 0
        for turn in conv.turns:
            total += turn.tokens - previous + CACHED_WEIGHT * previous + turn.output
            previous = turn.tokens
    return total


def span(conversations: list[Conversation], service: float = 8.0) -> float:
    """Rough seconds from the first request to the last (gaps plus ``service`` s per turn)."""
    return max(c.start + sum(t.gap + service for t in c.turns) for c in conversations)


def short_budget(scenario: Scenario, conversations: list[Conversation]) -> float:
    """The 5h budget of a plus account that makes demand ``scenario.demand`` of the pool's capacity.

    Capacity over the run counts each account's budget per window over the time it is in the pool
    (the binding window's rate), from the state it starts in (already spent quota is not capacity).
    """
    length = span(conversations)
    units = 0.0
    for spec in scenario.accounts:
        factor = PRO_FACTOR if spec.plan == "pro" else 1.0
        present = length - (spec.added_at or 0.0)
        if spec.revoked_at is not None:
            present = min(present, spec.revoked_at)
        short_rate = 1.0 / SHORT_SECONDS
        weekly_rate = spec.weekly_factor / WEEKLY_SECONDS
        per_second = min(short_rate, weekly_rate)
        left = min(1.0 - spec.short_used, spec.weekly_factor * (1.0 - spec.weekly_used))
        # what is left now, plus what refills over the rest of the run (at most the binding rate)
        refill_after = spec.short_reset_in if spec.short_reset_in is not None else SHORT_SECONDS
        refill = max(0.0, present - refill_after) * per_second
        weekly_cap = spec.weekly_factor * (1.0 - spec.weekly_used)
        units += factor * min(left + refill, weekly_cap)
    return perfect_cost(conversations) / (scenario.demand * units)


class Oracle:
    """Routes with the simulator's true budgets and cache (the yardstick).

    A conversation stays on its account until that account cannot pay for the next turn; new and
    moved conversations go to the account with the most tokens left per conversation living there.
    """

    def __init__(self, sim: Any) -> None:
        self.sim = sim
        self.home: dict[str, str] = {}

    def cost_on(self, account_id: str, key: str, tokens: int, output: int) -> float:
        entry = self.sim.caches.get(account_id, {}).get(key)
        cached = min(entry[0], tokens) if entry and entry[1] >= self.sim.clock() else 0
        return tokens - cached + CACHED_WEIGHT * cached + output

    def choose(self, key: str, tokens: int, output: int, accounts: list[str]) -> str | None:
        """The account for this turn, or ``None`` when no account can answer now."""
        home = self.home.pop(key, None)
        if home in accounts and self.sim.remaining(home) >= self.cost_on(home, key, tokens, output):
            self.home[key] = home
            return home
        open_ = [a for a in accounts if self.sim.remaining(a) > 0]
        if not open_:
            if home is not None:
                self.home[key] = home
            return None
        living = Counter(self.home.values())

        def score(account_id: str) -> tuple[float, str]:
            left = self.sim.remaining(account_id) - self.cost_on(account_id, key, tokens, output)
            return (left / (1 + living[account_id]) if left > 0 else left, account_id)

        best = max(open_, key=score)
        self.home[key] = best
        return best

    def release(self, key: str) -> None:
        self.home.pop(key, None)
