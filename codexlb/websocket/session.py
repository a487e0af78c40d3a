"""One client WebSocket on ``/backend-api/codex/responses``: its context and its turns.

Each ``response.create`` becomes a :class:`~codexlb.flow.Flow` of endpoint ``codex_websocket``
whose body is the whole conversation (rebuilt from the :class:`Context`), run by the same
:meth:`Pipeline.run <codexlb.pipeline.Pipeline.run>` as an HTTP turn: the strategies pick the
account (the sticky strategy keeps a conversation on its account, so the connection stays on
one), failover happens before the turn's first event, the tap records usage and rate limits,
and ``flow_done`` writes the request-log row. The upstream answer's SSE events go to the client
one per text frame; a turn that fails before its first event gets an in-band error frame in the
upstream's shape. ``generate: false`` (the prewarm) is answered here without an upstream call.

Each turn is admitted (``admit_request``) like an HTTP request before it runs, with the
connection's handshake in ``flow.handshake``: client keys count and limit every turn, a key revoked
mid-connection stops the next turn, and a refusal is an in-band error frame too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

from codexlb.flow import Flow, ProxyRequest
from codexlb.sse import SSEScanner
from codexlb.websocket import frames
from codexlb.websocket.context import Context, output_item
from codexlb.websocket.frames import FrameError, error_frame

if TYPE_CHECKING:
    from codexlb.app import CodexLB
    from codexlb.websocket.registry import Connections

log = logging.getLogger("codexlb.websocket")
ENDPOINT = "codex_websocket"
UNBOUNDED = 1 << 30
"""Event-size limit of the frame splitter: ``sse_limit`` already bounds upstream events."""
QUEUE_FRAMES = 8
DRAIN = object()
"""Queue marker: the server is shutting down."""


class Socket(Protocol):
    """What the session needs of a server-side WebSocket (Quart's ``websocket`` has it)."""

    async def receive(self) -> str | bytes: ...
    async def send(self, data: str) -> None: ...
    async def close(self, code: int, reason: str = "") -> None: ...


class Closed(Exception):
    """The client's side of the socket is gone (read side)."""


class WebSocketSession:
    """Owns one connection's context chain; runs its turns one after the other."""

    def __init__(self, app: CodexLB, socket: Socket, handshake: Flow, connections: Connections) -> None:
        self.app, self.socket, self.handshake, self.connections = app, socket, handshake, connections
        settings = app.settings
        self.context = Context(settings.websocket_max_context_bytes)
        self.max_message = settings.websocket_max_message_bytes
        self.idle = settings.websocket_idle_timeout_seconds
        self.queue: asyncio.Queue[Any] = asyncio.Queue(QUEUE_FRAMES)
        self.turns = 0
        self.busy = False

    # -- connection ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve turns until the client leaves, a limit closes the socket, or the server drains."""
        self.connections.add(self)
        reader = self.app.tasks.spawn(self._read(), name=f"ws-read-{self.handshake.id[:8]}")
        try:
            while True:
                if self.connections.draining:
                    return await self._close(frames.CLOSE_GOING_AWAY, "server shutting down")
                try:
                    async with asyncio.timeout(self.idle):
                        message = await self.queue.get()
                except TimeoutError:
                    return await self._close(frames.CLOSE_NORMAL, f"idle for {self.idle:g} s "
                                             "(CODEX_LB_WEBSOCKET_IDLE_TIMEOUT_SECONDS)")
                if message is DRAIN:
                    continue
                if isinstance(message, Closed):
                    return
                try:
                    await self._handle(message)
                except FrameError as exc:
                    await self.socket.send(exc.frame())
                    if exc.close_code is not None:
                        return await self._close(exc.close_code, exc.message[:120])
        finally:
            self.connections.discard(self)
            reader.cancel()

    def drain(self) -> None:
        """Wake an idle session so it closes with 1001; a running turn finishes first."""
        try:
            self.queue.put_nowait(DRAIN)
        except asyncio.QueueFull:
            pass  # it has messages to read, and checks ``draining`` before each

    async def _read(self) -> None:
        """Read client frames into the queue (a disconnect ends the session)."""
        try:
            while True:
                message = await self.socket.receive()
                await self.queue.put(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self.queue.put(Closed(type(exc).__name__))

    async def _close(self, code: int, reason: str) -> None:
        try:
            await self.socket.close(code, reason)
        except Exception:
            log.debug("closing a WebSocket failed", exc_info=True)

    # -- turns -----------------------------------------------------------------------------------

    async def _handle(self, message: str | bytes) -> None:
        if len(message) > self.max_message:
            raise FrameError(f"message of {len(message)} bytes is larger than {self.max_message} "
                             "(CODEX_LB_WEBSOCKET_MAX_MESSAGE_BYTES)", code="message_too_large",
                             close_code=frames.CLOSE_TOO_BIG)
        frame = frames.parse_client_frame(message)
        if frame["type"] != "response.create":
            return  # response.processed and other notices: nothing to do
        if self.connections.draining:
            raise FrameError("server is shutting down; open a new connection", code="server_shutting_down",
                             status=503, close_code=frames.CLOSE_GOING_AWAY)
        items = frame.get("input", [])
        if isinstance(items, str):
            items = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": items}]}]
        if not isinstance(items, list):
            raise FrameError('"input" must be a list of items', code="invalid_request_error", close_code=None)
        self.context.start_turn(frame.get("previous_response_id"), items)
        self.busy = True
        try:
            if frame.get("generate") is False:
                await self._prewarm(frame)
            else:
                await self._turn(frame)
        finally:
            self.busy = False
            self.turns += 1

    async def _prewarm(self, frame: dict[str, Any]) -> None:
        created, completed = frames.prewarm_frames(frame.get("model"))
        await self.socket.send(created)
        await self.socket.send(completed)
        self.context.end_response(_response_id(completed.encode()) or "")

    def _flow(self, frame: dict[str, Any]) -> Flow:
        shake = self.handshake.request
        request = ProxyRequest(method="POST", path=shake.path, endpoint=ENDPOINT, headers=dict(shake.headers),
                               peer_ip=shake.peer_ip, client_ip=shake.client_ip,
                               body=self.context.request_body(frame))
        request.headers["content-type"] = "application/json"
        request.headers.pop("content-encoding", None)
        return Flow(request, handshake=self.handshake)

    async def _turn(self, frame: dict[str, Any]) -> None:
        lb = self.app
        flow = self._flow(frame)
        try:
            result = await lb.pipeline.admit(flow) or await lb.pipeline.run(flow)
            flow.status = result.status
            if isinstance(result.body, bytes):
                flow.first_byte_at = flow.first_byte_at or time.time()
                await self.socket.send(frames.error_frame_of(result.status, result.body, result.headers))
                return
            await self._relay(flow, result.body)
        finally:
            flow.finished_at = time.time()
            try:
                await lb.hooks.flow_done(flow)
            except Exception:
                log.exception("flow_done failed for WebSocket turn %s", flow.id)

    async def _relay(self, flow: Flow, body: AsyncIterator[bytes]) -> None:
        """Send each SSE event's data as one text frame; keep the answer's output items."""
        scanner = SSEScanner(UNBOUNDED)
        outputs: list[bytes] = []
        response_id: str | None = None
        try:
            async for chunk in body:
                for event in scanner.feed(chunk):
                    data = event.data
                    if not data:
                        continue
                    kind = event.type
                    if kind == "response.output_item.done":
                        item = output_item(data)
                        if item is not None:
                            outputs.append(item)
                    elif kind in ("response.created", "response.completed", "response.incomplete"):
                        response_id = _response_id(data) or response_id
                    await self.socket.send(data.decode("utf-8", "replace"))
        finally:
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                await aclose()
        if response_id is not None and flow.error_code is None:
            self.context.extend_raw(outputs)
            self.context.end_response(response_id)


def _response_id(data: bytes) -> str | None:
    try:
        response = json.loads(data).get("response") or {}
    except (ValueError, AttributeError):
        return None
    rid = response.get("id") if isinstance(response, dict) else None
    return rid if isinstance(rid, str) else None


__all__ = ["ENDPOINT", "Socket", "WebSocketSession", "error_frame"]
