"""``/v1/responses``: the upstream request body, and the non-stream Response built from the SSE events.

References are to docs/protocol.md (§1.3 request body, §1.6 events, §1.7 failures, §8.1).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from codexlb.errors import UpstreamError
from codexlb.sse import TERMINAL_TYPES
from codexlb.sse_frames import usage_from_completed
from codexlb.types import TokenUsage

__all__ = [
    "INCLUDE_ALLOWLIST",
    "REJECTED_TOOL_TYPES",
    "UNSUPPORTED_UPSTREAM_FIELDS",
    "ResponseAssembler",
    "ResponseFailed",
    "error_from_event",
    "normalize_tools",
    "prepare_responses_request",
    "text_input",
]

UNSUPPORTED_UPSTREAM_FIELDS: tuple[str, ...] = (
    "max_output_tokens",
    "metadata",
    "prompt_cache_retention",
    "safety_identifier",
    "temperature",
    "top_p",
    "truncation",
    "user",
)
"""Fields the Codex backend answers with ``400 Unsupported parameter`` (§1.3; codex-lb's list)."""

INCLUDE_ALLOWLIST: frozenset[str] = frozenset({
    "code_interpreter_call.outputs",
    "computer_call_output.output.image_url",
    "file_search_call.results",
    "message.input_image.image_url",
    "message.output_text.logprobs",
    "reasoning.encrypted_content",
    "web_search_call.action.sources",
})
"""``include`` values accepted on ``/v1`` (§8.1)."""

REJECTED_TOOL_TYPES: frozenset[str] = frozenset({
    "file_search", "code_interpreter", "computer_use", "computer_use_preview",
})
"""Hosted tool types the backend cannot run for a ``/v1`` client (§8.1)."""

_TOOL_TYPE_ALIASES = {"web_search_preview": "web_search"}
_SERVICE_TIER_ALIASES = {"fast": "priority"}
_TRUNCATION_VALUES = frozenset({"auto", "disabled"})


def text_input(text: str) -> list[dict[str, Any]]:
    """A string ``input`` in the list form Codex sends: one user message with one ``input_text``."""
    return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}]


def normalize_tools(tools: Any, rejected: frozenset[str] = REJECTED_TOOL_TYPES) -> list[Any]:
    """Validate a Responses ``tools`` list; apply type aliases (``web_search_preview`` → ``web_search``)."""
    if not isinstance(tools, list):
        raise ValueError("'tools' must be an array")
    out: list[Any] = []
    for tool in tools:
        if not isinstance(tool, Mapping):
            raise ValueError("each entry of 'tools' must be an object")
        kind = tool.get("type")
        if kind in _TOOL_TYPE_ALIASES:
            tool = {**tool, "type": _TOOL_TYPE_ALIASES[kind]}
            kind = tool["type"]
        if kind in rejected:
            raise ValueError(f"Unsupported tool type: {kind}")
        out.append(tool)
    return out


def _normalize_tool_choice(choice: Any) -> Any:
    if isinstance(choice, Mapping) and choice.get("type") in _TOOL_TYPE_ALIASES:
        return {**choice, "type": _TOOL_TYPE_ALIASES[choice["type"]]}
    return choice


def prepare_responses_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body to send upstream for a ``/v1/responses`` request; raises ``ValueError`` for a 400.

    Forces ``stream: true`` and ``store: false``, drops :data:`UNSUPPORTED_UPSTREAM_FIELDS`,
    defaults ``instructions`` to ``""`` (codex-lb always sends it), turns a string ``input`` into
    the list form, and applies the §8.1 checks (include allow-list, truncation values, tool types,
    ``conversation`` with ``previous_response_id``). The input is not modified.
    """
    if not isinstance(body, Mapping):
        raise ValueError("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ValueError("'model' is required")
    out = dict(body)

    raw_input = out.get("input")
    if isinstance(raw_input, str):
        out["input"] = text_input(raw_input)
    elif isinstance(raw_input, list):
        out["input"] = list(raw_input)
    elif raw_input is None:
        raise ValueError("'input' is required")
    else:
        raise ValueError("'input' must be a string or an array")

    instructions = out.get("instructions")
    if instructions is None:
        out["instructions"] = ""
    elif not isinstance(instructions, str):
        raise ValueError("'instructions' must be a string")

    truncation = out.get("truncation")
    if truncation is not None and truncation not in _TRUNCATION_VALUES:
        raise ValueError("'truncation' must be 'auto' or 'disabled'")
    if out.get("conversation") and out.get("previous_response_id"):
        raise ValueError("Provide either 'conversation' or 'previous_response_id', not both.")

    include = out.get("include")
    if include is not None:
        if not isinstance(include, list) or not all(isinstance(v, str) for v in include):
            raise ValueError("'include' must be an array of strings")
        for value in include:
            if value not in INCLUDE_ALLOWLIST:
                raise ValueError(f"Unsupported include value: {value}")

    if out.get("tools") is not None:
        out["tools"] = normalize_tools(out["tools"])
    if "tool_choice" in out:
        out["tool_choice"] = _normalize_tool_choice(out["tool_choice"])
    tier = out.get("service_tier")
    if isinstance(tier, str) and tier.lower() in _SERVICE_TIER_ALIASES:
        out["service_tier"] = _SERVICE_TIER_ALIASES[tier.lower()]

    for key in UNSUPPORTED_UPSTREAM_FIELDS:
        out.pop(key, None)
    out["store"] = False
    out["stream"] = True
    return out


# --------------------------------------------------------------------------- failures

_RETRY_AFTER = re.compile(r"try again in\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|seconds?)\b", re.IGNORECASE)

_STATUS_BY_CODE = {
    "rate_limit_exceeded": 429,
    "usage_limit_reached": 429,
    "insufficient_quota": 429,
    "quota_exceeded": 429,
    "billing_hard_limit_reached": 429,
    "usage_not_included": 403,
    "context_length_exceeded": 400,
    "invalid_request_error": 400,
    "invalid_prompt": 400,
    "content_policy_violation": 400,
    "cyber_policy": 400,
    "server_is_overloaded": 503,
    "slow_down": 503,
}
_NOT_RETRYABLE = frozenset({
    "context_length_exceeded", "invalid_request_error", "invalid_prompt",
    "content_policy_violation", "cyber_policy",
})
_TRANSIENT_MESSAGES = ("Selected model is at capacity",)
_COPIED_ERROR_FIELDS = ("param", "plan_type", "resets_at", "resets_in_seconds")


class ResponseFailed(UpstreamError):
    """The upstream ended the response with ``response.failed`` or an ``error`` event (§1.7).

    ``status`` is the HTTP status to answer a non-stream client with (inferred from the code);
    ``retryable`` says another account may succeed; ``body()`` is the OpenAI error envelope.
    """

    def __init__(self, message: str, *, code: str, error_type: str | None = None,
                 status: int | None = None, upstream_status: int | None = None,
                 retryable: bool = False, cooldown_seconds: float | None = None,
                 reset_at: float | None = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message, phase="stream", retryable=retryable, status=status, code=code,
                         extra=extra, cooldown_seconds=cooldown_seconds, reset_at=reset_at,
                         upstream_status=upstream_status)
        self.type = error_type or ("invalid_request_error" if self.status == 400 else "server_error")


def error_from_event(payload: Mapping[str, Any]) -> ResponseFailed | None:
    """The failure carried by a ``response.failed`` or ``error`` payload (all three §1.7 shapes)."""
    kind = payload.get("type")
    upstream_status: int | None = None
    if kind == "response.failed":
        response = payload.get("response")
        err = response.get("error") if isinstance(response, Mapping) else None
        err = err if isinstance(err, Mapping) else {}
    elif kind == "error":
        nested = payload.get("error")
        # Flat shape: code/message at the top level, where "type" is the event type itself.
        err = nested if isinstance(nested, Mapping) else {k: v for k, v in payload.items() if k != "type"}
        status = payload.get("status")
        upstream_status = status if isinstance(status, int) else None
    else:
        return None
    message = err.get("message") if isinstance(err.get("message"), str) else None
    error_type = err.get("type") if isinstance(err.get("type"), str) else None
    code = err.get("code") if isinstance(err.get("code"), str) else None
    code = code or error_type or "upstream_error"
    message = message or f"Upstream response failed ({code})"
    status = _STATUS_BY_CODE.get(code) or _STATUS_BY_CODE.get(error_type or "")
    if status is None:
        status = upstream_status if upstream_status and upstream_status >= 400 else 502
    transient = any(message.startswith(m) for m in _TRANSIENT_MESSAGES)
    retryable = transient or (code not in _NOT_RETRYABLE and status != 400)
    cooldown: float | None = None
    match = _RETRY_AFTER.search(message)
    if match:
        cooldown = float(match.group(1)) / (1000.0 if match.group(2).lower() == "ms" else 1.0)
    resets_at = err.get("resets_at")
    extra = {k: err[k] for k in _COPIED_ERROR_FIELDS if err.get(k) is not None}
    return ResponseFailed(
        message, code=code, error_type=error_type, status=status, upstream_status=upstream_status,
        retryable=retryable, cooldown_seconds=cooldown,
        reset_at=float(resets_at) if isinstance(resets_at, int | float) else None, extra=extra,
    )


# --------------------------------------------------------------------------- assembly


class ResponseAssembler:
    """Builds the final Response object from parsed SSE payloads (§1.6, §8.1).

    The backend's terminal event carries ``output: []``; items come from ``output_item.done`` and
    are put back in ``output_index`` order. ``response.incomplete`` is a normal (non-error) result.
    """

    def __init__(self) -> None:
        self._base: dict[str, Any] | None = None
        self._items: dict[int, Any] = {}
        self._next_index = 0
        self._terminal: dict[str, Any] | None = None
        self._response: dict[str, Any] | None = None
        self._error: ResponseFailed | None = None

    @property
    def done(self) -> bool:
        """A terminal event has been fed."""
        return self._terminal is not None

    @property
    def items(self) -> list[Any]:
        """The finished output items so far, in output order."""
        return [self._items[k] for k in sorted(self._items)]

    @property
    def terminal_event(self) -> dict[str, Any] | None:
        """The terminal payload, with ``response.output`` back-filled (for re-framing to ``/v1``)."""
        return self._terminal

    @property
    def usage(self) -> TokenUsage:
        return usage_from_completed(self._response)

    def feed(self, payload: Mapping[str, Any]) -> None:
        """Take one event payload; events after the terminal one are ignored."""
        if self._terminal is not None:
            return
        kind = payload.get("type")
        if kind == "response.output_item.done":
            item = payload.get("item")
            index = payload.get("output_index")
            if not isinstance(index, int) or index in self._items:
                index = max(self._next_index, max(self._items, default=-1) + 1)
            self._items[index] = item
            self._next_index = index + 1
        elif kind in ("response.created", "response.in_progress"):
            response = payload.get("response")
            if isinstance(response, Mapping):
                self._base = dict(response)
        elif kind in TERMINAL_TYPES:
            self._finish(payload)

    def _finish(self, payload: Mapping[str, Any]) -> None:
        kind = payload["type"]
        error = error_from_event(payload)
        response = payload.get("response")
        if isinstance(response, Mapping):
            merged = {**(self._base or {}), **response}
        elif kind == "error":
            merged = dict(self._base or {})
        else:
            merged = {**(self._base or {}), "status": kind.removeprefix("response.")}
        if not merged.get("output"):
            merged["output"] = self.items
        if kind != "error":
            self._response = merged
        self._terminal = {**payload, "response": merged} if kind != "error" else dict(payload)
        self._error = error

    def result(self) -> dict[str, Any]:
        """The final Response; raises :class:`ResponseFailed` for a failure or a truncated stream."""
        if self._error is not None:
            raise self._error
        if self._response is None:
            raise ResponseFailed("Upstream stream closed before response.completed",
                                 code="stream_incomplete", status=502, retryable=True)
        return self._response
