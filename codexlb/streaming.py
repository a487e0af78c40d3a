"""Byte streams from the upstream: the attempt's one timer, closing, and the terminal guard for the client.

:class:`codexlb.attempt.UpstreamAttempt` bounds its waits with a :class:`Watch` and reads an
attempt's stream with these; :func:`guard` ends a stream that fails after its first byte with the
endpoint's terminal error event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from codexlb.errors import FlowError, UpstreamError
from codexlb.flow import Flow
from codexlb.sse import SSEEvent, SSEEventTooLarge, SSEScanner
from codexlb.upstream_errors import broken_before_first_event, first_byte_timeout

log = logging.getLogger("codexlb.streaming")
CLOCK_SLACK = 0.001
"""A timer may fire this much early (the loop's clock resolution); earlier than that it re-arms."""


@dataclass(frozen=True, slots=True)
class Deadline:
    """When an attempt's answer must have started (event-loop time), and the limit that says so."""

    at: float
    seconds: float
    setting: str

    def error(self) -> UpstreamError:
        return first_byte_timeout(self.seconds, self.setting)


class Watch:
    """One timer for all the waits of an attempt, instead of an ``asyncio.timeout`` scope per wait.

    :meth:`arm` before a wait, :meth:`disarm` after it. Moving the end of the next wait later
    costs an assignment: the timer stays where it is and, when it fires early, re-arms itself for
    the current end. When a wait reaches its end the waiting task is cancelled; in the wait's
    ``CancelledError`` handler :meth:`expired` tells that cancellation from any other (the
    protocol ``asyncio.timeout`` follows, so the two nest).
    """

    __slots__ = ("loop", "until", "task", "handle", "fired", "cancelling")

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.until: float | None = None
        """Event-loop time when the wait under way must end; ``None`` between waits."""
        self.task: asyncio.Task[object] | None = None
        self.handle: asyncio.TimerHandle | None = None
        self.fired = False
        self.cancelling = 0

    def arm(self, until: float) -> None:
        """Bound the current task's next wait by event-loop time ``until``."""
        self.until = until
        self.task = asyncio.current_task()
        handle = self.handle
        if handle is None:
            self.handle = self.loop.call_at(until, self._fire)
        elif until < handle.when():
            handle.cancel()
            self.handle = self.loop.call_at(until, self._fire)

    def disarm(self) -> None:
        self.until = None

    def _fire(self) -> None:
        self.handle = None
        until, task = self.until, self.task
        if until is None or task is None:
            return  # between waits: the next arm sets the timer again
        if self.loop.time() + CLOCK_SLACK < until:
            self.handle = self.loop.call_at(until, self._fire)
            return
        self.fired = True
        self.cancelling = task.cancelling()
        task.cancel()

    def expired(self) -> bool:
        """After a ``CancelledError`` in an armed wait: was it this watch's (and only this watch's)?"""
        if not self.fired or self.task is None:
            return False
        self.fired = False
        return self.task.uncancel() <= self.cancelling

    def close(self) -> None:
        """Stop the timer (the attempt is over)."""
        self.until = None
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


def scan(scanner: SSEScanner, chunk: bytes) -> list[SSEEvent]:
    """``scanner.feed(chunk)``; an event over the scanner's limit ends the flow with a 502."""
    try:
        return scanner.feed(chunk)
    except SSEEventTooLarge as exc:
        raise FlowError(f"upstream event larger than {exc.limit} bytes", status=502,
                        code="sse_event_too_large") from None


async def next_chunk(iterator: AsyncIterator[bytes]) -> bytes | None:
    """The next chunk, ``None`` at the end."""
    try:
        return await iterator.__anext__()
    except StopAsyncIteration:
        return None


def read_result(read: asyncio.Task[bytes | None]) -> bytes | None:
    """A finished read's chunk; a failure of the upstream stream becomes a retryable error."""
    try:
        return read.result()
    except Exception as exc:
        raise broken_before_first_event(f"failed ({type(exc).__name__})") from exc


async def drop_read(pending: asyncio.Task[bytes | None] | None) -> None:
    """Cancel a read still under way (so the stream can be closed) and consume its outcome."""
    if pending is None:
        return
    if not pending.done():
        pending.cancel()
        await asyncio.wait((pending,))
    if not pending.cancelled():
        pending.exception()


async def close_stream(iterator: AsyncIterator[bytes]) -> None:
    """Close an async byte stream that can be closed; a failure to close is only logged."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:
            log.debug("closing upstream stream failed", exc_info=True)


async def guard(flow: Flow, stream: AsyncIterator[bytes],
                terminal: Callable[[str, str], bytes]) -> AsyncIterator[bytes]:
    """Pass ``stream`` through; an error after the first byte ends it with a terminal event."""
    try:
        async for chunk in stream:
            yield chunk
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if isinstance(exc, FlowError):
            code, message = exc.code, exc.message
        elif isinstance(exc, TimeoutError):
            code, message = "stream_idle_timeout", "upstream stream went silent"
        else:
            code, message = "upstream_stream_error", f"upstream stream failed: {type(exc).__name__}"
        flow.error_code = code
        log.warning("stream of flow %s ended early: %s (%s)", flow.id, code, message)
        yield terminal(code, message)
    finally:
        await close_stream(stream)
