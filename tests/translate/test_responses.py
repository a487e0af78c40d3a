from __future__ import annotations

import copy
import json

import httpx
import openai
import pytest
from openai.types.responses import Response
from openai.types.responses.response_create_params import ResponseCreateParamsStreaming
from pydantic import TypeAdapter

from codexlb.errors import FlowError, UpstreamError
from codexlb.sse import SSEScanner
from codexlb.sse_frames import format_event
from codexlb.translate import UNSUPPORTED_UPSTREAM_FIELDS, prepare_responses_request
from codexlb.translate.responses import ResponseAssembler, ResponseFailed, error_from_event
from codexlb.types import TokenUsage

STREAMING_PARAMS = TypeAdapter(ResponseCreateParamsStreaming)


def validate_response(result: dict) -> Response:
    """``Response.model_validate`` after filling ``cache_write_tokens``, which openai 3.57 requires but
    the Codex backend does not send (the SDK itself builds responses without validation)."""
    result = copy.deepcopy(result)
    details = (result.get("usage") or {}).get("input_tokens_details")
    if isinstance(details, dict):
        details.setdefault("cache_write_tokens", 0)
    return Response.model_validate(result)


# --------------------------------------------------------------------------- request


def test_sdk_requests_become_valid_upstream_bodies(sdk_requests) -> None:
    bodies = sdk_requests("responses")
    assert len(bodies) == 4
    for body in bodies:
        before = copy.deepcopy(body)
        out = prepare_responses_request(body)
        assert body == before  # not mutated
        assert out["stream"] is True and out["store"] is False
        assert isinstance(out["instructions"], str)
        assert isinstance(out["input"], list)
        STREAMING_PARAMS.validate_python(out)


def test_string_input_becomes_one_user_message(sdk_requests) -> None:
    out = prepare_responses_request(sdk_requests("responses")[0])
    assert out == {
        "model": "gpt-5.5",
        "stream": True,
        "store": False,
        "instructions": "",
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "say hi"}]}],
    }


def test_sdk_request_with_tools_keeps_everything_it_can(sdk_requests) -> None:
    out = prepare_responses_request(sdk_requests("responses")[3])
    assert out["instructions"] == "Be brief."
    assert out["input"] == [{"role": "user", "content": "say hi"}]
    assert out["reasoning"] == {"effort": "low"}
    assert out["tools"][0]["name"] == "get_time"


def test_unsupported_fields_are_stripped() -> None:
    body = {"model": "gpt-5.4", "input": "x", "max_output_tokens": 5, "metadata": {"a": "b"},
            "prompt_cache_retention": "24h", "safety_identifier": "u", "temperature": 0.2, "top_p": 0.9,
            "truncation": "auto", "user": "me", "prompt_cache_key": "k", "service_tier": "fast"}
    out = prepare_responses_request(body)
    assert set(UNSUPPORTED_UPSTREAM_FIELDS) == {
        "max_output_tokens", "metadata", "prompt_cache_retention", "safety_identifier",
        "temperature", "top_p", "truncation", "user"}
    assert not set(UNSUPPORTED_UPSTREAM_FIELDS) & set(out)
    assert out["prompt_cache_key"] == "k"
    assert out["service_tier"] == "priority"


def test_store_and_stream_are_forced() -> None:
    out = prepare_responses_request({"model": "m", "input": [], "store": True, "stream": False})
    assert (out["store"], out["stream"]) == (False, True)


def test_native_codex_request_passes_through(codex_request) -> None:
    out = prepare_responses_request(codex_request)
    assert out == {**codex_request, "instructions": ""}
    assert out["input"] is not codex_request["input"]


@pytest.mark.parametrize(("body", "message"), [
    ([], "JSON object"),
    ({"input": "x"}, "'model'"),
    ({"model": "m"}, "'input' is required"),
    ({"model": "m", "input": 3}, "string or an array"),
    ({"model": "m", "input": "x", "instructions": ["a"]}, "'instructions'"),
    ({"model": "m", "input": "x", "include": ["nope"]}, "Unsupported include value: nope"),
    ({"model": "m", "input": "x", "truncation": "middle"}, "truncation"),
    ({"model": "m", "input": "x", "conversation": "c", "previous_response_id": "r"}, "not both"),
    ({"model": "m", "input": "x", "tools": [{"type": "file_search"}]}, "Unsupported tool type: file_search"),
    ({"model": "m", "input": "x", "tools": [{"type": "computer_use_preview"}]}, "computer_use_preview"),
    ({"model": "m", "input": "x", "tools": {"type": "function"}}, "array"),
])
def test_invalid_requests_raise_value_error(body, message) -> None:
    with pytest.raises(ValueError, match=message):
        prepare_responses_request(body)


def test_include_allow_list_and_tool_aliases() -> None:
    out = prepare_responses_request({
        "model": "m", "input": "x", "include": ["reasoning.encrypted_content"],
        "tools": [{"type": "web_search_preview"}], "tool_choice": {"type": "web_search_preview"}})
    assert out["tools"] == [{"type": "web_search"}]
    assert out["tool_choice"] == {"type": "web_search"}


# --------------------------------------------------------------------------- assembly


def _assemble(events) -> ResponseAssembler:
    assembler = ResponseAssembler()
    for event in events:
        assembler.feed(event)
    return assembler


def test_assembler_backfills_output_from_output_item_done(text_turn) -> None:
    events = text_turn()
    assert events[-1]["response"]["output"] == []
    assembler = _assemble(events)
    assert assembler.done
    result = assembler.result()
    assert [item["type"] for item in result["output"]] == ["reasoning", "message"]
    assert result["status"] == "completed"
    assert result["usage"]["total_tokens"] == 13152
    assert "output_text" not in result
    response = validate_response(result)
    assert response.output_text == "Hello wörld"
    assert assembler.usage == TokenUsage(input=12840, cached=11904, output=312, reasoning=192)
    terminal = assembler.terminal_event
    assert terminal is not None and terminal["type"] == "response.completed"
    assert terminal["response"]["output"] == result["output"]
    assert terminal["sequence_number"] == events[-1]["sequence_number"]


def test_assembler_orders_items_by_output_index_and_keeps_a_populated_output(text_turn) -> None:
    events = text_turn()
    done = [e for e in events if e["type"] == "response.output_item.done"]
    rest = [e for e in events if e["type"] != "response.output_item.done"]
    result = _assemble(rest[:-1] + done[::-1] + rest[-1:]).result()
    assert [item["type"] for item in result["output"]] == ["reasoning", "message"]
    populated = copy.deepcopy(events)
    populated[-1]["response"]["output"] = [{"type": "message", "id": "x", "role": "assistant",
                                            "status": "completed", "content": []}]
    assert _assemble(populated).result()["output"][0]["id"] == "x"


def test_incomplete_is_a_result_not_an_error(text_turn) -> None:
    result = _assemble(text_turn(terminal="incomplete")).result()
    assert result["status"] == "incomplete"
    assert result["incomplete_details"] == {"reason": "max_output_tokens"}
    assert validate_response(result).output_text == "Hello wörld"


def test_failed_raises_with_status_code_and_retry_hint(failed_event) -> None:
    assembler = _assemble([failed_event])
    assert assembler.done
    with pytest.raises(ResponseFailed) as info:
        assembler.result()
    err = info.value
    assert isinstance(err, UpstreamError) and isinstance(err, FlowError)
    assert (err.status, err.code, err.retryable) == (429, "rate_limit_exceeded", True)
    assert err.cooldown_seconds == pytest.approx(11.054)
    assert err.phase == "stream"
    assert err.body() == {"error": {"message": failed_event["response"]["error"]["message"],
                                    "type": "server_error", "code": "rate_limit_exceeded"}}


def test_truncated_stream_raises(text_turn) -> None:
    assembler = _assemble(text_turn()[:-1])
    assert not assembler.done
    with pytest.raises(ResponseFailed) as info:
        assembler.result()
    assert info.value.code == "stream_incomplete" and info.value.retryable


def test_events_after_the_terminal_one_are_ignored(text_turn, failed_event) -> None:
    result = _assemble([*text_turn(), failed_event]).result()
    assert result["status"] == "completed"


@pytest.mark.parametrize(("payload", "expected"), [
    ({"type": "error", "sequence_number": 2, "code": "server_error", "message": "boom", "param": None},
     (502, "server_error", "server_error", True)),
    ({"type": "error", "error": {"type": "invalid_request_error", "code": "context_length_exceeded",
                                 "message": "Your input exceeds the context window of this model."}},
     (400, "context_length_exceeded", "invalid_request_error", False)),
    ({"type": "error", "status": 429,
      "error": {"type": "usage_limit_reached", "message": "The usage limit has been reached",
                "plan_type": "pro", "resets_at": 1738888888},
      "headers": {"x-codex-primary-used-percent": "100.0"}},
     (429, "usage_limit_reached", "usage_limit_reached", True)),
    ({"type": "response.failed", "response": {"status": "failed", "error": {
        "code": "server_is_overloaded", "message": "Our servers are currently overloaded."}}},
     (503, "server_is_overloaded", "server_error", True)),
    ({"type": "response.failed", "response": {"status": "failed", "error": {
        "code": "invalid_request_error",
        "message": "Selected model is at capacity. Please try a different model."}}},
     (400, "invalid_request_error", "invalid_request_error", True)),
    ({"type": "response.failed", "response": {"status": "failed", "error": None}},
     (502, "upstream_error", "server_error", True)),
])
def test_error_shapes(payload, expected) -> None:
    err = error_from_event(payload)
    assert err is not None
    assert (err.status, err.code, err.type, err.retryable) == expected
    assert err.message


def test_quota_error_fields_are_copied() -> None:
    err = error_from_event({"type": "error", "status": 429, "error": {
        "type": "usage_limit_reached", "message": "The usage limit has been reached",
        "plan_type": "plus", "resets_at": 1787825394, "resets_in_seconds": 8070}})
    assert err is not None
    assert err.upstream_status == 429 and err.reset_at == 1787825394
    assert err.body()["error"] == {"message": "The usage limit has been reached", "type": "usage_limit_reached",
                                   "code": "usage_limit_reached", "plan_type": "plus",
                                   "resets_at": 1787825394, "resets_in_seconds": 8070}
    assert error_from_event({"type": "response.completed"}) is None


# --------------------------------------------------------------------------- end to end with the SDK


def _sdk_client(handler) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-test", base_url="http://codexlb.test/v1", max_retries=0,
                         http_client=httpx.Client(transport=httpx.MockTransport(handler)))


def test_sdk_reads_the_assembled_non_stream_response(text_turn) -> None:
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(prepare_responses_request(json.loads(request.content)))
        wire = b"".join(format_event(e["type"], e) for e in text_turn())
        assembler = ResponseAssembler()
        for event in SSEScanner(1 << 20).feed(wire):
            assembler.feed(event.json())
        return httpx.Response(200, json=assembler.result())

    with _sdk_client(handler) as client:
        response = client.responses.create(model="gpt-5.5", input="say hi")
    assert response.output_text == "Hello wörld"
    assert response.usage is not None and response.usage.input_tokens_details.cached_tokens == 11904
    assert seen[0]["input"][0]["content"][0]["text"] == "say hi"
