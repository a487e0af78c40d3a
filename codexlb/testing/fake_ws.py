"""The fake's WebSocket transport on ``GET /backend-api/codex/responses`` (protocol.md §5.2).

Each ``response.create`` text frame gets the same events as the HTTP route, one JSON object per
text frame, after a ``codex.rate_limits`` frame. ``generate: false`` is a prewarm (created and
completed, no sampling). ``previous_response_id`` must name a response of this connection
(``store: false``: the context lives only in the connection); otherwise the answer is the
upstream's ``previous_response_not_found`` error frame. Faults queued with
:meth:`FakeUpstream.inject <codexlb.testing.fake_upstream.FakeUpstream.inject>` for the
``responses`` endpoint apply per turn: HTTP answers (429, 401, 5xx, ...) become in-band
``{"type": "error", "status": ..., "error": ..., "headers": ...}`` frames, ``refuse`` and
``drop_mid_stream`` reset the connection, the other stream faults act on the frames. Each turn
is recorded as a request of endpoint ``responses_ws`` (method ``WS``, ``json`` = the frame).
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from codexlb.testing.fake_accounts import FakeAccount
from codexlb.testing.fake_faults import STREAM_FAULTS
from codexlb.testing.fake_records import RecordedRequest, recorded
from codexlb.testing.fake_sse import build_events, failed_events

if TYPE_CHECKING:
    from codexlb.testing.fake_backend import FakeBackend
    from codexlb.testing.fake_faults import Fault


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def error_frame(status: int, body: Any, headers: dict[str, str] | None = None) -> str:
    """An HTTP error answer wrapped in-band, as the backend does over WebSocket."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {"type": "server_error", "message": _dumps(body) if body is not None else ""}
    frame: dict[str, Any] = {"type": "error", "status": status, "error": error}
    if headers:
        frame["headers"] = headers
    return _dumps(frame)


class FakeWebSocket:
    """One upgraded connection: its context (items per response id) and its turns."""

    def __init__(self, backend: FakeBackend, request: web.Request, account: FakeAccount) -> None:
        self.backend, self.up, self.request, self.account = backend, backend.up, request, account
        self.contexts: dict[str, list[Any]] = {}
        self.ws = web.WebSocketResponse(autoping=True, max_msg_size=64 * 1024 * 1024)

    async def serve(self) -> web.WebSocketResponse:
        headers = dict(self.account.rate_limit_headers())
        headers["x-codex-turn-state"] = self.up.ids.make("ts_", 24)
        self.ws.headers.update(headers)
        await self.ws.prepare(self.request)
        async for message in self.ws:
            if message.type != WSMsgType.TEXT:
                await self.ws.send_str(error_frame(400, {"error": {"type": "invalid_request_error",
                                                                   "message": "binary frames are not supported"}}))
                continue
            try:
                frame = json.loads(message.data)
            except ValueError:
                await self.ws.send_str(error_frame(400, {"error": {"type": "invalid_request_error",
                                                                   "message": "invalid JSON"}}))
                continue
            if isinstance(frame, dict) and frame.get("type") == "response.create":
                await self.turn(frame, len(message.data))
        return self.ws

    def _record(self, frame: dict[str, Any], size: int) -> None:
        base = recorded(self.request)
        self.up.requests.append(RecordedRequest(
            method="WS", path=base.path, query={}, query_string="", headers=base.headers, body=b"",
            raw_body=b"", json=frame, endpoint="responses_ws", time=self.up.clock(),
            account_id=self.account.chatgpt_account_id, extra={"bytes": size}))

    async def turn(self, frame: dict[str, Any], size: int) -> None:
        """Answer one ``response.create``."""
        self._record(frame, size)
        prev = frame.get("previous_response_id")
        if prev is not None and prev not in self.contexts:
            await self.ws.send_str(error_frame(400, {"error": {
                "type": "invalid_request_error", "code": "previous_response_not_found",
                "message": f"Previous response with id '{prev}' not found.", "param": "previous_response_id"}}))
            return
        items = [*(self.contexts.get(prev, []) if prev else []), *(frame.get("input") or [])]
        fault = self.up.take_fault(self.account.chatgpt_account_id, "responses")
        stream_fault = fault if fault is not None and fault.kind in STREAM_FAULTS else None
        if fault is not None and stream_fault is None:
            answer = await self.backend.generic_fault(self.request, fault, self.account)
            if answer is not None:
                return await self._send_answer(answer)
        if self.account.limit_reached() is not None:
            return await self._send_answer(self.backend._usage_limit(self.account))
        body = {**frame, "input": items, "stream": True}
        body.pop("type", None)
        body.pop("previous_response_id", None)
        if (invalid := self.backend._validate(self.account, body)) is not None:
            return await self._send_answer(invalid)
        plan = self.backend._plan(self.account, body, len(_dumps(body)))
        if frame.get("generate") is False:
            plan.deltas = []
            events = [e for e in build_events(plan) if e["type"] in ("response.created", "response.completed")]
            events[-1]["response"]["output"] = []
        elif stream_fault is not None and stream_fault.kind == "response_failed":
            events = failed_events(plan, stream_fault.code or "server_error", stream_fault.message or "")
        elif stream_fault is not None and stream_fault.kind == "error_event":
            events = [{"type": "error", "sequence_number": 0, "code": stream_fault.code,
                       "message": stream_fault.message, "param": None}]
        else:
            if stream_fault is not None and stream_fault.kind == "oversized_event":
                plan.deltas[0] = "x" * stream_fault.size_bytes
            events = build_events(plan)
        frames = [self.account.rate_limits_event()] if self.up.rate_limits_event else []
        frames += events
        if not await self._stream(frames, stream_fault):
            return
        last = events[-1]
        if last["type"] == "response.completed":
            output = last["response"].get("output") or []
            if not output:
                output = [e["item"] for e in events if e["type"] == "response.output_item.done"]
            self.contexts[last["response"]["id"]] = [*items, *output]
            if frame.get("generate") is not False:
                self.account.record_response()

    async def _stream(self, frames: list[dict[str, Any]], fault: Fault | None) -> bool:
        """Send the frames; ``False`` when a fault cut the turn short."""
        if self.up.first_event_delay:
            await asyncio.sleep(self.up.first_event_delay)
        if fault is not None and fault.kind in ("drop_mid_stream", "stall_mid_stream", "end_mid_stream"):
            for event in frames[: fault.after_events]:
                await self.ws.send_str(_dumps(event))
            if fault.kind == "drop_mid_stream":
                await self.backend.reset(self.request)
            if fault.kind == "end_mid_stream":
                await self.ws.close(code=1011, message=b"ended early")
                return False
            if math.isinf(fault.delay_s):
                await self.up.closing.wait()
                await self.backend.reset(self.request)
            await asyncio.sleep(fault.delay_s)
            frames = frames[fault.after_events:]
        for event in frames:
            await self.ws.send_str(_dumps(event))
            if self.up.event_delay:
                await asyncio.sleep(self.up.event_delay)
        return True

    async def _send_answer(self, answer: web.StreamResponse) -> None:
        body: Any = None
        if isinstance(answer, web.Response) and answer.body is not None:
            try:
                body = json.loads(answer.body)  # type: ignore[arg-type]
            except (ValueError, TypeError):
                body = {"error": {"type": "server_error", "message": answer.text or ""}}
        headers = {k.lower(): v for k, v in answer.headers.items() if k.lower() != "content-type"}
        await self.ws.send_str(error_frame(answer.status, body, headers or None))


async def serve_websocket(backend: FakeBackend, request: web.Request) -> web.StreamResponse:
    """``GET /backend-api/codex/responses``: the WebSocket transport, or 426 for a plain GET."""
    if not backend.up.websocket or request.headers.get("upgrade", "").lower() != "websocket":
        return web.json_response({"detail": "Upgrade Required"}, status=426)
    account = backend._authenticate(request)
    if not isinstance(account, FakeAccount):
        return account
    recorded(request).account_id = account.chatgpt_account_id
    return await FakeWebSocket(backend, request, account).serve()
