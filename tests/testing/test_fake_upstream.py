"""The fake upstream's backend endpoints: SSE answers, headers, validation, usage, models, recording."""

from __future__ import annotations

import gzip
import json

import httpx
import pytest
import zstandard

from codexlb.testing.fake_sse import parse_sse, sample_request
from codexlb.testing.fake_upstream import FakeAccount, FakeUpstream

TEXT_SEQUENCE = [
    "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
    *["response.output_text.delta"] * 5,
    "response.output_text.done", "response.content_part.done", "response.output_item.done",
    "response.completed",
]


async def post(fake_client: httpx.AsyncClient, body: dict | None = None, **kw) -> httpx.Response:
    return await fake_client.post("/codex/responses", json=sample_request() if body is None else body, **kw)


async def test_text_answer_has_full_event_sequence(fake_client: httpx.AsyncClient) -> None:
    response = await post(fake_client, sample_request(model="gpt-5.4"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    events = parse_sse(response.content)
    assert events[0][0] == "codex.rate_limits" and "sequence_number" not in events[0][1]
    names = [name for name, _ in events[1:]]
    assert names == TEXT_SEQUENCE
    assert [data["type"] for _, data in events] == [name for name, _ in events]
    assert [data["sequence_number"] for _, data in events[1:]] == list(range(len(TEXT_SEQUENCE)))
    deltas = [data["delta"] for name, data in events if name == "response.output_text.delta"]
    done = dict(events)["response.output_text.done"]
    assert done["text"] == "".join(deltas) and all(d for d in deltas)
    item_ids = {data.get("item_id") for name, data in events if "item_id" in data}
    assert len(item_ids) == 1 and next(iter(item_ids)).startswith("msg_")
    completed = events[-1][1]["response"]
    assert completed["id"].startswith("resp_") and len(completed["id"]) == 53
    assert completed["model"] == "gpt-5.4" and completed["status"] == "completed" and completed["output"] == []
    usage = completed["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["input_tokens_details"]["cached_tokens"] == 0
    assert usage["output_tokens_details"]["reasoning_tokens"] > 0


async def test_response_headers_reflect_account_state(fake: FakeUpstream, fake_client: httpx.AsyncClient,
                                                      fake_account: FakeAccount) -> None:
    fake_account.set_usage(primary=37.5, secondary=11.2)
    fake_account.credits_has_credits, fake_account.credits_balance = True, "9.99"
    headers = (await post(fake_client)).headers
    assert headers["x-codex-primary-used-percent"] == "37.5"
    assert headers["x-codex-secondary-used-percent"] == "11.2"
    assert headers["x-codex-primary-window-minutes"] == "300"
    assert headers["x-codex-secondary-window-minutes"] == "10080"
    assert int(headers["x-codex-primary-reset-at"]) == fake_account.primary.reset_at
    assert 0 < int(headers["x-codex-primary-reset-after-seconds"]) <= 300 * 60
    assert headers["x-codex-credits-has-credits"] == "true" and headers["x-codex-credits-balance"] == "9.99"
    assert headers["x-codex-plan-type"] == "plus" and headers["openai-model"] == "gpt-5.5"
    assert headers["x-models-etag"].startswith('W/"') and headers["x-codex-turn-state"].startswith("ts_")
    echoed = await post(fake_client, headers={"x-codex-turn-state": "ts-mine"})
    assert echoed.headers["x-codex-turn-state"] == "ts-mine"


async def test_usage_grows_per_response_and_is_reported_everywhere(fake_client: httpx.AsyncClient,
                                                                   fake_account: FakeAccount) -> None:
    first = await post(fake_client)
    second = await post(fake_client)
    assert first.headers["x-codex-primary-used-percent"] == "0"
    assert second.headers["x-codex-primary-used-percent"] == "0.1"
    assert parse_sse(second.content)[0][1]["rate_limits"]["primary"]["used_percent"] == 0.1
    usage = (await fake_client.get("/wham/usage")).json()
    assert usage["rate_limit"]["primary_window"]["used_percent"] == 0.2
    assert usage["rate_limit"]["secondary_window"]["used_percent"] == 0.02
    assert fake_account.responses_served == 2


async def test_exhausted_account_answers_usage_limit(fake_client: httpx.AsyncClient, fake_account: FakeAccount) -> None:
    fake_account.set_usage(primary=100)
    response = await post(fake_client)
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["type"] == "usage_limit_reached" and error["resets_at"] == fake_account.primary.reset_at
    assert response.headers["x-codex-primary-used-percent"] == "100"


async def test_prompt_cache_is_per_account_and_key(fake: FakeUpstream, fake_client: httpx.AsyncClient) -> None:
    def cached(response: httpx.Response) -> int:
        return parse_sse(response.content)[-1][1]["response"]["usage"]["input_tokens_details"]["cached_tokens"]

    body = sample_request(prompt_cache_key="thread-a")
    assert cached(await post(fake_client, body)) == 0
    assert cached(await post(fake_client, body)) > 0
    assert cached(await post(fake_client, sample_request(prompt_cache_key="thread-b"))) == 0
    other = fake.add_account()
    assert cached(await post(fake_client, body, headers=other.headers())) == 0


@pytest.mark.parametrize(
    ("overrides", "detail"),
    [
        ({"store": True}, "Store must be set to false"),
        ({"store": True, "stream": False}, "Store must be set to false"),
        ({"stream": False}, "Stream must be set to true"),
        ({"temperature": 0.2}, "Unsupported parameter: temperature"),
        ({"max_output_tokens": 10}, "Unsupported parameter: max_output_tokens"),
    ],
)
async def test_backend_rejects_invalid_bodies(fake_client: httpx.AsyncClient, overrides: dict, detail: str) -> None:
    response = await post(fake_client, sample_request(**overrides))
    assert response.status_code == 400 and response.json() == {"detail": detail}


async def test_missing_store_counts_as_true(fake_client: httpx.AsyncClient) -> None:
    body = sample_request()
    del body["store"]
    assert (await post(fake_client, body)).json() == {"detail": "Store must be set to false"}


@pytest.mark.parametrize("encoding", ["zstd", "gzip"])
async def test_compressed_bodies_are_accepted_and_recorded(fake: FakeUpstream, fake_client: httpx.AsyncClient,
                                                           encoding: str) -> None:
    plain = json.dumps(sample_request()).encode()
    wire = zstandard.ZstdCompressor(level=3).compress(plain) if encoding == "zstd" else gzip.compress(plain)
    response = await fake_client.post("/codex/responses", content=wire,
                                 headers={"Content-Encoding": encoding, "Content-Type": "application/json"})
    assert response.status_code == 200
    record = fake.requests[-1]
    assert record.raw_body == wire and record.body == plain and record.json["model"] == "gpt-5.5"


async def test_undecodable_body_is_a_400(fake_client: httpx.AsyncClient) -> None:
    response = await fake_client.post("/codex/responses", content=b"not zstd", headers={"Content-Encoding": "zstd"})
    assert response.status_code == 400 and "zstd" in response.json()["detail"]


WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "Weather", "strict": False,
                "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                                "days": {"type": "integer"}},
                               "required": ["city", "days"]}}
SHELL_TOOL = {"type": "function", "name": "shell", "parameters": {"type": "object", "properties": {}}}


async def test_call_tool_trigger_answers_with_function_call(fake_client: httpx.AsyncClient) -> None:
    body = sample_request("please call tool get_weather", tools=[SHELL_TOOL, WEATHER_TOOL])
    events = parse_sse((await post(fake_client, body)).content)
    names = [name for name, _ in events[1:]]
    assert names[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert names[-3:] == ["response.function_call_arguments.done", "response.output_item.done",
                          "response.completed"]
    assert set(names[3:-3]) == {"response.function_call_arguments.delta"}
    item = dict(events)["response.output_item.done"]["item"]
    assert item["type"] == "function_call" and item["name"] == "get_weather"
    assert item["call_id"].startswith("call_") and item["id"].startswith("fc_")
    deltas = "".join(d["delta"] for n, d in events if n == "response.function_call_arguments.delta")
    assert json.loads(deltas) == json.loads(item["arguments"]) == {"city": "fake", "days": 1}
    assert events[-1][1]["response"]["end_turn"] is False


async def test_tool_choice_required_and_named(fake_client: httpx.AsyncClient) -> None:
    required = parse_sse((await post(fake_client, sample_request(tools=[SHELL_TOOL], tool_choice="required"))).content)
    assert dict(required)["response.output_item.done"]["item"]["name"] == "shell"
    named = sample_request(tools=[SHELL_TOOL, WEATHER_TOOL], tool_choice={"type": "function", "name": "get_weather"})
    assert dict(parse_sse((await post(fake_client, named)).content))["response.output_item.done"]["item"]["name"] == (
        "get_weather")


async def test_tool_output_turn_and_plain_prompts_get_text(fake_client: httpx.AsyncClient) -> None:
    body = sample_request("call tool", tools=[SHELL_TOOL])
    body["input"] += [{"type": "function_call", "call_id": "call_1", "name": "shell", "arguments": "{}"},
                      {"type": "function_call_output", "call_id": "call_1", "output": "ok"}]
    assert dict(parse_sse((await post(fake_client, body)).content))["response.output_item.done"]["item"]["type"] == (
        "message")
    no_tools = parse_sse((await post(fake_client, sample_request("call tool please"))).content)
    assert dict(no_tools)["response.output_item.done"]["item"]["type"] == "message"


async def test_reasoning_summary_and_compaction_trigger() -> None:
    async with FakeUpstream(events=2, reasoning=True, rate_limits_event=False, populate_output=True) as fake:
        fake_account = fake.add_account()
        async with httpx.AsyncClient(base_url=fake.base_url, headers=fake_account.headers()) as http:
            events = parse_sse((await post(http)).content)
            compact = sample_request()
            compact["input"].append({"type": "compaction_trigger"})
            compaction = parse_sse((await post(http, compact)).content)
    assert events[0][0] == "response.created"
    assert "response.reasoning_summary_text.delta" in dict(events)
    output = events[-1][1]["response"]["output"]
    assert [item["type"] for item in output] == ["reasoning", "message"]
    assert output[0]["encrypted_content"].startswith("gAAAA")
    assert dict(compaction)["response.output_item.done"]["item"]["type"] == "compaction"


async def test_reply_text_is_split_into_deltas() -> None:
    async with FakeUpstream(events=4, reply_text="Hello there, proxy!") as fake:
        fake_account = fake.add_account()
        async with httpx.AsyncClient(base_url=fake.base_url, headers=fake_account.headers()) as http:
            events = parse_sse((await post(http)).content)
    deltas = [d["delta"] for n, d in events if n == "response.output_text.delta"]
    assert len(deltas) == 4 and "".join(deltas) == "Hello there, proxy!"


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"Authorization": ""}, None),
        ({"Authorization": "Bearer not-a-token"}, "token_invalid"),
        ({"chatgpt-account-id": "acct-other"}, "account_mismatch"),
    ],
)
async def test_authentication_failures(fake_client: httpx.AsyncClient, headers: dict, code: str | None) -> None:
    response = await post(fake_client, headers=headers)
    assert response.status_code == 401
    assert (response.json().get("error") or {}).get("code") == code


async def test_missing_account_header_and_expired_token(fake: FakeUpstream, fake_account: FakeAccount) -> None:
    async with httpx.AsyncClient(base_url=fake.base_url) as http:
        bare = await post(http, headers={"Authorization": f"Bearer {fake_account.access_token}"})
        assert bare.status_code == 401
        fake_account.expire_access_token()
        expired = await post(http, headers=fake_account.headers())
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "token_expired"


async def test_models_catalog_with_etag(fake: FakeUpstream, fake_client: httpx.AsyncClient) -> None:
    response = await fake_client.get("/codex/models", params={"client_version": "0.169.0"})
    assert response.status_code == 200
    slugs = [m["slug"] for m in response.json()["models"]]
    assert "gpt-5.6-sol" in slugs and "gpt-5.5" in slugs
    etag = response.headers["etag"]
    cached = await fake_client.get("/codex/models", params={"client_version": "0.169.0"},
                              headers={"If-None-Match": etag})
    assert cached.status_code == 304 and cached.headers["etag"] == etag
    old = await fake_client.get("/codex/models", params={"client_version": "0.110.0"})
    assert "gpt-5.6-sol" not in [m["slug"] for m in old.json()["models"]] and old.headers["etag"] != etag
    free = fake.add_account(plan_type="free")
    free_models = (await fake_client.get("/codex/models", headers=free.headers())).json()["models"]
    assert {m["slug"] for m in free_models} == {"gpt-5.5", "gpt-5.4", "gpt-5.1-codex-mini"}


async def test_strict_models_rejects_models_outside_the_plan() -> None:
    async with FakeUpstream(strict_models=True) as fake:
        fake_account = fake.add_account(plan_type="plus")
        async with httpx.AsyncClient(base_url=fake.base_url, headers=fake_account.headers()) as http:
            response = await post(http, sample_request(model="gpt-5.3-codex"))
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "The 'gpt-5.3-codex' model is not supported when using Codex with a ChatGPT account.")


async def test_usage_endpoint_shape_and_alias(fake: FakeUpstream, fake_client: httpx.AsyncClient,
                                              fake_account: FakeAccount) -> None:
    fake_account.set_usage(primary=12.5, secondary=76)
    usage = (await fake_client.get("/wham/usage")).json()
    assert usage["plan_type"] == "plus" and usage["email"] == "one@example.com"
    primary = usage["rate_limit"]["primary_window"]
    assert primary["used_percent"] == 12.5 and primary["limit_window_seconds"] == 18000
    assert primary["reset_at"] == fake_account.primary.reset_at
    assert usage["rate_limit"]["secondary_window"]["used_percent"] == 76
    assert usage["credits"]["balance"] == "0" and usage["rate_limit"]["allowed"] is True
    async with httpx.AsyncClient(base_url=fake.auth_base_url, headers=fake_account.headers()) as http:
        alias = (await http.get("/api/codex/usage")).json()
    for body in (usage, alias):  # counted from the real clock: may tick between the two calls
        for window in ("primary_window", "secondary_window"):
            body["rate_limit"][window].pop("reset_after_seconds")
    assert alias == usage


async def test_single_window_plan(fake: FakeUpstream) -> None:
    weekly = fake.add_account(primary_window_minutes=10080, secondary_window_minutes=None)
    async with httpx.AsyncClient(base_url=fake.base_url, headers=weekly.headers()) as http:
        usage = (await http.get("/wham/usage")).json()
        headers = (await post(http)).headers
    assert usage["rate_limit"]["secondary_window"] is None
    assert headers["x-codex-primary-window-minutes"] == "10080" and "x-codex-secondary-used-percent" not in headers


async def test_accounts_check_settings_websocket_and_404(fake_client: httpx.AsyncClient) -> None:
    check = (await fake_client.get("/wham/accounts/check")).json()
    assert check["account_ordering"] == ["acct-fake-0001"] and check["accounts"][0]["id"] == "acct-fake-0001"
    assert (await fake_client.get("/wham/settings/user")).json() == {}
    assert (await fake_client.get("/codex/responses")).status_code == 426
    missing = await fake_client.get("/nope")
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}


async def test_requests_are_recorded_with_wire_headers(fake: FakeUpstream, fake_client: httpx.AsyncClient) -> None:
    await fake_client.get("/codex/models?client_version=0.169.0", headers={"X-Custom-Case": "Yes", "session-id": "s1"})
    await post(fake_client)
    models, responses = fake.requests
    assert models.method == "GET" and models.path == "/backend-api/codex/models"
    assert models.query == {"client_version": "0.169.0"} and models.endpoint == "models"
    assert "X-Custom-Case" in models.headers.names() and models.headers.get("x-custom-case") == "Yes"
    assert models.headers["SESSION-ID"] == "s1" and models.account_id == "acct-fake-0001"
    assert responses.json["model"] == "gpt-5.5" and responses.endpoint == "responses"
    assert fake.requests_for("responses", "acct-fake-0001") == [responses]


async def test_compact_endpoint_keeps_user_messages(fake_client: httpx.AsyncClient) -> None:
    body = {"model": "gpt-5.5", "input": sample_request("keep me")["input"]}
    output = (await fake_client.post("/codex/responses/compact", json=body)).json()["output"]
    assert output[0]["content"][0]["text"] == "keep me" and output[-1]["type"] == "compaction"


async def test_windows_roll_over_and_tokens_expire_with_the_clock() -> None:
    now = [1_800_000_000.0]
    async with FakeUpstream(clock=lambda: now[0]) as fake:
        fake_account = fake.add_account(primary_used_percent=100, access_token_ttl=7 * 3600)
        async with httpx.AsyncClient(base_url=fake.base_url, headers=fake_account.headers()) as http:
            assert (await post(http)).status_code == 429
            now[0] += 5 * 3600
            rolled = await post(http)
            assert rolled.status_code == 200 and rolled.headers["x-codex-primary-used-percent"] == "0"
            assert int(rolled.headers["x-codex-primary-reset-at"]) == 1_800_000_000 + 10 * 3600
            now[0] += 2 * 3600
            expired = await post(http)
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "token_expired"
