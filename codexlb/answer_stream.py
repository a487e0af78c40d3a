"""A streamed answer's one loop: from the upstream's reads to the bytes Quart sends.

After the peek (:meth:`codexlb.attempt.UpstreamAttempt.peek`) the answer is an
:class:`AnswerStream`: an async iterator object (no generator layers) that hands on the held
chunks, then reads the upstream, each wait bounded by ``STREAM_IDLE_TIMEOUT_SECONDS`` with the
attempt's one timer. Each chunk read goes to the attempt's tap (usage, rate limits, the terminal
event) and through the plugins' :class:`StreamFilter` objects (``filter_response_stream``), as
plain calls. When nothing wraps it (no ``wrap_response_stream`` wrapper, the pass-through
endpoint) it is also the guard: an error after the first byte ends it with the endpoint's
terminal error event, as :func:`codexlb.streaming.guard` does for wrapped streams.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from codexlb.errors import FlowError, StreamIdleTimeout
from codexlb.streaming import Watch, close_stream, drop_read
from codexlb.upstream_errors import stream_incomplete

if TYPE_CHECKING:
    from codexlb.attempt import UpstreamAttempt

log = logging.getLogger("codexlb.streaming")


class StreamFilter(Protocol):
    """A per-chunk filter of a streamed upstream answer, called in the core's stream loop.

    :meth:`feed` gets every chunk in order and returns the bytes to pass on now (possibly
    ``b""``: it may hold bytes back). Setting :attr:`error` ends the stream after the bytes that
    call returned, with that error's terminal event. At the upstream's end :meth:`rest` returns
    what is still held.
    """

    error: FlowError | None

    def feed(self, chunk: bytes) -> bytes: ...

    def rest(self) -> bytes: ...


def terminal_parts(exc: Exception) -> tuple[str, str]:
    """``(code, message)`` of the terminal event for an error that ends a stream after its first byte."""
    if isinstance(exc, FlowError):
        return exc.code, exc.message
    if isinstance(exc, TimeoutError):
        return "stream_idle_timeout", "upstream stream went silent"
    return "upstream_stream_error", f"upstream stream failed: {type(exc).__name__}"


class AnswerStream:
    """The held chunks, then the rest of the upstream stream, tapped, filtered and bounded by idle time."""

    __slots__ = ("attempt", "held", "upstream", "pending", "watch", "idle", "filters", "terminal",
                 "failure", "finished", "closed")

    def __init__(self, attempt: UpstreamAttempt, held: list[bytes], upstream: AsyncIterator[bytes],
                 pending: asyncio.Task[bytes | None] | None, watch: Watch, idle: float) -> None:
        self.attempt = attempt
        self.held = held
        """Chunks the peek read (and tapped), handed on first."""
        self.upstream = upstream
        self.pending = pending
        """A read the peek started and did not wait for (the answer was slow to start)."""
        self.watch, self.idle = watch, idle
        self.filters: Sequence[StreamFilter] = ()
        self.terminal: Callable[[str, str], bytes] | None = None
        """Set by :meth:`guard`: errors become this terminal event instead of being raised."""
        self.failure: FlowError | None = None
        """A filter's error, raised once the bytes before it are sent."""
        self.finished = False
        self.closed = False

    def guard(self, terminal: Callable[[str, str], bytes]) -> None:
        """End the stream with ``terminal(code, message)`` on an error (this is the outermost layer)."""
        self.terminal = terminal

    def __aiter__(self) -> AnswerStream:
        return self

    async def __anext__(self) -> bytes:
        if self.finished and self.failure is None:
            raise StopAsyncIteration
        flow = self.attempt.flow
        if flow.first_byte_at is None:
            flow.first_byte_at = time.time()
        try:
            if self.failure is not None:
                raise self.failure
            while True:
                if self.held:
                    chunk = self.held.pop(0)  # tapped by the peek
                else:
                    read = await self._read()
                    if read is None:
                        return await self._end()
                    chunk = read
                    self.attempt.feed(chunk)
                for stage in self.filters:
                    chunk = stage.feed(chunk)
                    if stage.error is not None:
                        self.failure = stage.error
                        break
                if chunk:
                    return chunk
                if self.failure is not None:
                    raise self.failure
        except StopAsyncIteration:
            raise
        except Exception as exc:
            self.failure = None
            await self.aclose()
            if self.terminal is None:
                raise
            code, message = terminal_parts(exc)
            flow.error_code = code
            log.warning("stream of flow %s ended early: %s (%s)", flow.id, code, message)
            return self.terminal(code, message)
        except BaseException:  # cancelled (the client went away): close the upstream at once
            await self.aclose()
            raise

    async def _read(self) -> bytes | None:
        """The next upstream chunk (``None`` at its end), within the idle timeout."""
        watch = self.watch
        watch.arm(watch.loop.time() + self.idle)
        try:
            pending = self.pending
            if pending is not None:
                self.pending = None
                return await pending
            return await self.upstream.__anext__()
        except StopAsyncIteration:
            return None
        except asyncio.CancelledError:
            if watch.expired():
                raise StreamIdleTimeout(f"upstream sent nothing for {self.idle:g} s "
                                        "(CODEX_LB_STREAM_IDLE_TIMEOUT_SECONDS)") from None
            raise
        finally:
            watch.disarm()

    async def _end(self) -> bytes:
        """At the upstream's end: what the filters still hold; the stream must have had its terminal event."""
        if self.attempt.terminal is None:
            raise stream_incomplete()
        out = b""
        for stage in self.filters:  # each filter's held bytes go through the filters after it
            if out:
                out = stage.feed(out)
                if stage.error is not None:
                    self.failure = stage.error
                    break
            out += stage.rest()
        await self.aclose()
        if out:
            return out
        if self.failure is not None:
            raise self.failure
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Stop the timer, cancel a read under way and close the upstream stream (idempotent)."""
        if self.closed:  # the stream's end closed it, then Quart does
            return
        self.finished = True
        self.watch.close()
        pending, self.pending = self.pending, None
        if pending is not None:
            await drop_read(pending)
        await close_stream(self.upstream)
        self.closed = True
