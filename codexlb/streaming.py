"""Byte streams from the upstream: bounded reads, closing, and the terminal guard for the client.

:class:`codexlb.attempt.UpstreamAttempt` reads an attempt's stream with these; :func:`guard` ends
a stream that fails after its first byte with the endpoint's terminal error event.
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


@dataclass(frozen=True, slots=True)
class Deadline:
    """When an attempt's answer must have started (event-loop time), and the limit that says so."""

    at: float
    seconds: float
    setting: str

    def error(self) -> UpstreamError:
        return first_byte_timeout(self.seconds, self.setting)


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


async def read_until(iterator: AsyncIterator[bytes], end: float,
                     on_timeout: Callable[[], UpstreamError]) -> bytes | None:
    """The next chunk (``None`` at the end), waiting until event-loop time ``end`` at most.

    A failure of the stream is a retryable :class:`UpstreamError` (nothing reached the client yet).
    """
    try:
        async with asyncio.timeout_at(end) as scope:
            return await iterator.__anext__()
    except StopAsyncIteration:
        return None
    except TimeoutError as exc:
        if scope.expired():
            raise on_timeout() from None
        raise broken_before_first_event(f"failed ({type(exc).__name__})") from exc
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
