"""Bound the size of one SSE event in upstream streams, and forward whole events only.

Hooks: ``configure``, ``filter_response_stream``.

The core filters only streamed upstream answers, which the upstream plugin produces for
``text/event-stream`` responses. The filter (:class:`EventLimiter`, called by the core's stream
loop for every chunk) forwards whole events only: bytes of an event that is not finished yet are
held back (at most ``MAX_SSE_EVENT_BYTES``) until its blank line arrives, so that an error can
always be appended cleanly. An event larger than ``MAX_SSE_EVENT_BYTES`` ends the client's stream
with a terminal error event (``FlowError`` code ``sse_event_too_large``). Scanning is a few
``bytes.rfind`` calls per chunk (linear in the stream, no JSON parsing).

Silence is bounded by the core: no upstream bytes for ``STREAM_IDLE_TIMEOUT_SECONDS`` ends the
stream with ``stream_idle_timeout`` (:class:`codexlb.errors.StreamIdleTimeout`, re-exported here).

Settings table ``[plugins.sse_limit]``: none. Core settings used: ``MAX_SSE_EVENT_BYTES``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from codexlb import Flow, FlowError, hookimpl
from codexlb.errors import StreamIdleTimeout
from codexlb.options import PluginOptions

if TYPE_CHECKING:
    from codexlb.settings import Settings

__all__ = ["EventLimiter", "SSEEventTooLargeError", "SSELimit", "StreamIdleTimeout", "last_event_end"]


class SSEEventTooLargeError(FlowError):
    status, code, type = 502, "sse_event_too_large", "server_error"


def last_event_end(buf: bytes | bytearray, start: int) -> int:
    """End (exclusive) of the last blank line at or after ``start``, or -1.

    A blank line is two line ends in a row; with ``\\n``, ``\\r\\n`` and ``\\r`` as line ends
    every such pair contains ``\\n\\n``, ``\\r\\r`` or ``\\n\\r``. A CR-led match swallows the
    LF that completes its CRLF.
    """
    lf = buf.rfind(b"\n\n", start)
    best = lf + 2 if lf >= 0 else -1
    floor = max(start, lf)
    for pattern in (b"\r\r", b"\n\r"):
        at = buf.rfind(pattern, floor)
        if at >= 0:
            end = at + 2
            if end < len(buf) and buf[end] == 0x0A:
                end += 1
            best = max(best, end)
    return best


def complete_events_end(buf: bytes | bytearray, start: int, limit: int) -> tuple[int, bool]:
    """Walk every blank line from ``start``: (end of the last complete event that fits, too large?).

    ``buf`` holds a partial event from offset 0. Each pattern is searched forward once per
    match (linear overall). Stops at the first event larger than ``limit``.
    """
    n = len(buf)
    event_start, pos = 0, start
    cursors = {b"\n\n": -1, b"\r\r": -1, b"\n\r": -1}
    while True:
        for pattern, at in cursors.items():
            if at < pos:
                found = buf.find(pattern, pos)
                cursors[pattern] = found if found >= 0 else n
        at = min(cursors.values())
        if at >= n:
            return event_start, n - event_start > limit
        end = at + 2
        if buf[at + 1] == 0x0D and end < n and buf[end] == 0x0A:  # \r\r\n or \n\r\n
            end += 1
        if end - event_start > limit:
            return event_start, True
        event_start = pos = end


class EventLimiter:
    """Feeds chunks, returns the bytes of complete events; sets :attr:`error` when one is too large.

    Events before the oversized one are still returned; after :attr:`error` is set, stop feeding.
    """

    __slots__ = ("limit", "held", "error")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = bytearray()
        self.error: SSEEventTooLargeError | None = None

    def feed(self, chunk: bytes) -> bytes:
        limit, held = self.limit, self.held
        if not held:
            if len(chunk) <= limit:  # no event in it can be too large: only find its last end
                if chunk.endswith(b"\n\n"):
                    return chunk
                end = last_event_end(chunk, 0)
                if end == len(chunk):
                    return chunk
                held += chunk[end:] if end >= 0 else chunk
                return chunk[:end] if end > 0 else b""
            return self._slow(bytearray(chunk), 0)
        start = len(held) - 1  # a blank line may straddle the chunks
        held += chunk
        if len(held) <= limit:
            end = last_event_end(held, start)
            if end < 0:
                return b""
            out = bytes(held[:end])
            del held[:end]
            return out
        return self._slow(held, start)

    def _slow(self, buf: bytearray, start: int) -> bytes:
        end, too_large = complete_events_end(buf, start, self.limit)
        if too_large:
            self.held = bytearray()
            self.error = SSEEventTooLargeError(
                f"upstream sent an event larger than {self.limit} bytes (CODEX_LB_MAX_SSE_EVENT_BYTES)")
        else:
            self.held = buf[end:]
        return bytes(buf[:end])

    def rest(self) -> bytes:
        """What is held at the end of the stream (an unfinished last event), handed on as is."""
        out, self.held = bytes(self.held), bytearray()
        return out


class SSELimit:
    """Filters upstream streams with the event-size limit."""

    def __init__(self) -> None:
        self.max_event_bytes = 2 << 20

    @hookimpl
    def configure(self, config: Mapping[str, Any], settings: Settings) -> None:
        PluginOptions("sse_limit", config,
                      hint="use CODEX_LB_MAX_SSE_EVENT_BYTES and CODEX_LB_STREAM_IDLE_TIMEOUT_SECONDS")
        self.max_event_bytes = settings.max_sse_event_bytes

    @hookimpl
    def filter_response_stream(self, flow: Flow) -> EventLimiter:
        return EventLimiter(self.max_event_bytes)
