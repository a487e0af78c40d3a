"""Chat ↔ Responses translation keeps text, tool calls and usage, for any content."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from codexlb.testing.fake_sse import TurnPlan, build_events, split_evenly, usage_block
from codexlb.translate import ChatStreamTranslator, ResponseAssembler, assemble_chat_completion, chat_to_responses

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=60)
NAME = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)
ARGS = st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=3).map(json.dumps)
CALL = st.fixed_dictionaries({"id": st.from_regex(r"call_[a-z0-9]{4,12}", fullmatch=True), "name": NAME,
                              "arguments": ARGS})


@st.composite
def conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Chat messages: user text, assistant text and/or tool calls, and each call's tool answer."""
    messages: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 5))):
        messages.append({"role": "user", "content": draw(TEXT)})
        calls = draw(st.lists(CALL, max_size=2, unique_by=lambda c: c["id"]))
        if calls or draw(st.booleans()):
            message: dict[str, Any] = {"role": "assistant", "content": draw(st.none() | TEXT)}
            if calls:
                message["tool_calls"] = [{"id": c["id"], "type": "function",
                                          "function": {"name": c["name"], "arguments": c["arguments"]}}
                                         for c in calls]
            messages.append(message)
            messages += [{"role": "tool", "tool_call_id": c["id"], "content": draw(TEXT)} for c in calls]
    return messages


@given(conversations())
def test_chat_request_to_responses_keeps_every_text_and_tool_call_in_order(messages: list[dict[str, Any]]) -> None:
    items = chat_to_responses({"model": "gpt-5.5", "messages": messages})["input"]
    expected: list[tuple[Any, ...]] = []
    for m in messages:
        if m["role"] in ("user", "assistant") and m.get("content"):
            expected.append((m["role"], m["content"]))
        for call in m.get("tool_calls", []):
            expected.append(("call", call["id"], call["function"]["name"], call["function"]["arguments"]))
        if m["role"] == "tool":
            expected.append(("output", m["tool_call_id"], m["content"]))
    got: list[tuple[Any, ...]] = []
    for item in items:
        if item["type"] == "message":
            got.append((item["role"], "".join(part["text"] for part in item["content"])))
        elif item["type"] == "function_call":
            got.append(("call", item["call_id"], item["name"], item["arguments"]))
        else:
            got.append(("output", item["call_id"], item["output"]))
    assert got == expected


USAGE = st.tuples(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6))


def answer_events(kind: str, text: str, parts: int, name: str, usage: tuple[int, int, int, int]) -> list[Any]:
    prompt, cached, output, reasoning = usage
    plan = TurnPlan("resp_1", 1_700_000_000, "gpt-5.5", {"model": "gpt-5.5"}, kind=kind,
                    deltas=split_evenly(text, parts), item_id="msg_1", call_id="call_1", tool_name=name,
                    usage=usage_block(prompt + cached, cached, output + reasoning, reasoning))
    return build_events(plan)


@given(st.sampled_from(["text", "function_call"]), TEXT, st.integers(1, 12), NAME, USAGE)
def test_responses_answer_to_chat_keeps_text_tool_call_and_usage_streamed_or_not(
        kind: str, text: str, parts: int, name: str, usage: tuple[int, int, int, int]) -> None:
    events = answer_events(kind, text, parts, name, usage)
    prompt, cached, output, reasoning = usage
    expected_usage = {"prompt_tokens": prompt + cached, "completion_tokens": output + reasoning,
                      "total_tokens": prompt + cached + output + reasoning,
                      "prompt_tokens_details": {"cached_tokens": cached},
                      "completion_tokens_details": {"reasoning_tokens": reasoning}}

    whole = assemble_chat_completion(events, "gpt-5.5")
    message = whole["choices"][0]["message"]
    assert whole["usage"] == expected_usage
    translator = ChatStreamTranslator("gpt-5.5", include_usage=True)
    frames = [frame for event in events for frame in translator.feed(event)] + translator.finish()
    chunks = [json.loads(f[6:]) for f in b"".join(frames).split(b"\n\n") if f.startswith(b"data: {")]
    deltas = [c["choices"][0]["delta"] for c in chunks if c.get("choices")]
    assert [c["usage"] for c in chunks if c.get("usage")] == [expected_usage]
    if kind == "text":
        assert message["content"] == text
        assert "".join(d.get("content") or "" for d in deltas) == text
    else:
        [call] = message["tool_calls"]
        assert (call["id"], call["function"]["name"], call["function"]["arguments"]) == ("call_1", name, text)
        streamed = [t for d in deltas for t in d.get("tool_calls", [])]
        assert streamed[0]["id"] == "call_1" and streamed[0]["function"]["name"] == name
        assert "".join(t["function"].get("arguments", "") for t in streamed) == text


@given(TEXT, st.integers(1, 12), USAGE)
def test_responses_assembler_keeps_text_and_usage(text: str, parts: int, usage: tuple[int, int, int, int]) -> None:
    assembler = ResponseAssembler()
    for event in answer_events("text", text, parts, "f", usage):
        assembler.feed(event)
    result = assembler.result()
    assert "".join(p["text"] for item in result["output"] for p in item.get("content", [])) == text
    assert result["usage"]["input_tokens"] == usage[0] + usage[1]
    assert result["usage"]["output_tokens"] == usage[2] + usage[3]
