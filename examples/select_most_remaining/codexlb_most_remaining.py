"""Route to the account with the most remaining weekly quota (an example third-party strategy).

Hooks: ``configure``, ``select_account`` (route ``most_remaining:most-weekly-remaining``).
Settings ``[plugins.select_most_remaining]``: ``floor_pct`` (default 5.0): accounts below it are
skipped; with none left the next strategy decides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from codexlb import Account, ConfigError, Flow, hookimpl


class MostRemaining:
    floor_pct = 5.0

    @hookimpl
    def configure(self, config: Mapping[str, Any]) -> None:
        value = config.get("floor_pct", self.floor_pct)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
            raise ConfigError(f"[plugins.select_most_remaining] floor_pct: {value!r} is not a number in 0..100")
        self.floor_pct = float(value)

    @hookimpl
    async def select_account(self, flow: Flow, candidates: Sequence[Account]) -> Account | None:
        usable = [a for a in candidates if a.weekly_remaining_pct >= self.floor_pct]
        chosen = max(usable, key=lambda a: (a.weekly_remaining_pct, a.id), default=None)
        if chosen is not None:
            flow.set_route("most_remaining", "most-weekly-remaining")
        return chosen
