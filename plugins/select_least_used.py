"""Strategy: route to the account with the most quota left, weighing both usage windows.

Hooks: ``configure``, ``select_account``. Route reason: ``least_used:most-remaining`` (on a
retry the core's ``fallback-after-<status>`` / ``retry-after-401`` reason is kept). Returns
``None`` only when there are no candidates.

Score of an account, in 0..100 (``now`` = the time of the call)::

    remaining(w)  = 100 - w.used_percent                        (clamped to 0..100)
    effective(w)  = 100                                          if w.resets_at <= now
                  = remaining + (100 - remaining) * (1 - t / S)  if t = w.resets_at - now < S
                  = remaining                                    otherwise (or resets_at unknown)
    short         = effective(primary)                           the 5-hour window
    pace          = (effective(secondary) / 100) / (t_weekly / window_length), at least 1% of it
    weekly_factor = min(1, pace)    (= effective(secondary) / 100 when the reset time is unknown)
    score         = short * weekly_factor

``S`` is ``reset_soon_seconds``: a window that resets within a few minutes counts as nearly full,
because its quota comes back before it matters. The weekly factor compares what is left of the
week's quota with what is left of the week: an account on or behind its weekly pace counts fully,
one that has burned its week faster than time passes is held back in proportion.

Order (best first): accounts with a score above 0 before exhausted ones; then higher
``priority``; then higher score, rounded to whole points so near-equal accounts tie; then the
least recently used (never used first); then the lowest id.

Settings table ``[plugins.select_least_used]``:
- ``reset_soon_seconds`` (float, default 300): the ramp ``S`` above; 0 turns it off.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from codexlb import Account, Flow, UsageWindow, hookimpl
from codexlb.options import PluginOptions
from codexlb.quota import RESET_SOON_SECONDS, effective_remaining

NAME = "least_used"
WEEK_SECONDS = 10080 * 60
MIN_TIME_FRACTION = 0.01
OPTIONS = ("reset_soon_seconds",)


def weekly_factor(window: UsageWindow, now: float, soon: float = RESET_SOON_SECONDS) -> float:
    """0..1: the weekly quota left relative to the time left in the week (1 = on pace or better)."""
    left_pct = effective_remaining(window, now, soon) / 100.0
    if window.resets_at is None or left_pct >= 1.0:
        return left_pct
    length = (window.window_minutes or 0) * 60 or WEEK_SECONDS
    time_fraction = (window.resets_at - now) / length
    if time_fraction >= 1.0:
        return left_pct
    pace = left_pct / (time_fraction if time_fraction > MIN_TIME_FRACTION else MIN_TIME_FRACTION)
    return pace if pace < 1.0 else 1.0


def score(account: Account, now: float, soon: float = RESET_SOON_SECONDS) -> float:
    """The account's score in 0..100 (formula in the module docstring)."""
    return effective_remaining(account.primary, now, soon) * weekly_factor(account.secondary, now, soon)


class SelectLeastUsed:
    """Picks the candidate with the best score; see the module docstring."""

    def __init__(self) -> None:
        self.reset_soon_seconds = RESET_SOON_SECONDS

    @hookimpl
    def configure(self, config: Mapping[str, Any]) -> None:
        options = PluginOptions("select_least_used", config, OPTIONS)
        self.reset_soon_seconds = options.number("reset_soon_seconds", self.reset_soon_seconds, low=0, high=86400)

    @hookimpl
    async def select_account(self, flow: Flow, candidates: Sequence[Account]) -> Account | None:
        if not candidates:
            return None
        now, soon = time.time(), self.reset_soon_seconds
        best: Account | None = None
        best_key: tuple[bool, int, int, float, str] | None = None
        for account in candidates:
            points = score(account, now, soon)
            key = (points <= 0.0, -account.priority, -round(points), account.last_used_at or 0.0, account.id)
            if best_key is None or key < best_key:
                best, best_key = account, key
        flow.set_route(NAME, "most-remaining")
        return best
