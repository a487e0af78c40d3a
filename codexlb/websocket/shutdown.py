"""Drain the open WebSockets when the ASGI server, not codexlb, owns the shutdown.

``codexlb serve`` (one process) drains from its own SIGTERM handler. Under Hypercorn's command
line (``hypercorn codexlb.asgi:app``) and under ``codexlb serve --workers N`` Hypercorn handles the
signal: it stops accepting and waits up to ``graceful_timeout`` for every connection to end before
the app's lifespan hears of it. An open WebSocket would then be cut at the end of the grace period
without a close frame. :class:`ShutdownWatch` starts the drain from what Hypercorn itself reacts to:

- SIGTERM/SIGINT in this process, where the server has its own Python-level handler for it
  (Hypercorn serving in one process). Ours schedules the drain and calls the server's handler, so
  the server stops exactly as before (an event loop's handler also hears of the signal through
  its wake-up file descriptor, which a Python-level handler does not replace).
- The ``shutdown_event`` of Hypercorn's multi-process mode: its parent sets that event on
  SIGTERM/SIGINT and the worker receives no signal; it is polled as often as Hypercorn polls it.
  When the first worker has finished, the parent sends SIGTERM to the others, which would end
  them mid-turn (a worker keeps the default action); so a worker whose parent is stopping keeps
  going on SIGTERM, and its own graceful shutdown ends it. A worker signalled on its own (the
  event still unset a moment later) ends as before, by the default action.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger("codexlb.websocket")
SIGNALS = (signal.SIGTERM, signal.SIGINT)
POLL_SECONDS = 0.1
"""How often the multi-process shutdown event is checked (Hypercorn's own interval)."""
PARENT_WAIT_SECONDS = 1.0
"""A worker's SIGTERM without the parent's shutdown event after this long: the worker alone is stopped."""

Handler = Callable[[int, FrameType | None], Any]


def worker_shutdown_event() -> Any | None:
    """The shutdown event Hypercorn's parent passed to this worker process, or None.

    Hypercorn starts each worker as ``Process(target=..., kwargs={"shutdown_event": ...})``;
    the standard library keeps those arguments on the process object.
    """
    kwargs = getattr(multiprocessing.current_process(), "_kwargs", None)
    event = kwargs.get("shutdown_event") if isinstance(kwargs, dict) else None
    return event if callable(getattr(event, "is_set", None)) else None


class ShutdownWatch:
    """Calls ``drain`` once, on the event loop, when the server starts shutting down."""

    def __init__(self, drain: Callable[[], None]) -> None:
        self._drain = drain
        self._drained = False
        self._previous: dict[int, Handler] = {}
        self._parent_stopping = False
        self._task: asyncio.Task[None] | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Chain to the server's signal handlers and watch a worker's shutdown event (main thread)."""
        event = worker_shutdown_event()
        for sig in SIGNALS:
            previous = signal.getsignal(sig)
            if callable(previous):  # not SIG_DFL/SIG_IGN: the server handles this signal itself
                self._previous[sig] = previous
                signal.signal(sig, self._chained(loop, previous))
            elif sig == signal.SIGTERM and previous == signal.SIG_DFL and event is not None:
                signal.signal(sig, self._worker_handler(loop, event))  # kept to the end of the process
        if event is not None:
            self._task = loop.create_task(self._watch(event), name="websocket-shutdown-watch")

    def uninstall(self) -> None:
        """Give the signals back to the server's handlers; stop watching."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
        if self._task is not None and not self._task.done():
            self._task.cancel()
            self._task = None

    def _chained(self, loop: asyncio.AbstractEventLoop, previous: Handler) -> Handler:
        def handler(signum: int, frame: FrameType | None) -> Any:
            try:
                loop.call_soon_threadsafe(self.fire)
            except RuntimeError:  # the loop is closed: nothing left to drain
                pass
            return previous(signum, frame)

        return handler

    def _worker_handler(self, loop: asyncio.AbstractEventLoop, event: Any) -> Handler:
        def default_action(signum: int) -> None:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

        def decide(signum: int, waited: bool) -> None:
            if event.is_set():  # the parent is stopping every worker: finish gracefully
                self._parent_stopping = True
                self.fire()
            elif not waited:
                loop.call_later(PARENT_WAIT_SECONDS, decide, signum, True)
            else:
                default_action(signum)  # only this worker was signalled

        def handler(signum: int, frame: FrameType | None) -> None:
            if self._parent_stopping:
                return  # the parent's SIGTERM to a worker still finishing: its graceful shutdown ends it
            try:
                loop.call_soon_threadsafe(decide, signum, False)
            except RuntimeError:  # the loop is closed
                default_action(signum)

        return handler

    async def _watch(self, event: Any) -> None:
        while not event.is_set():
            await asyncio.sleep(POLL_SECONDS)
        self._parent_stopping = True
        self.fire()

    def fire(self) -> None:
        """Drain (once): no new turns; idle connections close with 1001 now, busy ones after their turn."""
        if not self._drained:
            self._drained = True
            log.info("shutting down: draining open WebSocket connections")
            self._drain()
