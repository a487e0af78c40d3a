"""Quota arithmetic the routing strategies share: how much of a usage window is left to spend."""

from __future__ import annotations

from codexlb.types import UsageWindow

RESET_SOON_SECONDS = 300.0
"""A window that resets within this long counts as (nearly) full: its quota is back before it matters."""


def effective_remaining(window: UsageWindow, now: float, soon: float = RESET_SOON_SECONDS) -> float:
    """Percent of ``window`` left, counting a window about to reset (within ``soon`` s) as nearly full.

    ``100 - used`` (clamped to 0..100); 100 once ``resets_at`` has passed; within ``soon`` seconds
    of the reset it ramps linearly from what is left up to 100.
    """
    used = window.used_percent
    remaining = 100.0 if used <= 0.0 else 0.0 if used >= 100.0 else 100.0 - used
    resets_at = window.resets_at
    if resets_at is None:
        return remaining
    left = resets_at - now
    if left <= 0:
        return 100.0
    if left >= soon:
        return remaining
    return remaining + (100.0 - remaining) * (1.0 - left / soon)
