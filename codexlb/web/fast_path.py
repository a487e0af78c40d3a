"""The proxy's POST routes served straight from ASGI, in front of Quart.

Quart's own work per request (a ``Request`` with werkzeug ``Headers``, two tasks and an
``asyncio.wait``, the app and request contexts, signals, a ``Response`` and its headers again)
measured ~0.12 ms CPU per request on the bench rig, about a quarter of the whole engine's
(``bench/RESULTS.md``). These routes use none of it: their flow is built from the ASGI scope,
admitted, its body read, run through the pipeline and its answer sent, as the Quart view did,
with one task that listens for the client going away. Everything else (other paths and methods,
a ``root_path``, HTTP/1.0, WebSocket, lifespan) goes to Quart unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from hypercorn.typing import ASGIReceiveCallable as Receive
from hypercorn.typing import ASGIReceiveEvent, HTTPScope, Scope
from hypercorn.typing import ASGISendCallable as Send

from codexlb.app import CodexLB
from codexlb.flow import Flow, ProxyResponse
from codexlb.web import too_large
from codexlb.web.admission import client_flow
from codexlb.web.proxy import DISCARD_IDLE_SECONDS
from codexlb.web.respond import answer_headers, finish_now

log = logging.getLogger("codexlb.web")
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_GONE = object()
"""What :func:`read_body` returns when the client went away while sending."""


class FastRoutes:
    """ASGI middleware: ``routes`` (path → endpoint, method POST) served here, the rest by ``app``."""

    __slots__ = ("lb", "app", "routes")

    def __init__(self, lb: CodexLB, app: ASGIApp, routes: dict[str, str]) -> None:
        self.lb, self.app, self.routes = lb, app, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path")
                and scope["http_version"] != "1.0" and (endpoint := self.routes.get(scope["path"]))):
            await serve(self.lb, endpoint, scope, receive, send)
        else:
            await self.app(scope, receive, send)


async def serve(lb: CodexLB, endpoint: str, scope: HTTPScope, receive: Receive, send: Send) -> None:
    """Admit, read, run and answer one request, as the Quart view does."""
    headers = ((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"])
    flow = client_flow("POST", scope["path"], endpoint, headers, scope["query_string"], scope.get("client"))
    refused = await lb.pipeline.admit(flow)
    if refused is not None:
        await respond(lb, flow, refused, send)
        return
    limit = lb.settings.max_decompressed_body_bytes
    body = await read_body(receive, flow.request.headers.get("content-length"), limit)
    if body is _GONE:
        return
    if body is None:
        flow.reject(413, "payload_too_large", too_large(limit))
        assert flow.response is not None
        await respond(lb, flow, flow.response, send)
        return
    assert isinstance(body, bytes)
    flow.request.body = body
    task = asyncio.current_task()
    assert task is not None
    hangup = Hangup(receive, task)
    try:
        await respond(lb, flow, await lb.pipeline.run(flow), send, hangup)
    except asyncio.CancelledError:
        if hangup.heard and task.uncancel() <= hangup.cancelling:
            return  # the client went away: what was sent is all it gets
        raise
    except Exception:
        log.exception("unhandled error on %s", flow.request.path)
        if not hangup.started:  # nothing sent yet: the client gets the error (flow_done already ran or will)
            error = ProxyResponse.error(500, "internal_error", "internal error")
            assert isinstance(error.body, bytes)
            await send_bytes(send, 500, _bytes_headers(error.headers), error.body)
    finally:
        hangup.stop()


async def read_body(receive: Receive, declared: str | None, limit: int) -> bytes | None | object:
    """The raw body; ``None`` when it is larger than ``limit``; ``_GONE`` when the client left.

    A declared length over the limit is believed (the body is not read: Quart did the same). A body
    that passes the limit as it arrives is read on and thrown away (up to twice the limit, while the
    client keeps sending, each wait at most ``DISCARD_IDLE_SECONDS``) before the 413 is sent:
    Hypercorn closes a connection whose answer ends before its request, so a client still uploading
    would get a reset instead of the answer.
    """
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    message = await receive()
    if message["type"] != "http.request":
        return _GONE
    chunk = message.get("body", b"")
    if not message.get("more_body"):  # the whole body in one message: the usual case
        return chunk if len(chunk) <= limit else None
    parts, size = [chunk], len(chunk)
    while size <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return _GONE
        parts.append(chunk := message.get("body", b""))
        size += len(chunk)
        if not message.get("more_body"):
            return b"".join(parts) if size <= limit else None
    while size <= 2 * limit:  # over the limit: discard the rest while it keeps coming
        try:
            async with asyncio.timeout(DISCARD_IDLE_SECONDS):
                message = await receive()
        except TimeoutError:
            break
        if message["type"] != "http.request":
            return _GONE
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    return None


class Hangup:
    """Listens for the client going away and then cancels the task serving it (Quart's receiver task
    does the same); ``stop`` ends the listening once the answer is complete."""

    __slots__ = ("task", "cancelling", "waiter", "started", "ended", "heard")

    def __init__(self, receive: Receive, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.cancelling = task.cancelling()
        self.started = self.ended = self.heard = False
        self.waiter: asyncio.Future[ASGIReceiveEvent] = asyncio.ensure_future(receive())
        self.waiter.add_done_callback(self._heard)

    def _heard(self, waiter: asyncio.Future[ASGIReceiveEvent]) -> None:
        if self.ended or waiter.cancelled() or waiter.exception() is not None:
            return
        if waiter.result()["type"] == "http.disconnect":
            self.heard = True
            self.task.cancel()

    def stop(self) -> None:
        self.ended = True
        self.waiter.cancel()


async def respond(lb: CodexLB, flow: Flow, result: ProxyResponse, send: Send, hangup: Hangup | None = None) -> None:
    """Send ``result``; the flow is finished and queued for ``flow_done`` (after the last byte when streamed)."""
    flow.status = result.status
    headers = _bytes_headers(answer_headers(lb, flow, result))
    body = result.body
    if not isinstance(body, bytes):
        await stream(lb, flow, result.status, headers, body, send, hangup)
        return
    finish_now(lb, flow)
    if hangup is not None:
        hangup.started = True
    await send_bytes(send, result.status, headers, body)


async def send_bytes(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    """A whole answer in two messages, with its length."""
    headers = [(k, v) for k, v in headers if k != b"content-length"]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _bytes_headers(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """Header pairs as ASGI sends them (names lower-cased; UTF-8, as Quart encodes them)."""
    return [(k.lower().encode(), v.encode()) for k, v in headers]


async def stream(lb: CodexLB, flow: Flow, status: int, headers: list[tuple[bytes, bytes]],
                 body: AsyncIterator[bytes], send: Send, hangup: Hangup | None) -> None:
    """Send a streamed answer chunk by chunk; at the end (or when the client left) close it."""
    chunks = body.__aiter__()
    try:
        if hangup is not None:
            hangup.started = True
        await send({"type": "http.response.start", "status": status, "headers": headers})
        async for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if hangup is not None:
            hangup.ended = True  # complete: a hang-up from here on is the end of the exchange
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        flow.finished_at = time.time()
        try:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            lb.finisher.add(flow)
