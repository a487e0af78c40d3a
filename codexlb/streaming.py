"""Response streams: the usage tap, the first-event peek that allows failover, the terminal guard."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from codexlb import ratelimits
from codexlb.errors import FlowError, UpstreamError
from codexlb.flow import Flow, StashKey
from codexlb.sse import TERMINAL_TYPES, SSEEvent, SSEEventTooLarge, SSEScanner
from codexlb.sse_frames import usage_from_completed
from codexlb.upstream_errors import (
    broken_before_first_event,
    classify_event,
    first_byte_timeout,
    silent_before_first_event,
)

if TYPE_CHECKING:
    from codexlb.app import CodexLB
    from codexlb.types import Account

log = logging.getLogger("codexlb.streaming")
PEEK_LIMIT_BYTES = 256 * 1024
HELD = frozenset({"response.created", "response.in_progress"})
"""Events held back with the ``codex.*`` ones until the stream shows it is really answering."""
TAPPED = frozenset({"codex.rate_limits", *TERMINAL_TYPES})
PEEKED = TAPPED | HELD | {"response.output_item.added"}
"""What the peek reads (every answer starts its output with ``response.output_item.added``)."""
MARKERS = (b"codex.rate_limits", b"response.completed", b"response.incomplete", b"response.failed", b"error")
"""Byte strings one of which every tapped event contains (its type, in the event line or the JSON)."""


def _scan(scanner: SSEScanner, chunk: bytes) -> list[SSEEvent]:
    try:
        return scanner.feed(chunk)
    except SSEEventTooLarge as exc:
        raise FlowError(f"upstream event larger than {exc.limit} bytes", status=502,
                        code="sse_event_too_large") from None


class Tap:
    """Reads the upstream stream as it passes: usage, rate limits, terminal events."""

    KEY: StashKey[Tap] = StashKey()

    def __init__(self, flow: Flow, account: Account, app: CodexLB) -> None:
        self.flow, self.account, self.app = flow, account, app
        self.scanner = SSEScanner(max(app.settings.max_sse_event_bytes * 2, 1 << 20), types=TAPPED)
        self.terminal: str | None = None
        self._skip = 0

    def feed(self, chunk: bytes) -> None:
        if self._skip:  # already read by peek_first_event, with this scanner
            self._skip -= 1
            return
        if not self.scanner.buffered and chunk.endswith(b"\n\n") and not any(m in chunk for m in MARKERS):
            return  # whole events only, none of a type we read: skip the scan (the common delta chunk)
        for event in _scan(self.scanner, chunk):
            self.inspect(event)

    def inspect(self, event: SSEEvent) -> None:
        """Take what the proxy needs from one event."""
        kind = event.type
        if kind == "codex.rate_limits":
            self._rate_limits(event)
        elif kind in TERMINAL_TYPES:
            self._terminal(kind, event)

    def adopt(self, scanner: SSEScanner, chunks_read: int) -> None:
        """Continue with the scanner that read the first ``chunks_read`` chunks (so none is read twice)."""
        scanner.keep_only(TAPPED)
        self.scanner, self._skip = scanner, chunks_read

    def _rate_limits(self, event: SSEEvent) -> None:
        try:
            if ratelimits.apply_event(self.account, event.json()):
                self.app.pool.mark_dirty(self.account)
        except ValueError:
            log.debug("unreadable codex.rate_limits event")

    def _terminal(self, kind: str, event: SSEEvent) -> None:
        self.terminal = kind
        try:
            payload: dict[str, Any] = event.json()
        except ValueError:
            return
        response = payload.get("response") or {}
        if kind in ("response.completed", "response.incomplete") and response.get("usage"):
            self.flow.usage = usage_from_completed(payload)
        elif kind in ("response.failed", "error"):
            err = response.get("error") or payload.get("error") or payload
            self.flow.error_code = str((err or {}).get("code") or kind)

    async def wrap(self, stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        flow = self.flow
        async for chunk in stream:
            if flow.first_byte_at is None:
                flow.first_byte_at = time.time()
            self.feed(chunk)
            yield chunk
        if self.terminal is None:
            raise UpstreamError("stream closed before response.completed", code="stream_incomplete",
                                phase="stream", retryable=False)


@dataclass(frozen=True, slots=True)
class Deadline:
    """When an attempt's answer must have started (event-loop time), and the limit that says so."""

    at: float
    seconds: float
    setting: str

    def error(self) -> UpstreamError:
        return first_byte_timeout(self.seconds, self.setting)


async def peek_first_event(tap: Tap, body: AsyncIterator[bytes],
                           deadline: Deadline | None = None) -> AsyncIterator[bytes]:
    """Hold the stream until its first real event; fail over while nothing has reached the client.

    ``codex.*``, ``response.created`` and ``response.in_progress`` are held until the first
    output or terminal event, so an overload reported right after ``response.created`` fails over.
    Every wait for upstream bytes is bounded by ``STREAM_IDLE_TIMEOUT_SECONDS``. Until the stream
    shows an answer event (anything but ``codex.*``) the waits are also bounded by ``deadline``;
    once it has, reaching ``deadline`` passes the held events on instead (a long reasoning keeps
    its account).
    A timeout, a broken stream or an end before the first output event raise a retryable
    :class:`UpstreamError`. Every event read here goes to ``tap``, which then continues with the
    same scanner. Returns a stream that replays what was read, then continues with the rest.
    """
    loop, settings = asyncio.get_running_loop(), tap.app.settings
    idle = settings.stream_idle_timeout_seconds
    scanner = SSEScanner(max(settings.max_sse_event_bytes * 2, 1 << 20), types=PEEKED)
    buffered: list[bytes] = []
    size, answering, decided = 0, False, False
    iterator = body.__aiter__()
    pending: asyncio.Task[bytes | None] | None = None
    try:
        while not decided and size < PEEK_LIMIT_BYTES:
            idle_end = loop.time() + idle
            if answering and deadline is not None and deadline.at < idle_end:
                # Not a background task: held in ``pending`` and awaited or cancelled here or in _replay.
                pending = asyncio.create_task(_next(iterator), name="upstream-read")  # noqa: TID251
                await asyncio.wait((pending,), timeout=deadline.at - loop.time())
                if not pending.done():
                    break  # answering, slowly: pass on what is held and keep this account
                read, pending = pending, None
                chunk = _result(read)
            elif deadline is not None and not answering and deadline.at < idle_end:
                chunk = await _read(iterator, deadline.at, deadline.error)
            else:
                chunk = await _read(iterator, idle_end, lambda: silent_before_first_event(idle))
            if chunk is None:
                raise broken_before_first_event("ended")
            buffered.append(chunk)
            size += len(chunk)
            for event in _scan(scanner, chunk):
                kind = event.type
                if kind is not None and not kind.startswith("codex."):
                    answering = True
                    if not decided and kind not in HELD:
                        decided = True
                        if kind in ("response.failed", "error"):
                            error = classify_event(event.json())
                            if error is not None:
                                raise error
                tap.inspect(event)
    except FlowError:
        await _drop(pending)
        await _close(iterator)
        raise
    except Exception as exc:
        await _drop(pending)
        await _close(iterator)
        raise broken_before_first_event(f"failed ({type(exc).__name__})") from exc
    except BaseException:
        await _drop(pending)
        await _close(iterator)
        raise
    tap.adopt(scanner, len(buffered))
    return _replay(buffered, iterator, pending)


async def _next(iterator: AsyncIterator[bytes]) -> bytes | None:
    try:
        return await iterator.__anext__()
    except StopAsyncIteration:
        return None


def _result(read: asyncio.Task[bytes | None]) -> bytes | None:
    """A finished read's chunk; a failure of the upstream stream becomes a retryable error."""
    try:
        return read.result()
    except Exception as exc:
        raise broken_before_first_event(f"failed ({type(exc).__name__})") from exc


async def _read(iterator: AsyncIterator[bytes], end: float,
                on_timeout: Callable[[], UpstreamError]) -> bytes | None:
    """The next chunk (``None`` at the end), waiting until event-loop time ``end`` at most."""
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


async def _replay(buffered: list[bytes], rest: AsyncIterator[bytes],
                  pending: asyncio.Task[bytes | None] | None = None) -> AsyncIterator[bytes]:
    try:
        for chunk in buffered:
            yield chunk
        buffered.clear()
        if pending is not None:
            first = await pending
            if first is None:
                return
            yield first
        async for chunk in rest:
            yield chunk
    finally:
        await _drop(pending)
        await _close(rest)


async def _drop(pending: asyncio.Task[bytes | None] | None) -> None:
    """Cancel a read still under way (so the stream can be closed) and consume its outcome."""
    if pending is None:
        return
    if not pending.done():
        pending.cancel()
        await asyncio.wait((pending,))
    if not pending.cancelled():
        pending.exception()


async def _close(iterator: AsyncIterator[bytes]) -> None:
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
        await _close(stream)
