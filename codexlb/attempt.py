"""One account's try at a flow: the token it sends, the upstream's answer, and the stream it reads.

:class:`UpstreamAttempt` wraps the ``send_upstream`` hook in the core's policy. The access token
is fetched here and travels with the attempt (a 401 refreshes exactly that token); rate-limit
headers reach the pool; failed answers are classified (:mod:`codexlb.upstream_errors`). A streamed
answer is held until its first real event, while failing over is still possible; then it is
passed on (:class:`codexlb.answer_stream.AnswerStream`) while one SSE scanner, the same that read
the held events, takes usage, rate limits and the terminal event from it. One timer
(:class:`codexlb.streaming.Watch`) bounds every wait of the attempt.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from codexlb import ratelimits
from codexlb.answer_stream import AnswerStream
from codexlb.errors import FlowError, UpstreamError
from codexlb.memo import Learnt
from codexlb.sse import TERMINAL_TYPES, SSEEvent, SSEScanner
from codexlb.sse_frames import completed_usage
from codexlb.streaming import Deadline, Watch, close_stream, drop_read, next_chunk, read_result, scan
from codexlb.upstream_errors import (
    broken_before_first_event,
    classify,
    classify_event,
    silent_before_first_event,
)

if TYPE_CHECKING:
    from codexlb.flow import Flow, ProxyResponse
    from codexlb.types import Account, AppView

log = logging.getLogger("codexlb.attempt")
SendUpstream = Callable[["Flow", "Account", str], Awaitable["ProxyResponse | None"]]
"""The ``send_upstream`` hook as the core calls it: flow, account, access token."""
PEEK_LIMIT_BYTES = 256 * 1024
HELD = frozenset({"response.created", "response.in_progress"})
"""Events held back with the ``codex.*`` ones until the stream shows it is really answering."""
TAPPED = frozenset({"codex.rate_limits", *TERMINAL_TYPES})
PEEKED = TAPPED | HELD | {"response.output_item.added"}
"""What the peek reads (every answer starts its output with ``response.output_item.added``)."""
MARKERS = (b"codex.rate_limits", b"response.completed", b"response.incomplete", b"response.failed", b"error")
"""Byte strings one of which every tapped event contains (its type, in the event line or the JSON)."""


_LOWER: Learnt[str, str] = Learnt(str.lower)
"""Header names lower-cased, by their spelling as received."""


def _lowered(headers: Sequence[tuple[str, str]]) -> dict[str, str]:
    lower = _LOWER
    return {lower[name]: value for name, value in headers}


class UpstreamAttempt:
    """One try of ``account`` for ``flow``: :meth:`send` it, then read the answer it returns."""

    def __init__(self, app: AppView, flow: Flow, account: Account) -> None:
        self.app, self.flow, self.account = app, flow, account
        self.token: str | None = None
        """The access token this attempt sent (``None`` until fetched)."""
        self.terminal: str | None = None
        """Type of the terminal event read (``response.completed``, ...), once read."""
        self.scanner = SSEScanner(max(app.settings.max_sse_event_bytes * 2, 1 << 20), types=PEEKED)
        self.watch: Watch | None = None
        """The attempt's one timer (made at its first wait: it needs the running loop)."""

    # -- the request -----------------------------------------------------------------------

    async def send(self, send_upstream: SendUpstream, deadline: Deadline | None = None) -> ProxyResponse:
        """The upstream's answer, its stream (if any) past its first real event.

        ``deadline`` bounds the whole wait for that event (streamed endpoints).

        :raises UpstreamError: the attempt failed; ``retryable`` allows failover.
        """
        if deadline is None:
            response = await self._send(send_upstream)
        else:
            watch = self.watch = self.watch or Watch()
            watch.arm(deadline.at)
            try:
                response = await self._send(send_upstream)
            except BaseException as exc:
                expired = isinstance(exc, asyncio.CancelledError) and watch.expired()
                watch.close()
                if expired:
                    raise deadline.error() from None
                raise
            watch.disarm()
        if response.status == 200 and not isinstance(response.body, bytes):
            response.body = await self.peek(response.body, deadline)
        return response

    async def _send(self, send_upstream: SendUpstream) -> ProxyResponse:
        self.token = await self.app.tokens.access_token(self.account)
        response = await send_upstream(self.flow, self.account, self.token)
        if response is None:
            raise FlowError("no plugin sent the request upstream", status=500, code="no_upstream")
        headers = _lowered(response.headers)
        if ratelimits.apply_headers(self.account, headers):
            self.app.pool.mark_dirty(self.account)
        if response.status != 200:
            body = response.body
            error = classify(response.status, headers, body if isinstance(body, bytes) else b"")
            if error is not None:
                if not isinstance(body, bytes):
                    await close_stream(body)
                raise error
        return response

    # -- the stream ------------------------------------------------------------------------

    async def peek(self, body: AsyncIterator[bytes], deadline: Deadline | None = None) -> AsyncIterator[bytes]:
        """Hold the stream until its first real event; fail over while nothing has reached the client.

        ``codex.*``, ``response.created`` and ``response.in_progress`` are held until the first
        output or terminal event, so an overload reported right after ``response.created`` fails
        over. Every wait for upstream bytes is bounded by ``STREAM_IDLE_TIMEOUT_SECONDS``. Until the
        stream shows an answer event (anything but ``codex.*``) the waits are also bounded by
        ``deadline``; once it has, reaching ``deadline`` passes the held events on instead (a long
        reasoning keeps its account). A timeout, a broken stream or an end before the first output
        event raise a retryable :class:`UpstreamError`. Returns the stream to pass on: what was
        held, then the rest, read by this attempt's scanner as it passes (:class:`AnswerStream`).
        """
        watch = self.watch = self.watch or Watch()
        loop = watch.loop
        idle = self.app.settings.stream_idle_timeout_seconds
        held: list[bytes] = []
        size, answering, decided = 0, False, False
        iterator = body.__aiter__()
        pending: asyncio.Task[bytes | None] | None = None
        try:
            while not decided and size < PEEK_LIMIT_BYTES:
                idle_end = loop.time() + idle
                if answering and deadline is not None and deadline.at < idle_end:
                    # Not a background task: held in ``pending`` and awaited or cancelled here or in _pass_on.
                    pending = asyncio.create_task(next_chunk(iterator), name="upstream-read")  # noqa: TID251
                    await asyncio.wait((pending,), timeout=deadline.at - loop.time())
                    if not pending.done():
                        break  # answering, slowly: pass on what is held and keep this account
                    read, pending = pending, None
                    chunk = read_result(read)
                elif deadline is not None and not answering and deadline.at < idle_end:
                    chunk = await self._read(iterator, deadline.at, deadline.error)
                else:
                    chunk = await self._read(iterator, idle_end, lambda: silent_before_first_event(idle))
                if chunk is None:
                    raise broken_before_first_event("ended")
                held.append(chunk)
                size += len(chunk)
                for event in scan(self.scanner, chunk):
                    kind = event.type
                    if kind is not None and not kind.startswith("codex."):
                        answering = True
                        if not decided and kind not in HELD:
                            decided = True
                            if kind in ("response.failed", "error"):
                                error = classify_event(event.json())
                                if error is not None:
                                    raise error
                    self.inspect(event)
        except BaseException as exc:
            watch.close()
            await drop_read(pending)
            await close_stream(iterator)
            if isinstance(exc, Exception) and not isinstance(exc, FlowError):
                raise broken_before_first_event(f"failed ({type(exc).__name__})") from exc
            raise
        self.scanner.keep_only(TAPPED)
        return AnswerStream(self, held, iterator, pending, watch, idle)

    async def _read(self, iterator: AsyncIterator[bytes], until: float,
                    on_timeout: Callable[[], UpstreamError]) -> bytes | None:
        """The next chunk (``None`` at the end), waiting until event-loop time ``until`` at most.

        A failure of the stream is a retryable :class:`UpstreamError` (nothing reached the client yet).
        """
        watch = self.watch
        assert watch is not None
        watch.arm(until)
        try:
            return await iterator.__anext__()
        except StopAsyncIteration:
            return None
        except asyncio.CancelledError:
            if watch.expired():
                raise on_timeout() from None
            raise
        except Exception as exc:
            raise broken_before_first_event(f"failed ({type(exc).__name__})") from exc
        finally:
            watch.disarm()

    def feed(self, chunk: bytes) -> None:
        """Read one chunk of the stream after the peek."""
        if not self.scanner.buffered and chunk.endswith(b"\n\n") and not any(m in chunk for m in MARKERS):
            return  # whole events only, none of a type we read: skip the scan (the common delta chunk)
        for event in scan(self.scanner, chunk):
            self.inspect(event)

    def inspect(self, event: SSEEvent) -> None:
        """Take what the proxy needs from one event: rate limits, usage, the terminal error code."""
        kind = event.type
        if kind == "codex.rate_limits":
            self._rate_limits(event)
        elif kind in TERMINAL_TYPES:
            self._terminal(kind, event)

    def _rate_limits(self, event: SSEEvent) -> None:
        try:
            if ratelimits.apply_event_data(self.account, event.data):
                self.app.pool.mark_dirty(self.account)
        except ValueError:
            log.debug("unreadable codex.rate_limits event")

    def _terminal(self, kind: str, event: SSEEvent) -> None:
        self.terminal = kind
        if kind in ("response.completed", "response.incomplete"):
            usage = completed_usage(event.data)  # the event repeats the whole answer: decode only its usage
            if usage is not None:
                self.flow.usage = usage
            return
        try:
            payload: dict[str, Any] = event.json()
        except ValueError:
            return
        response = payload.get("response") or {}
        if kind in ("response.failed", "error"):
            err = response.get("error") or payload.get("error") or payload
            self.flow.error_code = str((err or {}).get("code") or kind)
