"""WebSocket frames of Codex's ``responses`` transport (protocol.md §5.2).

Client frames are JSON text: ``{"type": "response.create", ...the HTTP body fields...}``, plus
``previous_response_id`` and ``generate``. Server frames are the SSE ``data`` payloads, one per
text frame, and in-band errors ``{"type": "error", "status": <http status>, "error": {...},
"headers": {...}}``, which Codex handles like the HTTP error of that status.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

from codexlb.endpoints import Adapter
from codexlb.sse_frames import format_event

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED = 1003
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009
ERROR_HEADERS = ("retry-after", "x-should-retry", "x-request-id")
"""Answer headers an in-band error carries in its ``headers`` (Codex reads them as response headers)."""
LOCAL_FIELDS = ("type", "previous_response_id", "generate", "background")
"""Frame fields that are the transport's, not the upstream request's."""


class FrameError(Exception):
    """A client frame the proxy cannot take: answered with an error frame, then ``close_code``."""

    def __init__(self, message: str, *, code: str, close_code: int | None = CLOSE_INVALID_DATA,
                 status: int = 400) -> None:
        super().__init__(message)
        self.message, self.code, self.close_code, self.status = message, code, close_code, status

    def frame(self) -> str:
        return error_frame(self.status, self.code, self.message)


def parse_client_frame(message: str | bytes) -> dict[str, Any]:
    """A client frame as a JSON object with a string ``type``; :class:`FrameError` otherwise."""
    if isinstance(message, bytes):
        raise FrameError("binary frames are not supported; send JSON text frames", code="unsupported_frame",
                         close_code=CLOSE_UNSUPPORTED)
    try:
        frame = json.loads(message)
    except (ValueError, RecursionError):
        raise FrameError("frame is not valid JSON", code="invalid_json") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise FrameError('frame must be a JSON object with a "type"', code="invalid_frame")
    return frame


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def error_frame(status: int, code: str, message: str, *, type: str | None = None,
                headers: Mapping[str, str] | None = None, **extra: Any) -> str:
    """An in-band error in the upstream's shape."""
    kind = type or ("invalid_request_error" if status < 500 else "server_error")
    frame: dict[str, Any] = {"type": "error", "status": status,
                             "error": {"type": kind, "code": code, "message": message, **extra}}
    if headers:
        frame["headers"] = dict(headers)
    return dumps(frame)


def error_frame_of(status: int, body: bytes, headers: list[tuple[str, str]]) -> str:
    """The in-band error for a pipeline answer that is not 200 (an OpenAI-shaped JSON error body)."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        error = None
    if not isinstance(error, dict):
        error = {"type": "server_error", "code": "upstream_error", "message": body[:500].decode("utf-8", "replace")}
    kept = {k.lower(): v for k, v in headers if k.lower() in ERROR_HEADERS or k.lower().startswith("x-codex-")}
    frame: dict[str, Any] = {"type": "error", "status": status, "error": error}
    if kept:
        frame["headers"] = kept
    return dumps(frame)


def prewarm_frames(model: Any) -> list[str]:
    """``response.created`` and ``response.completed`` of a ``generate: false`` turn (no sampling)."""
    response: dict[str, Any] = {
        "id": "resp_" + secrets.token_hex(16), "object": "response", "created_at": int(time.time()),
        "status": "in_progress", "model": model if isinstance(model, str) else None, "output": [],
        "usage": None, "error": None, "incomplete_details": None, "metadata": {},
    }
    created = {"type": "response.created", "sequence_number": 0, "response": response}
    done = {**response, "status": "completed",
            "usage": {"input_tokens": 0, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 0,
                      "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 0}}
    return [dumps(created), dumps({"type": "response.completed", "sequence_number": 1, "response": done})]


class WebSocketAdapter(Adapter):
    """A WebSocket turn: Codex's own route; an error after the first event is an in-band error frame."""

    def terminal_error(self, code: str, message: str) -> bytes:
        status = 504 if "timeout" in code else 502
        payload = {"type": "error", "status": status,
                   "error": {"type": "server_error", "code": code, "message": message}}
        return format_event("error", payload)
