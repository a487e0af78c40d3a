"""``flow_done`` off the hot path without a task per request.

A finished flow is appended to a queue; one long-lived task (started with the first flow) runs
``flow_done`` for the queued flows one after another, in the order they finished, and sleeps on
one future while the queue is empty. Under load one wake-up serves many flows; a request costs an
append (and at most one future's result) instead of creating, scheduling and discarding a task.
:meth:`Finisher.settle` waits until every flow queued so far has been observed (the app's
shutdown does, before the plugins stop; so do tests).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from codexlb.flow import Flow
    from codexlb.hooks import Hooks
    from codexlb.tasks import TaskSet

log = logging.getLogger("codexlb.finisher")


class Finisher:
    """Queues finished flows for ``flow_done`` and runs the hook for them in one task."""

    def __init__(self, hooks: Hooks, tasks: TaskSet) -> None:
        self.hooks, self.tasks = hooks, tasks
        self.enabled = hooks.implemented("flow_done")
        """Whether any plugin implements ``flow_done`` (otherwise nothing is queued)."""
        self.flows: deque[Flow] = deque()
        self.task: asyncio.Task[None] | None = None
        self.waiter: asyncio.Future[None] | None = None
        """What the task sleeps on while the queue is empty."""
        self.idle = asyncio.Event()
        self.idle.set()

    def add(self, flow: Flow) -> None:
        """Queue ``flow`` for ``flow_done`` (it has finished: last byte sent, client gone, or error)."""
        if not self.enabled:
            return
        self.flows.append(flow)
        self.idle.clear()
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)
        elif self.task is None or self.task.done():
            self.task = self.tasks.spawn(self._run(), "flow-done")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        flows, flow_done = self.flows, self.hooks.flow_done
        while True:
            while flows:
                await flow_done(flows.popleft())  # errors are logged per plugin by the hook caller
            self.idle.set()
            self.waiter = loop.create_future()
            await self.waiter

    async def settle(self, timeout: float | None = None) -> bool:
        """Wait until every flow queued so far has been observed; ``False`` if ``timeout`` passed first."""
        if self.flows and (self.task is None or self.task.done()):
            self.task = self.tasks.spawn(self._run(), "flow-done")
        try:
            await asyncio.wait_for(self.idle.wait(), timeout)
        except TimeoutError:
            log.warning("flow_done still busy after %.0f s (%d flow(s) queued)", timeout or 0, len(self.flows))
            return False
        return True
