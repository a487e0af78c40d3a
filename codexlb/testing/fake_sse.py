"""SSE event scripts for the fake ``/codex/responses`` endpoint (protocol.md §1.5-§1.7).

:func:`plan_turn` decides what a request gets (text, a function call, or a compaction item) and
:func:`build_events` turns that plan into the backend's event sequence with ``sequence_number``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

WORDS = ("Hello", "from", "the", "fake", "Codex", "upstream.", "This", "answer", "is", "deterministic",
         "and", "streamed", "one", "word", "per", "delta.")
TOOL_TRIGGER = "call tool"


def frame(event: dict[str, Any]) -> bytes:
    """``event: <type>`` + one ``data:`` line + blank line, LF only."""
    data = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    return f"event: {event['type']}\ndata: {data}\n\n".encode()


class IdMaker:
    """Deterministic ids: ``resp_`` + 48 hex, ``msg_``, ``rs_``, ``fc_``, ``call_``, ``cmp_``..."""

    def __init__(self, seed: str = "fake") -> None:
        self.seed = seed
        self.counter = 0

    def make(self, prefix: str, length: int = 32) -> str:
        """Next id: ``prefix`` + ``length`` hex chars."""
        self.counter += 1
        digest = hashlib.sha256(f"{self.seed}:{prefix}:{self.counter}".encode()).hexdigest()
        while len(digest) < length:
            digest += hashlib.sha256(digest.encode()).hexdigest()
        return prefix + digest[:length]


def split_evenly(text: str, parts: int) -> list[str]:
    """Split ``text`` into at most ``parts`` non-empty consecutive chunks."""
    parts = max(1, min(parts, len(text)))
    size, rest = divmod(len(text), parts)
    chunks, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < rest else 0)
        chunks.append(text[start:end])
        start = end
    return [c for c in chunks if c]


def text_deltas(count: int, reply_text: str | None = None) -> list[str]:
    """``count`` deltas: words of a fixed sentence, or ``reply_text`` split evenly."""
    if reply_text is not None:
        return split_evenly(reply_text, count) or [""]
    return [("" if i == 0 else " ") + WORDS[i % len(WORDS)] for i in range(max(1, count))]


def _message_text(item: dict[str, Any]) -> str:
    content = item.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = (p.get("text") for p in content if isinstance(p, dict))
        return " ".join(t for t in texts if isinstance(t, str))
    return ""


def _function_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = body.get("tools")
    if not isinstance(tools, list):
        return []
    return [t for t in tools if isinstance(t, dict) and t.get("type") == "function" and t.get("name")]


def pick_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The function tool the fake should call, or ``None`` for a text answer.

    Trigger: the request has function tools and either ``tool_choice`` is ``"required"`` or names a
    function, or the last input item is a user message containing "call tool" (optionally followed by a
    tool name, e.g. "call tool get_weather").
    """
    tools = _function_tools(body)
    if not tools:
        return None
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        wanted = choice.get("name") or (choice.get("function") or {}).get("name")
        return next((t for t in tools if t["name"] == wanted), tools[0])
    if choice == "required":
        return tools[0]
    if choice == "none":
        return None
    items = body.get("input")
    if not isinstance(items, list) or not items or not isinstance(items[-1], dict):
        return None
    last = items[-1]
    if last.get("type", "message") != "message" or last.get("role") != "user":
        return None
    text = _message_text(last).lower()
    at = text.find(TOOL_TRIGGER)
    if at < 0:
        return None
    rest = text[at + len(TOOL_TRIGGER):].split()
    named = rest[0].strip(".,:;!?\"'") if rest else ""
    return next((t for t in tools if t["name"].lower() == named), tools[0])


def sample_arguments(tool: dict[str, Any]) -> str:
    """JSON arguments filling the tool's required properties with dummy values of the right type."""
    params = tool.get("parameters") or {}
    props = params.get("properties") or {}
    dummies = {"string": "fake", "number": 1, "integer": 1, "boolean": True, "array": [], "object": {}}
    args = {}
    for name in params.get("required") or list(props)[:1]:
        kind = (props.get(name) or {}).get("type", "string")
        args[name] = dummies.get(kind if isinstance(kind, str) else "string", "fake")
    return json.dumps(args)


@dataclass
class TurnPlan:
    """Everything needed to script one answer."""

    response_id: str
    created_at: int
    model: str
    request: dict[str, Any]
    kind: str = "text"  # text | function_call | compaction
    deltas: list[str] = field(default_factory=list)
    item_id: str = ""
    call_id: str = ""
    tool_name: str = ""
    reasoning_id: str | None = None
    reasoning_deltas: list[str] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)
    populate_output: bool = False


def response_object(plan: TurnPlan, status: str, output: list[dict[str, Any]], usage: Any) -> dict[str, Any]:
    """The public Responses object as echoed in lifecycle events."""
    req = plan.request
    return {
        "id": plan.response_id, "object": "response", "created_at": plan.created_at, "status": status,
        "background": False, "error": None, "incomplete_details": None,
        "instructions": req.get("instructions"), "model": plan.model, "output": output,
        "parallel_tool_calls": req.get("parallel_tool_calls", True), "previous_response_id": None,
        "reasoning": req.get("reasoning"), "service_tier": "default" if status == "completed" else "auto",
        "store": False, "text": req.get("text"), "tool_choice": req.get("tool_choice", "auto"),
        "tools": req.get("tools", []), "usage": usage, "user": None, "metadata": {},
    }


def _text_items(plan: TurnPlan, index: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    text = "".join(plan.deltas)
    base = {"item_id": plan.item_id, "output_index": index, "content_index": 0}
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
    item = {"id": plan.item_id, "type": "message", "status": "completed", "role": "assistant",
            "content": [part]}
    events = [
        {"type": "response.output_item.added", "output_index": index,
         "item": {"id": plan.item_id, "type": "message", "status": "in_progress", "role": "assistant",
                  "content": []}},
        {"type": "response.content_part.added", **base, "part": {**part, "text": ""}},
        *({"type": "response.output_text.delta", **base, "delta": d, "logprobs": []} for d in plan.deltas),
        {"type": "response.output_text.done", **base, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **base, "part": part},
        {"type": "response.output_item.done", "output_index": index, "item": item},
    ]
    return events, item


def _call_items(plan: TurnPlan, index: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    args = "".join(plan.deltas)
    base = {"item_id": plan.item_id, "output_index": index}
    item = {"id": plan.item_id, "type": "function_call", "status": "completed", "arguments": args,
            "call_id": plan.call_id, "name": plan.tool_name}
    events = [
        {"type": "response.output_item.added", "output_index": index,
         "item": {**item, "status": "in_progress", "arguments": ""}},
        *({"type": "response.function_call_arguments.delta", **base, "delta": d} for d in plan.deltas),
        {"type": "response.function_call_arguments.done", **base, "arguments": args},
        {"type": "response.output_item.done", "output_index": index, "item": item},
    ]
    return events, item


def _compaction_items(plan: TurnPlan, index: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    item = {"id": plan.item_id, "type": "compaction", "status": "completed",
            "encrypted_content": "gAAAAA" + hashlib.sha256(plan.item_id.encode()).hexdigest()}
    events = [
        {"type": "response.output_item.added", "output_index": index,
         "item": {"id": plan.item_id, "type": "compaction", "status": "in_progress"}},
        {"type": "response.output_item.done", "output_index": index, "item": item},
    ]
    return events, item


def _reasoning_items(plan: TurnPlan) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rid = plan.reasoning_id or ""
    text = "".join(plan.reasoning_deltas)
    base = {"item_id": rid, "output_index": 0, "summary_index": 0}
    empty, full = {"type": "summary_text", "text": ""}, {"type": "summary_text", "text": text}
    item = {"id": rid, "type": "reasoning", "summary": [{"type": "summary_text", "text": text}],
            "encrypted_content": "gAAAAA" + hashlib.sha256(rid.encode()).hexdigest()}
    events = [
        {"type": "response.output_item.added", "output_index": 0,
         "item": {"id": rid, "type": "reasoning", "summary": []}},
        {"type": "response.reasoning_summary_part.added", **base, "part": empty},
        *({"type": "response.reasoning_summary_text.delta", **base, "delta": d}
          for d in plan.reasoning_deltas),
        {"type": "response.reasoning_summary_text.done", **base, "text": text},
        {"type": "response.reasoning_summary_part.done", **base, "part": full},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
    ]
    return events, item


def build_events(plan: TurnPlan) -> list[dict[str, Any]]:
    """The full event list for ``plan``, numbered from 0 (``codex.rate_limits`` is added by the caller)."""
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": response_object(plan, "in_progress", [], None)},
        {"type": "response.in_progress", "response": response_object(plan, "in_progress", [], None)},
    ]
    output: list[dict[str, Any]] = []
    if plan.reasoning_id:
        more, item = _reasoning_items(plan)
        events += more
        output.append(item)
    builder = {"text": _text_items, "function_call": _call_items, "compaction": _compaction_items}[plan.kind]
    more, item = builder(plan, len(output))
    events += more
    output.append(item)
    final = response_object(plan, "completed", output if plan.populate_output else [], plan.usage)
    final["end_turn"] = plan.kind != "function_call"
    events.append({"type": "response.completed", "response": final})
    for seq, event in enumerate(events):
        event["sequence_number"] = seq
    return events


def failed_events(plan: TurnPlan, code: str, message: str) -> list[dict[str, Any]]:
    """``response.created`` then a terminal ``response.failed`` (HTTP status stays 200)."""
    failed = response_object(plan, "failed", [], None)
    failed["error"] = {"code": code, "message": message}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": response_object(plan, "in_progress", [], None)},
        {"type": "response.failed", "response": failed}]
    for seq, event in enumerate(events):
        event["sequence_number"] = seq
    return events


def usage_block(input_tokens: int, cached: int, output_tokens: int, reasoning: int) -> dict[str, Any]:
    """``response.completed`` usage (input includes cached; output includes reasoning)."""
    return {
        "input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input_tokens + output_tokens,
    }


def parse_sse(data: bytes | str) -> list[tuple[str | None, dict[str, Any]]]:
    """Split an SSE body into ``(event name, parsed data)`` pairs; comment lines are ignored."""
    text = data.decode() if isinstance(data, bytes) else data
    out: list[tuple[str | None, dict[str, Any]]] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, payload = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                payload.append(line[5:].lstrip())
        if payload:
            out.append((name, json.loads("\n".join(payload))))
    return out


def sample_request(text: str = "say hi", **overrides: Any) -> dict[str, Any]:
    """A minimal valid ``/codex/responses`` body (Codex-shaped) with ``overrides`` applied."""
    body: dict[str, Any] = {
        "model": "gpt-5.5",
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}],
        "tools": [], "tool_choice": "auto", "parallel_tool_calls": True, "reasoning": {"effort": "medium"},
        "store": False, "stream": True, "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "thread-0001", "text": {"verbosity": "low"},
    }
    body.update(overrides)
    return body
