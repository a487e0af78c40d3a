"""What an account can still pay for, in tokens: budgets learned from usage, load from recent turns.

The upstream reports usage in percent per window; a plus and a pro account differ ~10x in what a
percent buys. :class:`Headroom` learns each window's budget from every finished response
(``cost = uncached input + CACHED_WEIGHT * cached + output`` against the rise of ``used_percent``
since a baseline) and tracks the conversations living on each account (a conversation lives on its
account while its prompt cache would still be warm, ``LIVE_SECONDS`` after its last turn). Replicas
add what they spend to shared running totals (:meth:`Headroom.unshared`, :meth:`Headroom.shared`),
so each learns a budget from the whole spend that moved the account's percent, not its own part.

Before an account's budget is known it is taken as the median of the known budgets of its plan,
else of every account, else 100 (remaining percent, as if every account were alike).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from codexlb import Account, UsageWindow
from codexlb.quota import effective_remaining
from codexlb.types import TokenUsage

CACHED_WEIGHT = 0.1
"""Cached input tokens cost a tenth of uncached ones (OpenAI's cached-input price)."""
LIVE_SECONDS = 600.0
"""A conversation counts as living on its account this long after its last turn (prompt cache TTL)."""
MIN_RISE = 1.0
"""Percent points of rise before a budget estimate is taken (usage may be reported in whole points)."""


def cost_of(usage: TokenUsage) -> float:
    """Quota tokens one response spends."""
    return usage.input - usage.cached + CACHED_WEIGHT * usage.cached + usage.output


@dataclass
class _Meter:
    """Tokens spent on one window since ``base`` percent was reported (``base_total``: the account's
    running total of spent tokens then)."""

    base: float | None = None
    base_total: float = 0.0
    budget: float | None = None

    def observe(self, window: UsageWindow, total: float) -> None:
        used = window.used_percent
        if self.base is None or used < self.base:  # first look, or the window reset
            self.base, self.base_total = used, total
            return
        spent = total - self.base_total
        rise = used - self.base
        if rise >= MIN_RISE and spent > 0:
            self.budget = spent * 100.0 / rise


@dataclass
class _AccountState:
    meters: tuple[_Meter, _Meter] = field(default_factory=lambda: (_Meter(), _Meter()))
    live: dict[str, float] = field(default_factory=dict)
    """Conversation pin -> time of its last turn here."""
    context: dict[str, int] = field(default_factory=dict)
    """Conversation pin -> input tokens of its last turn here."""
    cost: dict[str, float] = field(default_factory=dict)
    """Conversation pin -> quota tokens of its last turn here."""
    plan: str | None = None


class Headroom:
    """Per-account budgets and live conversations (see the module docstring)."""

    def __init__(self) -> None:
        self._state: dict[str, _AccountState] = {}
        self._shared: dict[str, float] = {}
        """Tokens every replica spent on each account, as last read from the shared totals."""
        self._unshared: dict[str, float] = {}
        """Tokens this process spent on each account and has not added to the shared totals (one
        process alone never shares: this is then all it spent)."""

    def total(self, account_id: str) -> float:
        """Tokens spent on the account, as far as this process knows (its running total)."""
        return self._shared.get(account_id, 0.0) + self._unshared.get(account_id, 0.0)

    def unshared(self) -> dict[str, float]:
        """What to add to the shared totals (this process's spend since it last did)."""
        return {account_id: tokens for account_id, tokens in self._unshared.items() if tokens}

    def shared(self, totals: dict[str, float], added: dict[str, float]) -> None:
        """The shared totals after ``added`` (from :meth:`unshared`) went into them.

        An account whose total was unknown here and holds others' spend starts measuring afresh (its
        total just jumped by what they spent, at times unknown here).
        """
        for account_id, tokens in added.items():
            self._unshared[account_id] = self._unshared.get(account_id, 0.0) - tokens
        for account_id, state in self._state.items():
            others = totals.get(account_id, 0.0) - added.get(account_id, 0.0)
            if account_id in totals and account_id not in self._shared and others > 0:
                state.meters = (_Meter(), _Meter())
        self._shared = dict(totals)

    def _of(self, account_id: str) -> _AccountState:
        state = self._state.get(account_id)
        if state is None:
            state = self._state[account_id] = _AccountState()
        return state

    # -- learning ----------------------------------------------------------------------------

    def observe(self, account: Account, pin: str | None, usage: TokenUsage | None, now: float) -> None:
        """A response finished on ``account`` (its windows already updated from headers and events)."""
        state = self._of(account.id)
        state.plan = account.plan_type
        cost = cost_of(usage) if usage is not None else 0.0
        self._unshared[account.id] = self._unshared.get(account.id, 0.0) + cost
        total = self.total(account.id)
        for meter, window in zip(state.meters, (account.primary, account.secondary), strict=True):
            meter.observe(window, total)
        if pin is not None:
            self.live_on(account.id, pin, now, usage.input if usage is not None else None)
            if usage is not None:
                state.cost[pin] = cost

    def live_on(self, account_id: str, pin: str, now: float, context: int | None = None) -> None:
        """``pin`` had a turn on ``account_id`` (and nowhere else lives any more)."""
        for other_id, other in self._state.items():
            if other_id != account_id and pin in other.live:
                del other.live[pin]
                other.context.pop(pin, None)
                other.cost.pop(pin, None)
        state = self._of(account_id)
        state.live[pin] = max(now, state.live.get(pin, now))
        if context is not None:
            state.context[pin] = context

    def forget(self, account_id: str) -> None:
        self._state.pop(account_id, None)
        self._unshared.pop(account_id, None)

    # -- reading ----------------------------------------------------------------------------

    def budget(self, account: Account, which: int) -> float:
        """Tokens of a full window (0 = primary, 1 = secondary): learned, else a plan median, else 100."""
        state = self._state.get(account.id)
        if state is not None and state.meters[which].budget is not None:
            return state.meters[which].budget  # type: ignore[return-value]
        known = [(s.meters[which].budget or 0.0, s.plan) for s in self._state.values()
                 if s.meters[which].budget is not None]
        same = [b for b, plan in known if plan == account.plan_type]
        if same or known:
            return statistics.median(same or [b for b, _ in known])
        return 100.0

    def knows(self, account: Account) -> bool:
        """Whether both of the account's budgets were learned from its own answers."""
        state = self._state.get(account.id)
        return state is not None and all(m.budget is not None for m in state.meters)

    def remaining(self, account: Account, now: float) -> float:
        """Tokens left in the binding window (a window about to reset counts as nearly full)."""
        short = effective_remaining(account.primary, now) * self.budget(account, 0) / 100.0
        weekly = effective_remaining(account.secondary, now) * self.budget(account, 1) / 100.0
        return short if short < weekly else weekly

    def live(self, account_id: str, now: float) -> int:
        """Conversations living on the account (a turn within ``LIVE_SECONDS``); prunes the rest."""
        state = self._state.get(account_id)
        if state is None:
            return 0
        dead = [pin for pin, at in state.live.items() if now - at > LIVE_SECONDS]
        for pin in dead:
            del state.live[pin]
            state.context.pop(pin, None)
            state.cost.pop(pin, None)
        return len(state.live)

    def round_cost(self, account_id: str, now: float) -> float:
        """Quota one more turn of every conversation living on the account would take (last turns' costs)."""
        self.live(account_id, now)
        state = self._state.get(account_id)
        return sum(state.cost.values()) if state is not None else 0.0

    def cheaper_half(self, account_id: str, pin: str, now: float) -> bool:
        """Whether ``pin``'s context is among the smaller half of those living on the account."""
        self.live(account_id, now)
        state = self._state.get(account_id)
        if state is None or pin not in state.context:
            return True
        sizes = sorted(state.context.values())
        return state.context[pin] <= sizes[(len(sizes) - 1) // 2]

    def share(self, account: Account, now: float) -> float:
        """Tokens left per conversation if one more lived here (what a new conversation can expect)."""
        return self.remaining(account, now) / (1 + self.live(account.id, now))
