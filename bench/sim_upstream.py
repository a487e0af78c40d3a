"""Simulation mode of the fake upstream: token budgets in compressed time, a prompt cache, slow misses.

:class:`SimUpstream` is a :class:`~codexlb.testing.fake_upstream.FakeUpstream` (same routes, faults and
headers) where

- every account has a short and a weekly window of ``short_seconds``/``weekly_seconds`` (real seconds,
  e.g. 60 s standing for 5 hours), each with a token budget. A response costs
  ``uncached input + cached_weight * cached + output`` tokens, charged to both windows when it starts;
  ``used_percent`` (headers, ``codex.rate_limits``, ``/wham/usage``) is spent / budget, and a spent
  window answers 429 ``usage_limit_reached`` until it resets;
- input tokens are ``len(body) // 4 * token_scale`` (a small body stands for a long context);
- a prompt cache per account: a request with the same ``prompt_cache_key`` on the same account within
  ``cache_ttl`` gets ``cached_tokens`` = the shared prefix (the smaller of the two inputs); on another
  account, nothing;
- time to first event = ``base_ttfe + per_1k_uncached * uncached / 1000``.

    async with SimUpstream(short_seconds=60, weekly_seconds=1800) as sim:
        acct = sim.add_sim_account(short_budget=2e6, weekly_budget=2e7, weekly_used=0.9)
        ...
        sim.stats[acct.chatgpt_account_id].cached_tokens
"""

from __future__ import annotations

import math
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from codexlb.testing.fake_accounts import FakeAccount, Window
from codexlb.testing.fake_backend import FakeBackend
from codexlb.testing.fake_sse import TurnPlan, usage_block
from codexlb.testing.fake_upstream import FakeUpstream

__all__ = ["AccountStats", "SimUpstream", "SimWindow"]

_TTFE: ContextVar[float | None] = ContextVar("codexlb_sim_ttfe", default=None)


@dataclass
class SimWindow(Window):
    """A usage window of ``seconds`` with a token ``budget``; ``used_percent`` follows ``used_tokens``."""

    seconds: int = 60
    budget: float = 1_000_000.0
    used_tokens: float = 0.0

    def roll(self, now: float) -> None:
        if now >= self.reset_at:
            periods = int((now - self.reset_at) // self.seconds) + 1
            self.reset_at += periods * self.seconds
            self.used_tokens = self.used_percent = 0.0

    def charge(self, tokens: float) -> None:
        self.used_tokens += tokens
        self.used_percent = min(100.0, round(100.0 * self.used_tokens / self.budget, 4))

    @property
    def remaining_tokens(self) -> float:
        return max(0.0, self.budget - self.used_tokens)

    def header_items(self, prefix: str, now: float) -> list[tuple[str, str]]:
        self.window_minutes = max(1, math.ceil(self.seconds / 60))
        return super().header_items(prefix, now)

    def usage_json(self, now: float) -> dict[str, Any]:
        return {**super().usage_json(now), "limit_window_seconds": self.seconds}


@dataclass
class AccountStats:
    """What one account served (successful starts only, plus the 429s it answered)."""

    requests: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    cost: float = 0.0
    limited: int = 0


class SimBackend(FakeBackend):
    """The fake's handlers with the simulation's token accounting, cache and latency."""

    up: SimUpstream

    def _plan(self, account: FakeAccount, body: dict[str, Any], size: int) -> TurnPlan:
        plan = super()._plan(account, body, size)
        sim = self.up
        input_tokens = max(1, size // 4) * sim.token_scale
        key = body.get("prompt_cache_key")
        usage = plan.usage or {}
        output = int(usage.get("output_tokens", 0))
        reasoning = int((usage.get("output_tokens_details") or {}).get("reasoning_tokens", 0))
        cached, uncached = sim.charge_turn(account, key if isinstance(key, str) else None, input_tokens, output)
        plan.usage = usage_block(input_tokens, cached, output, reasoning)
        _TTFE.set(sim.base_ttfe + sim.per_1k_uncached * uncached / 1000)
        return plan

    def _usage_limit(self, account: FakeAccount | None, resets_at: int | None = None,
                     resets_in: int | None = None, plan_type: str | None = None) -> web.Response:
        if account is not None:
            self.up.stats.setdefault(account.chatgpt_account_id, AccountStats()).limited += 1
        return super()._usage_limit(account, resets_at, resets_in, plan_type)


class SimUpstream(FakeUpstream):
    """The fake upstream in simulation mode (see the module docstring)."""

    def __init__(self, *, short_seconds: int = 60, weekly_seconds: int = 1800, token_scale: int = 10,
                 cache_ttl: float = 30.0, cached_weight: float = 0.1, base_ttfe: float = 0.03,
                 per_1k_uncached: float = 0.001, **options: Any) -> None:
        options.setdefault("primary_step", 0.0)
        options.setdefault("secondary_step", 0.0)
        super().__init__(**options)
        self.short_seconds, self.weekly_seconds = short_seconds, weekly_seconds
        self.token_scale, self.cache_ttl, self.cached_weight = token_scale, cache_ttl, cached_weight
        self.base_ttfe, self.per_1k_uncached = base_ttfe, per_1k_uncached
        self.caches: dict[str, dict[str, tuple[int, float]]] = {}
        self.stats: dict[str, AccountStats] = {}
        self.backend = SimBackend(self)

    @property
    def first_event_delay(self) -> float:
        """Per request: set from the uncached tokens while planning the answer."""
        delay = _TTFE.get()
        return self._first_event_delay if delay is None else delay

    @first_event_delay.setter
    def first_event_delay(self, value: float) -> None:
        self._first_event_delay = value

    def add_sim_account(self, *, short_budget: float, weekly_budget: float, short_used: float = 0.0,
                        weekly_used: float = 0.0, short_reset_in: int | None = None,
                        weekly_reset_in: int | None = None, **kwargs: Any) -> FakeAccount:
        """An account with token-budget windows; ``*_used`` are fractions (0..1) already spent."""
        account = self.add_account(primary_step=0.0, secondary_step=0.0, **kwargs)
        now = int(self.clock())
        windows = []
        for seconds, budget, used, reset_in in ((self.short_seconds, short_budget, short_used, short_reset_in),
                                                 (self.weekly_seconds, weekly_budget, weekly_used, weekly_reset_in)):
            window = SimWindow(0.0, max(1, math.ceil(seconds / 60)), now + (reset_in or seconds), seconds=seconds,
                               budget=budget)
            window.charge(used * budget)
            windows.append(window)
        account.primary, account.secondary = windows
        return account

    def charge_turn(self, account: FakeAccount, key: str | None, input_tokens: int,
                    output_tokens: int) -> tuple[int, int]:
        """Serve one turn on ``account``: prompt cache, cost charged to both windows, stats.

        Returns ``(cached, uncached)`` input tokens. Also used by in-process simulations that skip HTTP.
        """
        now = self.clock()
        cache = self.caches.setdefault(account.chatgpt_account_id, {})
        cached = 0
        if key:
            previous = cache.get(key)
            if previous is not None and previous[1] >= now:
                cached = min(previous[0], input_tokens)
            cache[key] = (input_tokens, now + self.cache_ttl)
        uncached = input_tokens - cached
        cost = uncached + self.cached_weight * cached + output_tokens
        for window in account.windows():
            if isinstance(window, SimWindow):
                window.charge(cost)
        stats = self.stats.setdefault(account.chatgpt_account_id, AccountStats())
        stats.requests += 1
        stats.input_tokens += input_tokens
        stats.cached_tokens += cached
        stats.cost += cost
        return cached, uncached

    def usable_at(self, account_id: str) -> float:
        """When the account can answer again: now, or the latest reset of its spent windows."""
        account = self.accounts[account_id]
        now = self.clock()
        spent = [w.reset_at for w in account.windows() if w is not None and w.used_percent >= 100]
        return max(spent) if spent else now

    def remaining(self, account_id: str) -> float:
        """Tokens the account can still spend now (the smaller of its windows)."""
        account = self.accounts[account_id]
        windows = [w for w in account.windows() if isinstance(w, SimWindow)]
        return min((w.remaining_tokens for w in windows), default=math.inf)

    def has_quota(self) -> bool:
        """Whether any account can answer now (no window spent)."""
        return any(a.limit_reached() is None for a in self.accounts.values())
