"""Last-resort strategy: take usable accounts in turn.

Hooks: ``configure`` (it has no options), ``select_account`` (``trylast``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from codexlb import Account, Flow, PluginOptions, hookimpl


class SelectRoundRobin:
    """Cycles through the candidates by id so every account gets its turn."""

    def __init__(self) -> None:
        self._last: str | None = None

    @hookimpl
    def configure(self, config: Mapping[str, Any]) -> None:
        PluginOptions("select_round_robin", config)

    @hookimpl(trylast=True)
    async def select_account(self, flow: Flow, candidates: Sequence[Account]) -> Account | None:
        if not candidates:
            return None
        ordered = sorted(candidates, key=lambda a: a.id)
        chosen = next((a for a in ordered if self._last is None or a.id > self._last), ordered[0])
        self._last = chosen.id
        if not flow.route:
            flow.route = "round_robin:next"
        elif ":" in flow.route and not flow.route.startswith("round_robin"):
            flow.route = "round_robin:" + flow.route.split(":", 1)[1]
        return chosen
