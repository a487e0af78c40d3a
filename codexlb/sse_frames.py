"""Building SSE frames and reading the few payloads the proxy needs (protocol.md §1.6-1.7)."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

from codexlb.types import TokenUsage

__all__ = ["format_event", "terminal_error_event", "usage_from_completed"]


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def format_event(event_type: str, payload: Mapping[str, Any]) -> bytes:
    """One SSE frame ``event: X\\ndata: {json}\\n\\n``; ``"type"`` is added to the JSON when missing."""
    if "type" not in payload:
        payload = {"type": event_type, **payload}
    elif not isinstance(payload, dict):
        payload = dict(payload)
    return b"event: " + event_type.encode() + b"\ndata: " + _dumps(payload) + b"\n\n"


def terminal_error_event(
    code: str,
    message: str,
    *,
    response_id: str | None = None,
    created_at: int | None = None,
    model: str | None = None,
    sequence_number: int | None = None,
    error_extra: Mapping[str, Any] | None = None,
) -> bytes:
    """A ``response.failed`` frame (protocol.md §1.7) that makes Codex show ``message`` and stop.

    ``error_extra`` adds fields to the error object (e.g. ``type``, ``plan_type``, ``resets_at``).
    """
    response: dict[str, Any] = {
        "id": response_id or "resp_" + secrets.token_hex(24),
        "object": "response",
        "created_at": int(time.time()) if created_at is None else created_at,
        "status": "failed",
        "background": False,
        "error": {"code": code, "message": message, **(error_extra or {})},
        "incomplete_details": None,
        "output": [],
        "usage": None,
        "user": None,
        "metadata": {},
    }
    if model is not None:
        response["model"] = model
    payload: dict[str, Any] = {"type": "response.failed"}
    if sequence_number is not None:
        payload["sequence_number"] = sequence_number
    payload["response"] = response
    return format_event("response.failed", payload)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def usage_from_completed(payload: Mapping[str, Any] | None) -> TokenUsage:
    """Token counts from a terminal event payload (or its ``response``); zeros where absent."""
    if not isinstance(payload, Mapping):
        return TokenUsage()
    response = payload.get("response")
    usage = (response if isinstance(response, Mapping) else payload).get("usage")
    if not isinstance(usage, Mapping):
        return TokenUsage()
    in_details = usage.get("input_tokens_details")
    out_details = usage.get("output_tokens_details")
    return TokenUsage(
        input=_int(usage.get("input_tokens")),
        cached=_int(in_details.get("cached_tokens")) if isinstance(in_details, Mapping) else 0,
        output=_int(usage.get("output_tokens")),
        reasoning=_int(out_details.get("reasoning_tokens")) if isinstance(out_details, Mapping) else 0,
    )


_USAGE_KEY = b'"usage":'
_DECODE_VALUE = json.JSONDecoder().raw_decode


def completed_usage(data: bytes) -> TokenUsage | None:
    """The usage in a ``response.completed``/``response.incomplete`` event's raw JSON; ``None`` without one.

    Only the usage object is decoded: it is found by its key's last occurrence (the answer's text,
    the bulk of the event, cannot hold that key unescaped). When that does not give an object with
    token counts, the whole event is parsed instead.
    """
    at = data.rfind(_USAGE_KEY)
    if at >= 0:
        try:
            value, _ = _DECODE_VALUE(data[at + len(_USAGE_KEY):].decode("utf-8", "replace").lstrip())
        except ValueError:
            value = None
        if isinstance(value, dict) and "input_tokens" in value:
            return usage_from_completed({"usage": value})
    try:
        payload = json.loads(data)
    except ValueError:
        return None
    response = payload.get("response") if isinstance(payload, dict) else None
    if not isinstance(response, Mapping) or not response.get("usage"):
        return None
    return usage_from_completed(payload)
