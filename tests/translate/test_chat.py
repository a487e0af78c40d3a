from __future__ import annotations

import copy
import json

import httpx
import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types import Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses.response_create_params import ResponseCreateParamsStreaming
from pydantic import TypeAdapter

from codexlb.sse import SSEScanner
from codexlb.sse_frames import format_event
from codexlb.translate import (
    ChatStreamTranslator,
    ResponseFailed,
    assemble_chat_completion,
    chat_to_responses,
    models_to_openai_list,
)

STREAMING_PARAMS = TypeAdapter(ResponseCreateParamsStreaming)


def _frames_to_payloads(frames: list[bytes]) -> list[dict | str]:
    out: list[dict | str] = []
    for frame in frames:
        assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
        body = frame[6:-2]
        out.append("[DONE]" if body == b"[DONE]" else json.loads(body))
    return out


def _translate(events, include_usage: bool = False, **kw) -> list[dict | str]:
    translator = ChatStreamTranslator("gpt-5.5", include_usage, completion_id="chatcmpl-abc", created=7, **kw)
    frames: list[bytes] = []
    for event in events:
        frames += translator.feed(event)
    frames += translator.finish()
    assert translator.finish() == []
    return _frames_to_payloads(frames)


# --------------------------------------------------------------------------- request


def test_sdk_chat_requests_translate(sdk_requests) -> None:
    bodies = sdk_requests("chat_completions")
    assert len(bodies) == 3
    for body in bodies:
        before = copy.deepcopy(body)
        out = chat_to_responses(body)
        assert body == before
        assert out == {
            "model": "gpt-5.5", "instructions": "", "store": False, "stream": True,
            "input": [{"type": "message", "role": "user",
                       "content": [{"type": "input_text", "text": "say hi"}]}],
        }
        STREAMING_PARAMS.validate_python(out)


FULL_CHAT = {
    "model": "gpt-5.4",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
        {"role": "user", "name": "bob", "content": [
            {"type": "text", "text": "What is in this image, and what time is it?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR", "detail": "low"}},
        ]},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{\"tz\":\"UTC\"}"}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "12:00"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_2", "content": "12:01"},
    ],
    "tools": [
        {"type": "function", "function": {"name": "get_time", "description": "Current time",
                                          "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}},
        {"type": "function", "function": {"name": "noop", "strict": True}},
    ],
    "tool_choice": {"type": "function", "function": {"name": "get_time"}},
    "parallel_tool_calls": False,
    "response_format": {"type": "json_schema", "json_schema": {
        "name": "answer", "strict": True,
        "schema": {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
                   "additionalProperties": False}}},
    "reasoning_effort": "high",
    "verbosity": "low",
    "service_tier": "priority",
    "stream": True, "stream_options": {"include_usage": True},
    "max_tokens": 100, "max_completion_tokens": 100, "temperature": 0.3, "top_p": 1, "n": 1,
    "stop": ["\n"], "seed": 1, "user": "u", "metadata": {"k": "v"}, "store": True,
    "frequency_penalty": 0, "presence_penalty": 0, "logit_bias": {},
}


def test_full_chat_request_translation() -> None:
    out = chat_to_responses(FULL_CHAT)
    assert out["instructions"] == "You are terse.\nUse tools."
    assert out["input"] == [
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "What is in this image, and what time is it?"},
            {"type": "input_image", "image_url": "data:image/png;base64,iVBOR", "detail": "low"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me check."}]},
        {"type": "function_call", "call_id": "call_1", "name": "get_time", "arguments": "{\"tz\":\"UTC\"}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "12:00"},
        {"type": "function_call", "call_id": "call_2", "name": "get_time", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_2", "output": "12:01"},
    ]
    assert out["tools"] == [
        {"type": "function", "name": "get_time", "description": "Current time",
         "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}, "strict": False},
        {"type": "function", "name": "noop", "parameters": {"type": "object", "properties": {}}, "strict": True},
    ]
    assert out["tool_choice"] == {"type": "function", "name": "get_time"}
    assert out["parallel_tool_calls"] is False
    assert out["reasoning"] == {"effort": "high"}
    assert out["text"] == {"format": {"type": "json_schema", "name": "answer", "strict": True,
                                      "schema": FULL_CHAT["response_format"]["json_schema"]["schema"]},
                           "verbosity": "low"}
    assert out["service_tier"] == "priority"
    assert (out["stream"], out["store"]) == (True, False)
    for dropped in ("messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stop",
                    "seed", "user", "metadata", "stream_options", "frequency_penalty", "logit_bias"):
        assert dropped not in out
    # Assistant history uses Codex's own shape (type message + output_text parts, no id/status), which
    # the backend takes from Codex on every turn; the SDK's param types only allow that with id and status.
    typed = {**out, "input": [i for i in out["input"] if i.get("role") != "assistant"]}
    STREAMING_PARAMS.validate_python(typed)


def test_json_object_keeps_system_messages_as_input() -> None:
    out = chat_to_responses({"model": "m", "response_format": {"type": "json_object"}, "messages": [
        {"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": "hi"}]})
    assert out["instructions"] == ""
    assert out["input"][0] == {"type": "message", "role": "system",
                               "content": [{"type": "input_text", "text": "Answer in JSON."}]}
    assert out["text"] == {"format": {"type": "json_object"}}


def test_other_tool_choices_and_input_passthrough() -> None:
    allowed = {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [
        {"type": "function", "function": {"name": "a"}}]}}
    out = chat_to_responses({"model": "m", "messages": [{"role": "user", "content": "x"}],
                             "tool_choice": allowed})
    assert out["tool_choice"] == {"type": "allowed_tools", "mode": "required",
                                  "tools": [{"type": "function", "name": "a"}]}
    assert chat_to_responses({"model": "m", "messages": [{"role": "user", "content": "x"}],
                              "tool_choice": "none"})["tool_choice"] == "none"
    passthrough = chat_to_responses({"model": "m", "input": "hi", "stream_options": {"include_usage": True}})
    assert passthrough["input"][0]["content"][0]["text"] == "hi"
    assert "stream_options" not in passthrough


@pytest.mark.parametrize(("body", "message"), [
    ({"model": "m"}, "'messages'"),
    ({"model": "m", "messages": []}, "'messages'"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}, "n=1"),
    ({"model": "m", "messages": ["hi"]}, r"messages\[0\]"),
    ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "unsupported role"),
    ({"model": "m", "messages": [{"role": "function", "name": "f", "content": "x"}]}, "function"),
    ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "content"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "audio"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}]},
     "file_id"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     "image_url"),
    ({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, "tool_call_id"),
    ({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}]}, "'id'"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
     "function.name"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "image_generation"}]},
     "image_generation"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}],
      "tools": [{"type": "custom", "custom": {"name": "c"}}]}, "custom tools"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "yaml"}},
     "response_format"),
    ({"messages": [{"role": "user", "content": "x"}]}, "'model'"),
])
def test_invalid_chat_requests(body, message) -> None:
    with pytest.raises(ValueError, match=message):
        chat_to_responses(body)


# --------------------------------------------------------------------------- stream


def test_text_stream_chunks(text_turn) -> None:
    payloads = _translate(text_turn(), include_usage=True)
    assert payloads[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(p) for p in payloads[:-1]]
    assert {(c.id, c.created, c.model) for c in chunks} == {("chatcmpl-abc", 7, "gpt-5.5")}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:] if c.choices)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello wörld"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump(exclude_none=True) == {
        "prompt_tokens": 12840, "completion_tokens": 312, "total_tokens": 13152,
        "prompt_tokens_details": {"cached_tokens": 11904},
        "completion_tokens_details": {"reasoning_tokens": 192}}
    assert all("usage" in p and p["usage"] is None for p in payloads[:-2])


def test_stream_without_usage_has_no_usage_chunk(text_turn) -> None:
    payloads = _translate(text_turn())
    assert payloads[-1] == "[DONE]"
    assert all(p["choices"] and "usage" not in p for p in payloads[:-1])
    assert payloads[-2]["choices"][0]["finish_reason"] == "stop"


def test_tool_call_stream_accumulates_in_the_sdk(tool_turn) -> None:
    payloads = _translate(tool_turn(), include_usage=True)
    state = ChatCompletionStreamState()
    for payload in payloads[:-1]:
        state.handle_chunk(ChatCompletionChunk.model_validate(payload))
    completion = state.get_final_completion()
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls or []]
    assert calls == [("call_a", "get_time", '{"tz":"UTC"}'), ("call_b", "shell", '{"command":["ls"]}')]
    first_tool_chunk = payloads[0]["choices"][0]["delta"]
    assert first_tool_chunk["role"] == "assistant"
    assert first_tool_chunk["tool_calls"][0] == {"index": 0, "id": "call_a", "type": "function",
                                                 "function": {"name": "get_time", "arguments": ""}}


def test_tool_call_arguments_only_in_done_are_sent_once(tool_turn) -> None:
    events = [e for e in tool_turn() if e["type"] != "response.function_call_arguments.delta"]
    payloads = _translate(events)
    args = [tc["function"].get("arguments", "") for p in payloads[:-1]
            for tc in p["choices"][0]["delta"].get("tool_calls", [])]
    assert "".join(args) == '{"tz":"UTC"}{"command":["ls"]}'
    without_added = [e for e in tool_turn() if e["type"] != "response.output_item.added"]
    payloads = _translate(without_added)
    state = ChatCompletionStreamState()
    for payload in payloads[:-1]:
        state.handle_chunk(ChatCompletionChunk.model_validate(payload))
    assert state.get_final_completion().choices[0].message.tool_calls is not None


def test_text_only_in_output_item_done_is_not_lost(text_turn) -> None:
    events = [e for e in text_turn() if e["type"] != "response.output_text.delta"]
    payloads = _translate(events)
    assert "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads[:-1]) == "Hello wörld"


@pytest.mark.parametrize(("reason", "finish"), [("max_output_tokens", "length"),
                                                ("content_filter", "content_filter")])
def test_incomplete_maps_finish_reason(text_turn, reason, finish) -> None:
    payloads = _translate(text_turn(terminal="incomplete", incomplete_reason=reason))
    assert payloads[-2]["choices"][0]["finish_reason"] == finish


def test_empty_response_still_sends_role_and_finish() -> None:
    payloads = _translate([{"type": "response.completed", "response": {"status": "completed", "output": []}}])
    assert payloads[0]["choices"][0] == {"index": 0, "delta": {"role": "assistant", "content": ""},
                                         "logprobs": None, "finish_reason": "stop"}
    ChatCompletionChunk.model_validate(payloads[0])


def test_failure_becomes_error_frame_then_done(text_turn, failed_event) -> None:
    translator = ChatStreamTranslator("m", False)
    frames: list[bytes] = []
    for event in [*text_turn()[:8], failed_event, *text_turn()[8:]]:
        frames += translator.feed(event)
    frames += translator.finish()
    payloads = _frames_to_payloads(frames)
    assert payloads[-1] == "[DONE]"
    assert payloads[-2] == {"error": {"message": failed_event["response"]["error"]["message"],
                                      "type": "server_error", "code": "rate_limit_exceeded", "param": None}}
    assert all("choices" in p for p in payloads[:-2])
    assert translator.error is not None and translator.error.status == 429


def test_truncated_stream_ends_with_an_error(text_turn) -> None:
    payloads = _translate(text_turn()[:-1])
    assert payloads[-1] == "[DONE]"
    assert payloads[-2]["error"]["code"] == "upstream_stream_truncated"


def test_sdk_streams_translated_chunks_end_to_end(text_turn, sdk_requests) -> None:
    upstream_texts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        upstream_texts.append(chat_to_responses(body)["input"][0]["content"][0]["text"])
        translator = ChatStreamTranslator(body["model"], body.get("stream_options", {}).get("include_usage", False))
        wire = b"".join(format_event(e["type"], e) for e in text_turn())
        frames = [f for ev in SSEScanner(1 << 20).feed(wire) for f in translator.feed(ev.json())]
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              content=b"".join(frames + translator.finish()))

    client = openai.OpenAI(api_key="sk-test", base_url="http://codexlb.test/v1", max_retries=0,
                           http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    with client:
        body = sdk_requests("chat_completions")[1]
        assert body["stream_options"] == {"include_usage": True}
        chunks = list(client.chat.completions.create(**body))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello wörld"
        assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 13152
        with client.chat.completions.stream(model="gpt-5.5", messages=[{"role": "user", "content": "x"}]) as s:
            final = s.get_final_completion()
        assert final.choices[0].message.content == "Hello wörld"
    assert upstream_texts == ["say hi", "x"]


# --------------------------------------------------------------------------- non-stream


def test_assembled_chat_completion(text_turn) -> None:
    completion = assemble_chat_completion(text_turn(), "gpt-5.5")
    parsed = ChatCompletion.model_validate(completion)
    assert parsed.id == "chatcmpl-68a1b2c3" and parsed.created == 1755041560
    assert parsed.choices[0].message.content == "Hello wörld"
    assert parsed.choices[0].message.tool_calls is None
    assert parsed.choices[0].finish_reason == "stop"
    assert completion["usage"] == {"prompt_tokens": 12840, "completion_tokens": 312, "total_tokens": 13152,
                                   "prompt_tokens_details": {"cached_tokens": 11904},
                                   "completion_tokens_details": {"reasoning_tokens": 192}}


def test_assembled_tool_call_completion(tool_turn) -> None:
    completion = assemble_chat_completion(tool_turn(), "gpt-5.5", completion_id="chatcmpl-x", created=1)
    parsed = ChatCompletion.model_validate(completion)
    message = parsed.choices[0].message
    assert message.content is None
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []] == [
        ("call_a", "get_time", '{"tz":"UTC"}'), ("call_b", "shell", '{"command":["ls"]}')]
    assert parsed.choices[0].finish_reason == "tool_calls"
    assert (parsed.id, parsed.created) == ("chatcmpl-x", 1)


def test_assembled_incomplete_and_failed(text_turn, failed_event) -> None:
    completion = assemble_chat_completion(text_turn(terminal="incomplete"), "m")
    assert completion["choices"][0]["finish_reason"] == "length"
    with pytest.raises(ResponseFailed) as info:
        assemble_chat_completion([failed_event], "m")
    assert info.value.status == 429


# --------------------------------------------------------------------------- models


def test_models_list() -> None:
    upstream = {"models": [
        {"slug": "gpt-5.6-sol", "display_name": "GPT-5.6-Sol", "visibility": "list", "supported_in_api": True},
        {"slug": "gpt-5.4", "visibility": "list"},
        {"slug": "internal", "supported_in_api": False},
        {"slug": "gpt-5.4"},
        {"display_name": "no slug"},
        "junk",
    ]}
    out = models_to_openai_list(upstream)
    assert out == {"object": "list", "data": [
        {"id": "gpt-5.6-sol", "object": "model", "created": 0, "owned_by": "openai"},
        {"id": "gpt-5.4", "object": "model", "created": 0, "owned_by": "openai"},
    ]}
    for entry in out["data"]:
        Model.model_validate(entry)
    assert models_to_openai_list([], owned_by="codexlb") == {"object": "list", "data": []}
    with pytest.raises(ValueError):
        models_to_openai_list({"detail": "Unauthorized"})
