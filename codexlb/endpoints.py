"""Endpoint adapters: how each public route maps to the upstream and back.

``codex_responses`` passes bytes through unchanged. ``responses`` (``/v1/responses``) strips
fields the backend rejects and assembles non-streamed answers. ``chat_completions`` translates
to the Responses API and back. ``models`` reads the backend's model list.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from codexlb.errors import BadRequest, FlowError, UpstreamError
from codexlb.flow import Flow, ProxyResponse
from codexlb.sse import TERMINAL_TYPES, SSEEvent, SSEEventTooLarge, SSEScanner
from codexlb.sse_frames import format_event, terminal_error_event
from codexlb.translate import (
    ChatStreamTranslator,
    ResponseAssembler,
    assemble_chat_completion,
    chat_to_responses,
    models_to_openai_list,
    prepare_responses_request,
)

UNBOUNDED = 1 << 30
"""Event-size limit of the adapters' own scans: the tap and ``sse_limit`` already bounded the stream."""
SSE_HEADERS = [("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache")]


class Adapter:
    """Pass-through: the Codex CLI's own route."""

    upstream_path = "/codex/responses"
    method = "POST"
    streams_upstream = True
    """The upstream answers with an SSE stream, so the first-byte limits apply."""

    def prepare(self, flow: Flow) -> None:
        """Shape ``flow.request.payload`` for the upstream."""

    def terminal_error(self, code: str, message: str) -> bytes:
        return terminal_error_event(code, message)

    async def respond(self, flow: Flow, upstream: ProxyResponse,
                      stream: AsyncIterator[bytes] | None) -> ProxyResponse:
        if stream is not None:
            upstream.body = stream
        return upstream


class CompactAdapter(Adapter):
    """``POST /backend-api/codex/responses/compact`` (Codex's remote compaction): JSON in, JSON out."""

    upstream_path = "/codex/responses/compact"
    streams_upstream = False


class ModelsAdapter(Adapter):
    """``GET /backend-api/codex/models`` (as is) and ``GET /v1/models`` (OpenAI list)."""

    upstream_path = "/codex/models"
    method = "GET"
    streams_upstream = False

    def __init__(self, openai: bool) -> None:
        self.openai = openai

    async def respond(self, flow: Flow, upstream: ProxyResponse,
                      stream: AsyncIterator[bytes] | None) -> ProxyResponse:
        if not self.openai:
            return upstream
        body = upstream.body if isinstance(upstream.body, bytes) else b""
        try:
            return ProxyResponse.json(200, models_to_openai_list(json.loads(body)))
        except ValueError:
            raise UpstreamError("upstream model list is not JSON", phase="stream", retryable=False) from None


async def _sse(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[SSEEvent]:
    scanner = SSEScanner(limit)
    async for chunk in stream:
        try:
            events = scanner.feed(chunk)
        except SSEEventTooLarge as exc:
            raise FlowError(f"upstream event larger than {exc.limit} bytes", status=502,
                            code="sse_event_too_large") from None
        for event in events:
            yield event


async def _events(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[tuple[str, Any]]:
    async for event in _sse(stream, limit):
        try:
            data = event.json()
        except ValueError:
            continue
        kind = event.type
        if kind:
            yield kind, data


class ResponsesAdapter(Adapter):
    """``POST /v1/responses``: streamed (``codex.*`` events dropped) or assembled."""

    def prepare(self, flow: Flow) -> None:
        payload = flow.request.payload or {}
        self.stream = bool(payload.get("stream"))
        try:
            flow.request.set_payload(prepare_responses_request(payload))
        except ValueError as exc:
            raise BadRequest(str(exc)) from None

    async def respond(self, flow: Flow, upstream: ProxyResponse,
                      stream: AsyncIterator[bytes] | None) -> ProxyResponse:
        assert stream is not None
        if self.stream:
            return ProxyResponse(200, SSE_HEADERS, self._filtered(stream))
        assembler = ResponseAssembler()
        async for _, data in _events(stream, UNBOUNDED):
            assembler.feed(data)
        return ProxyResponse.json(200, _result(assembler))

    async def _filtered(self, stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Drop ``codex.*`` events; back-fill the terminal event's ``output``; pass the rest as is."""
        assembler = ResponseAssembler()
        async for event in _sse(stream, UNBOUNDED):
            kind = event.type or ""
            if kind.startswith("codex."):
                continue
            if kind in ("response.output_item.done", "response.created") or kind in TERMINAL_TYPES:
                try:
                    assembler.feed(event.json())
                except ValueError:
                    pass
            if kind in ("response.completed", "response.incomplete") and assembler.terminal_event:
                yield format_event(kind, assembler.terminal_event)
            else:
                yield event.raw if event.raw.endswith(b"\n\n") else event.raw + b"\n"


def _result(assembler: ResponseAssembler) -> dict[str, Any]:
    try:
        return assembler.result()
    except FlowError:
        raise
    except ValueError as exc:
        raise UpstreamError(str(exc), phase="stream", retryable=False) from None


class ChatAdapter(Adapter):
    """``POST /v1/chat/completions`` through the Responses API."""

    def prepare(self, flow: Flow) -> None:
        payload = flow.request.payload or {}
        self.stream = bool(payload.get("stream"))
        self.model = str(payload.get("model") or "")
        options = payload.get("stream_options") or {}
        self.include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
        try:
            flow.request.set_payload(prepare_responses_request(chat_to_responses(payload)))
        except ValueError as exc:
            raise BadRequest(str(exc)) from None

    def terminal_error(self, code: str, message: str) -> bytes:
        if not self.stream:
            return b""
        body = {"error": {"message": message, "type": "server_error", "code": code}}
        return b"data: " + json.dumps(body).encode() + b"\n\ndata: [DONE]\n\n"

    async def respond(self, flow: Flow, upstream: ProxyResponse,
                      stream: AsyncIterator[bytes] | None) -> ProxyResponse:
        assert stream is not None
        if self.stream:
            return ProxyResponse(200, SSE_HEADERS, self._chunks(stream))
        events = [data async for _, data in _events(stream, UNBOUNDED)]
        return ProxyResponse.json(200, assemble_chat_completion(events, self.model))

    async def _chunks(self, stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        translator = ChatStreamTranslator(self.model, self.include_usage)
        async for _, data in _events(stream, UNBOUNDED):
            for frame in translator.feed(data):
                yield frame
        for frame in translator.finish():
            yield frame


def adapter_for(flow: Flow) -> Adapter:
    """The adapter of ``flow.request.endpoint``."""
    endpoint = flow.request.endpoint
    if endpoint == "codex_responses":
        return Adapter()
    if endpoint == "codex_websocket":
        from codexlb.websocket.frames import WebSocketAdapter

        return WebSocketAdapter()
    if endpoint == "codex_compact":
        return CompactAdapter()
    if endpoint == "responses":
        return ResponsesAdapter()
    if endpoint == "chat_completions":
        return ChatAdapter()
    if endpoint in ("codex_models", "models"):
        return ModelsAdapter(openai=endpoint == "models")
    raise FlowError(f"unknown endpoint {endpoint}", status=404, code="not_found")
