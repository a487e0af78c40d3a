"""The real ``openai`` package against ``/v1``: responses, chat completions, models."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest

from codexlb.testing.harness import ProxyHarness

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


@pytest.fixture(name="client")
async def _client(proxy: ProxyHarness) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key="unused", max_retries=0)
    async with client:
        yield client


async def test_responses_create(client: openai.AsyncOpenAI, proxy: ProxyHarness) -> None:
    response = await client.responses.create(model="gpt-5.5", input="say hi", temperature=0.2,
                                             max_output_tokens=50)
    assert response.status == "completed"
    assert response.output_text.startswith("Hello from the fake")
    assert response.usage is not None and response.usage.output_tokens > 0
    forwarded = proxy.fake.requests_for("responses")[-1].json
    assert forwarded["stream"] is True and forwarded["store"] is False
    assert "temperature" not in forwarded and "max_output_tokens" not in forwarded


async def test_responses_create_streamed(client: openai.AsyncOpenAI) -> None:
    stream = await client.responses.create(model="gpt-5.5", input="say hi", stream=True)
    kinds = [event.type async for event in stream]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    assert not any(kind.startswith("codex.") for kind in kinds)


async def test_responses_stream_helper(client: openai.AsyncOpenAI) -> None:
    async with client.responses.stream(model="gpt-5.5", input="say hi") as stream:
        deltas = [event.delta async for event in stream if event.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(deltas) == final.output_text and final.output_text


async def test_chat_completion(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="gpt-5.5", messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert choice.message.content and completion.usage and completion.usage.total_tokens > 0


async def test_chat_completion_streamed_with_usage(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(model="gpt-5.5", stream=True,
                                                  stream_options={"include_usage": True},
                                                  messages=[{"role": "user", "content": "hi"}])
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Hello from the fake")
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    assert len({c.id for c in chunks}) == 1


async def test_chat_stream_helper(client: openai.AsyncOpenAI) -> None:
    async with client.chat.completions.stream(model="gpt-5.5", messages=[{"role": "user", "content": "hi"}]) as s:
        final = await s.get_final_completion()
    assert final.choices[0].message.content


async def test_chat_tool_calls_both_ways(client: openai.AsyncOpenAI, proxy: ProxyHarness) -> None:
    messages: list[dict] = [{"role": "user", "content": "weather in Paris? call tool get_weather"}]
    first = await client.chat.completions.create(model="gpt-5.5", messages=messages, tools=TOOLS)
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'}]
    second = await client.chat.completions.create(model="gpt-5.5", messages=messages, tools=TOOLS)
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.content
    forwarded = proxy.fake.requests_for("responses")[-1].json
    kinds = [item.get("type") for item in forwarded["input"]]
    assert "function_call" in kinds and "function_call_output" in kinds
    assert forwarded["tools"][0]["name"] == "get_weather"


async def test_chat_tool_call_streamed(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="gpt-5.5", stream=True, tools=TOOLS, tool_choice="required",
        messages=[{"role": "user", "content": "weather?"}])
    chunks = [chunk async for chunk in stream]
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].function.name == "get_weather"
    arguments = "".join(tc.function.arguments or "" for tc in calls)
    assert '"city"' in arguments
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


async def test_models_list(client: openai.AsyncOpenAI) -> None:
    models = [m.id async for m in client.models.list()]
    assert models and all(isinstance(m, str) for m in models)
