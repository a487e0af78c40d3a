"""Last-resort strategy: take usable accounts in turn.

Hooks: ``configure`` (it has no options), ``select_account`` (``trylast``). Route reason:
``round_robin:next`` (on a retry the core's ``fallback-after-<status>`` reason is kept).
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
        flow.set_route("round_robin", "next")
        return chosen
