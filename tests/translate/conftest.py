"""Shared data for the translation tests: captured requests and §1.6-shaped upstream event sequences."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
"""Request bodies captured from real clients (copied from the captures in tests/fixtures, headers dropped)."""

USAGE = {"input_tokens": 12840, "input_tokens_details": {"cached_tokens": 11904},
         "output_tokens": 312, "output_tokens_details": {"reasoning_tokens": 192}, "total_tokens": 13152}


def _load_fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def _sdk_requests(kind: str) -> list[dict[str, Any]]:
    """Bodies the OpenAI Python SDK sent to ``/v1/<kind>``."""
    return [json.loads(p.read_text())["body"] for p in sorted((FIXTURES / "openai-sdk").glob(f"*{kind}.json"))]


def _response_object(status: str, output: list[Any] | None = None, usage: Any = None) -> dict[str, Any]:
    return {
        "id": "resp_68a1b2c3", "object": "response", "created_at": 1755041560, "status": status,
        "background": False, "error": None, "incomplete_details": None, "instructions": "",
        "model": "gpt-5.4", "output": output or [], "parallel_tool_calls": True, "previous_response_id": None,
        "reasoning": {"effort": "medium", "summary": "auto"}, "service_tier": "default", "store": False,
        "text": {"format": {"type": "text"}, "verbosity": "low"}, "tool_choice": "auto", "tools": [],
        "usage": usage, "metadata": {},
    }


def _seq(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    n = 0
    for event in events:
        if not event["type"].startswith("codex."):
            event["sequence_number"] = n
            n += 1
    return events


def _text_turn(deltas: tuple[str, ...] = ("Hel", "lo", " wörld"), *, terminal: str = "completed",
              incomplete_reason: str = "max_output_tokens") -> list[dict[str, Any]]:
    """rate limits, created, reasoning item, one assistant message, then the terminal event."""
    text = "".join(deltas)
    reasoning = {"id": "rs_1", "type": "reasoning", "summary": []}
    msg = {"id": "msg_1", "type": "message", "role": "assistant", "status": "in_progress", "content": []}
    part = {"type": "output_text", "text": text, "annotations": []}
    where = {"item_id": "msg_1", "output_index": 1, "content_index": 0}
    final = _response_object(terminal, usage=USAGE)
    if terminal == "incomplete":
        final["incomplete_details"] = {"reason": incomplete_reason}
    del final["tools"], final["tool_choice"], final["parallel_tool_calls"]  # the backend echoes less
    return _seq([
        {"type": "codex.rate_limits", "plan_type": "plus", "rate_limits": {"primary": {"used_percent": 1}}},
        {"type": "response.created", "response": _response_object("in_progress")},
        {"type": "response.in_progress", "response": _response_object("in_progress")},
        {"type": "response.output_item.added", "output_index": 0, "item": reasoning},
        {"type": "response.output_item.done", "output_index": 0,
         "item": {**reasoning, "summary": [{"type": "summary_text", "text": "**Thinking**"}],
                  "encrypted_content": "gAAAA"}},
        {"type": "response.output_item.added", "output_index": 1, "item": msg},
        {"type": "response.content_part.added", **where, "part": {**part, "text": ""}},
        *({"type": "response.output_text.delta", **where, "delta": d, "logprobs": []} for d in deltas),
        {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": part},
        {"type": "response.output_item.done", "output_index": 1,
         "item": {**msg, "status": "completed", "content": [part]}},
        {"type": f"response.{terminal}", "response": final},
    ])


def _tool_turn(calls: tuple[tuple[str, str, tuple[str, ...]], ...] = (
        ("get_time", "call_a", ('{"tz":', '"UTC"}')),
        ("shell", "call_b", ('{"command":["ls"]}',)),
)) -> list[dict[str, Any]]:
    """created, then one function_call item per call with streamed arguments, then completed."""
    events: list[dict[str, Any]] = [{"type": "response.created", "response": _response_object("in_progress")}]
    for index, (name, call_id, parts) in enumerate(calls):
        item = {"id": f"fc_{index}", "type": "function_call", "status": "in_progress", "call_id": call_id,
                "name": name, "arguments": ""}
        args = "".join(parts)
        events.append({"type": "response.output_item.added", "output_index": index, "item": item})
        events += [{"type": "response.function_call_arguments.delta", "item_id": f"fc_{index}",
                    "output_index": index, "delta": p} for p in parts]
        events.append({"type": "response.function_call_arguments.done", "item_id": f"fc_{index}",
                       "output_index": index, "arguments": args})
        events.append({"type": "response.output_item.done", "output_index": index,
                       "item": {**item, "status": "completed", "arguments": args}})
    events.append({"type": "response.completed", "response": _response_object("completed", usage=USAGE)})
    return _seq(events)


FAILED = {"type": "response.failed", "sequence_number": 3, "response": {
    "id": "resp_689b", "object": "response", "created_at": 1755041560, "status": "failed", "background": False,
    "error": {"code": "rate_limit_exceeded",
              "message": "Rate limit reached for gpt-5.1. Please try again in 11.054s. Visit ..."},
    "usage": None, "user": None, "metadata": {}}}


@pytest.fixture
def codex_request() -> dict[str, Any]:
    """A native Codex CLI request (second request of a tool-call turn)."""
    return _load_fixture("codex-cli/F23-0006-POST-backend-api_codex_responses.json")["body"]


@pytest.fixture
def sdk_requests() -> Callable[[str], list[dict[str, Any]]]:
    """``sdk_requests("responses")`` → the bodies the OpenAI SDK sent to ``/v1/responses``."""
    return _sdk_requests


@pytest.fixture
def text_turn() -> Callable[..., list[dict[str, Any]]]:
    return _text_turn


@pytest.fixture
def tool_turn() -> Callable[..., list[dict[str, Any]]]:
    return _tool_turn


@pytest.fixture
def failed_event() -> dict[str, Any]:
    return copy.deepcopy(FAILED)


@pytest.fixture
def usage() -> dict[str, Any]:
    return copy.deepcopy(USAGE)
