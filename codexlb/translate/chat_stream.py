"""Responses events → chat completions: stream chunks and the non-stream object (protocol.md §8.2)."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any

from codexlb.translate.responses import ResponseAssembler, ResponseFailed, error_from_event

__all__ = [
    "ChatStreamTranslator",
    "assemble_chat_completion",
    "chat_usage",
    "response_to_chat_completion",
]

_DONE = b"data: [DONE]\n\n"
_INCOMPLETE_REASONS = {"max_output_tokens": "length", "content_filter": "content_filter"}


def _frame(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def _new_id() -> str:
    return "chatcmpl-" + secrets.token_urlsafe(18).replace("-", "a").replace("_", "b")


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def chat_usage(usage: Any) -> dict[str, Any] | None:
    """Chat ``usage`` from a Responses ``usage`` object (None when there is none)."""
    if not isinstance(usage, Mapping):
        return None
    prompt, completion = _count(usage.get("input_tokens")), _count(usage.get("output_tokens"))
    in_details, out_details = usage.get("input_tokens_details"), usage.get("output_tokens_details")
    cached = _count(in_details.get("cached_tokens")) if isinstance(in_details, Mapping) else 0
    reasoning = _count(out_details.get("reasoning_tokens")) if isinstance(out_details, Mapping) else 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": _count(usage.get("total_tokens")) or prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def _finish_reason(response: Mapping[str, Any], has_tool_calls: bool) -> str:
    if response.get("status") == "incomplete":
        details = response.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, Mapping) else None
        return _INCOMPLETE_REASONS.get(reason or "", "length")
    return "tool_calls" if has_tool_calls else "stop"


def _error_body(error: ResponseFailed) -> dict[str, Any]:
    body = error.body()
    body["error"].setdefault("param", None)
    return body


def response_to_chat_completion(response: Mapping[str, Any], model: str, *,
                                completion_id: str | None = None,
                                created: int | None = None) -> dict[str, Any]:
    """A ``chat.completion`` object from a final Responses object (e.g. ``ResponseAssembler.result()``)."""
    texts: list[str] = []
    refusals: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for item in response.get("output") or []:
        if not isinstance(item, Mapping):
            continue
        if item.get("type") == "function_call":
            tool_calls.append({
                "id": item.get("call_id") or item.get("id"),
                "type": "function",
                "function": {"name": item.get("name", ""), "arguments": item.get("arguments", "")},
            })
        elif item.get("type") == "message":
            for part in item.get("content") or []:
                if not isinstance(part, Mapping):
                    continue
                if part.get("type") == "output_text" and isinstance(part.get("text"), str):
                    texts.append(part["text"])
                elif part.get("type") == "refusal" and isinstance(part.get("refusal"), str):
                    refusals.append(part["refusal"])
    text = "".join(texts)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text if text or not (tool_calls or refusals) else None,
        "refusal": "".join(refusals) or None,
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    resp_id = response.get("id")
    if completion_id is None:
        completion_id = f"chatcmpl-{resp_id.removeprefix('resp_')}" if isinstance(resp_id, str) else _new_id()
    created_at = response.get("created_at")
    out: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created if created is not None else (
            created_at if isinstance(created_at, int) else int(time.time())),
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": _finish_reason(response, bool(tool_calls)),
        }],
    }
    usage = chat_usage(response.get("usage"))
    if usage is not None:
        out["usage"] = usage
    return out


def assemble_chat_completion(events: Iterable[Mapping[str, Any]], model: str, *,
                             completion_id: str | None = None,
                             created: int | None = None) -> dict[str, Any]:
    """Non-stream ``chat.completion`` from parsed event payloads; raises ``ResponseFailed``."""
    assembler = ResponseAssembler()
    for payload in events:
        assembler.feed(payload)
    return response_to_chat_completion(assembler.result(), model, completion_id=completion_id,
                                       created=created)


class ChatStreamTranslator:
    """Turns Responses event payloads into ``data: {chat.completion.chunk}`` frames.

    Role ``assistant`` rides on the first delta; the terminal event yields the ``finish_reason``
    chunk and, with ``include_usage``, a ``choices: []`` usage chunk; :meth:`finish` adds
    ``data: [DONE]`` (after an error frame when the stream ended without a terminal event).
    """

    def __init__(self, model: str, include_usage: bool, *, completion_id: str | None = None,
                 created: int | None = None) -> None:
        self.model = model
        self.include_usage = include_usage
        self.id = completion_id or _new_id()
        self.created = int(time.time()) if created is None else created
        self._role_sent = False
        self._tools: dict[str, int] = {}
        self._args_sent: dict[int, int] = {}
        self._text_sent: dict[str, int] = {}
        self._terminal = False
        self._closed = False
        self.error: ResponseFailed | None = None
        """The upstream failure, when the stream ended with one."""

    @property
    def done(self) -> bool:
        """A terminal event (success or failure) has been translated."""
        return self._terminal

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        if not self._role_sent:
            delta = {"role": "assistant", **delta}
            self._role_sent = True
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if self.include_usage:
            chunk["usage"] = None
        return _frame(chunk)

    def _tool_index(self, key: str) -> tuple[int, bool]:
        index = self._tools.get(key)
        if index is not None:
            return index, False
        index = self._tools[key] = len(self._tools)
        return index, True

    def _tool_delta(self, index: int, call: dict[str, Any]) -> bytes:
        return self._chunk({"tool_calls": [{"index": index, **call}]})

    def _on_item(self, payload: Mapping[str, Any], done: bool) -> list[bytes]:
        item = payload.get("item")
        if not isinstance(item, Mapping):
            return []
        key = str(item.get("id") or item.get("call_id") or payload.get("output_index"))
        if item.get("type") == "message" and done:
            text = "".join(p.get("text", "") for p in item.get("content") or []
                           if isinstance(p, Mapping) and p.get("type") == "output_text")
            sent = self._text_sent.get(key, 0)
            self._text_sent[key] = len(text)
            return [self._chunk({"content": text[sent:]})] if len(text) > sent else []
        if item.get("type") != "function_call":
            return []
        index, new = self._tool_index(key)
        arguments = item.get("arguments") or ""
        sent = self._args_sent.get(index, 0)
        self._args_sent[index] = max(sent, len(arguments))
        if new:
            call = {"id": item.get("call_id") or item.get("id"), "type": "function",
                    "function": {"name": item.get("name", ""), "arguments": arguments}}
            return [self._tool_delta(index, call)]
        if done and len(arguments) > sent:
            return [self._tool_delta(index, {"function": {"arguments": arguments[sent:]}})]
        return []

    def feed(self, payload: Mapping[str, Any]) -> list[bytes]:
        """Frames for one parsed event payload (usually none for events chat has no place for)."""
        if self._terminal:
            return []
        kind = payload.get("type")
        if kind == "response.output_text.delta":
            delta = payload.get("delta")
            if not isinstance(delta, str) or not delta:
                return []
            key = str(payload.get("item_id") or payload.get("output_index"))
            self._text_sent[key] = self._text_sent.get(key, 0) + len(delta)
            return [self._chunk({"content": delta})]
        if kind == "response.refusal.delta":
            delta = payload.get("delta")
            return [self._chunk({"refusal": delta})] if isinstance(delta, str) and delta else []
        if kind == "response.function_call_arguments.delta":
            delta = payload.get("delta")
            if not isinstance(delta, str) or not delta:
                return []
            index, _ = self._tool_index(str(payload.get("item_id") or payload.get("output_index")))
            self._args_sent[index] = self._args_sent.get(index, 0) + len(delta)
            return [self._tool_delta(index, {"function": {"arguments": delta}})]
        if kind in ("response.output_item.added", "response.output_item.done"):
            return self._on_item(payload, kind == "response.output_item.done")
        if kind in ("response.completed", "response.incomplete"):
            return self._finish_ok(payload)
        if kind in ("response.failed", "error"):
            self._terminal = True
            self.error = error_from_event(payload)
            return [_frame(_error_body(self.error))] if self.error else []
        return []

    def _finish_ok(self, payload: Mapping[str, Any]) -> list[bytes]:
        self._terminal = True
        response = payload.get("response")
        response = response if isinstance(response, Mapping) else {"status": "completed"}
        frames = [self._chunk({} if self._role_sent else {"content": ""},
                              _finish_reason(response, bool(self._tools)))]
        if self.include_usage:
            frames.append(_frame({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": [],
                "usage": chat_usage(response.get("usage")) or chat_usage({}),
            }))
        return frames

    def finish(self) -> list[bytes]:
        """Closing frames: ``[DONE]``, after an ``upstream_stream_truncated`` error if no terminal came."""
        if self._closed:
            return []
        self._closed = True
        frames: list[bytes] = []
        if not self._terminal:
            self._terminal = True
            self.error = ResponseFailed("Upstream stream closed before response.completed",
                                        code="upstream_stream_truncated", status=502, retryable=True)
            frames.append(_frame(_error_body(self.error)))
        frames.append(_DONE)
        return frames
