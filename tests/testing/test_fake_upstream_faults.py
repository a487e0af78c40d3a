"""Fault injection on the fake upstream: HTTP errors, connection faults, stream faults, scoping."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from codexlb.testing.fake_faults import Fault
from codexlb.testing.fake_sse import parse_sse, sample_request
from codexlb.testing.fake_upstream import FakeAccount, FakeUpstream

ACCOUNT = "acct-fake-0001"


async def post(fake_client: httpx.AsyncClient, **kw) -> httpx.Response:
    return await fake_client.post("/codex/responses", json=sample_request(), **kw)


async def test_usage_limit_fault_body_and_headers(fake: FakeUpstream, fake_client: httpx.AsyncClient) -> None:
    fake.inject(ACCOUNT, Fault.usage_limit(resets_at=1787825394, resets_in_seconds=8070, plan_type="pro"))
    response = await post(fake_client)
    assert response.status_code == 429
    assert response.json() == {"error": {"type": "usage_limit_reached", "message": "The usage limit has been reached",
                                         "plan_type": "pro", "resets_at": 1787825394, "resets_in_seconds": 8070}}
    assert response.headers["x-codex-primary-used-percent"] == "100"
    assert response.headers["x-codex-primary-reset-at"] == "1787825394"
    assert response.headers["x-codex-active-limit"] == "codex"
    assert (await post(fake_client)).status_code == 200  # times=1


async def test_usage_limit_with_only_relative_reset(fake: FakeUpstream, fake_client: httpx.AsyncClient,
                                                   fake_account: FakeAccount) -> None:
    fake.inject(ACCOUNT, Fault.usage_limit(resets_in_seconds=60))
    fake.inject(ACCOUNT, Fault.usage_limit())
    before = int(time.time())
    relative = await post(fake_client)
    assert relative.json()["error"] == {"type": "usage_limit_reached", "plan_type": "plus",
                                        "message": "The usage limit has been reached", "resets_in_seconds": 60}
    assert before + 60 <= int(relative.headers["x-codex-primary-reset-at"]) <= int(time.time()) + 60
    error = (await post(fake_client)).json()["error"]
    assert error["resets_at"] == fake_account.primary.reset_at and 0 < error["resets_in_seconds"] <= 18000


@pytest.mark.parametrize(
    ("fault", "status", "check"),
    [
        (Fault.rate_limited(), 429, lambda body: body["error"]["code"] == "rate_limit_exceeded"),
        (Fault.token_expired(), 401, lambda body: body["error"]["code"] == "token_expired"),
        (Fault.token_invalidated(), 401, lambda body: body["error"]["code"] == "token_invalidated"),
        (Fault.server_error(), 500, lambda body: body["error"]["type"] == "server_error"),
        (Fault.server_error(503), 503, lambda body: body["error"]["code"] == "server_is_overloaded"),
        (Fault.usage_not_included(), 429, lambda body: body["error"]["type"] == "usage_not_included"),
        (Fault.status(418, {"detail": "teapot"}), 418, lambda body: body == {"detail": "teapot"}),
        (Fault.model_not_supported(), 400, lambda body: body["error"]["message"].startswith(
            "The 'gpt-5.5' model is not supported when using Codex with a ChatGPT account")),
    ],
)
async def test_json_error_faults(fake: FakeUpstream, fake_client: httpx.AsyncClient, fault: Fault, status: int,
                                 check) -> None:
    fake.inject(ACCOUNT, fault)
    response = await post(fake_client)
    assert response.status_code == status and check(response.json())


async def test_server_error_without_body(fake: FakeUpstream, fake_client: httpx.AsyncClient) -> None:
    fake.inject(ACCOUNT, Fault.server_error(502))
    response = await post(fake_client)
    assert response.status_code == 502 and response.content == b""


async def test_cloudflare_challenge(fake: FakeUpstream, fake_client: httpx.AsyncClient) -> None:
    fake.inject(ACCOUNT, Fault.cloudflare_403())
    response = await post(fake_client)
    assert response.status_code == 403 and response.headers["content-type"].startswith("text/html")
    assert response.headers["cf-mitigated"] == "challenge" and "Just a moment..." in response.text


async def test_refuse_resets_the_connection(fake: FakeUpstream, fake_client: httpx.AsyncClient) -> None:
    fake.inject(ACCOUNT, Fault.refuse())
    with pytest.raises(httpx.TransportError):
        await post(fake_client)
    assert (await post(fake_client)).status_code == 200
    assert len(fake.requests) == 2


async def test_hang_never_answers(fake: FakeUpstream, fake_client: httpx.AsyncClient) -> None:
    fake.inject(ACCOUNT, Fault.hang())
    with pytest.raises(httpx.ReadTimeout):
        await post(fake_client, timeout=0.2)
    assert (await post(fake_client)).status_code == 200


async def test_hang_is_released_by_stop() -> None:
    fake = FakeUpstream()
    await fake.start()
    fake_account = fake.add_account()
    fake.inject(None, Fault.hang(), endpoint="usage")
    async with httpx.AsyncClient(base_url=fake.base_url, headers=fake_account.headers(), timeout=5) as http:
        pending = asyncio.ensure_future(http.get("/wham/usage"))
        await fake.wait_for_request(lambda r: r.endpoint == "usage")
        await fake.stop()
        with pytest.raises(httpx.TransportError):
            await pending


async def test_drop_mid_stream_sends_n_events_then_aborts(fake: FakeUpstream, fake_client: httpx.AsyncClient) -> None:
    fake.inject(ACCOUNT, Fault.drop_mid_stream(after_events=3))
    received = b""
    with pytest.raises(httpx.TransportError):
        async with fake_client.stream("POST", "/codex/responses", json=sample_request()) as response:
            assert response.status_code == 200
            async for chunk in response.aiter_raw():
                received += chunk
    assert [name for name, _ in parse_sse(received)] == ["codex.rate_limits", "response.created",
                                                         "response.in_progress"]


async def test_oversized_event(fake: FakeUpstream, fake_client: httpx.AsyncClient) -> None:
    fake.inject(ACCOUNT, Fault.oversized_event(size_bytes=300_000))
    events = parse_sse((await post(fake_client)).content)
    deltas = [d["delta"] for n, d in events if n == "response.output_text.delta"]
    assert len(deltas[0]) == 300_000 and all(len(d) < 100 for d in deltas[1:])
    assert events[-1][0] == "response.completed"


async def test_response_failed_and_error_event(fake: FakeUpstream, fake_client: httpx.AsyncClient) -> None:
    fake.inject(ACCOUNT, Fault.response_failed("rate_limit_exceeded", "Please try again in 11.054s."))
    fake.inject(ACCOUNT, Fault.error_event("server_error", "boom"))
    failed = parse_sse((await post(fake_client)).content)
    assert [n for n, _ in failed[1:]] == ["response.created", "response.failed"]
    assert failed[-1][1]["response"]["error"]["code"] == "rate_limit_exceeded"
    error = parse_sse((await post(fake_client)).content)
    assert error[-1][1] == {"type": "error", "sequence_number": 0, "code": "server_error", "message": "boom",
                            "param": None}


async def test_slow_still_answers(fake: FakeUpstream, fake_client: httpx.AsyncClient) -> None:
    fake.inject(ACCOUNT, Fault.slow(0.01))
    assert (await post(fake_client)).status_code == 200


async def test_times_forever_and_clear(fake: FakeUpstream, fake_client: httpx.AsyncClient) -> None:
    fake.inject(ACCOUNT, Fault.server_error(), times=2)
    assert [(await post(fake_client)).status_code for _ in range(3)] == [500, 500, 200]
    fake.inject(ACCOUNT, Fault.server_error(), times=-1)
    assert [(await post(fake_client)).status_code for _ in range(3)] == [500, 500, 500]
    fake.clear_faults(ACCOUNT)
    assert (await post(fake_client)).status_code == 200
    with pytest.raises(ValueError):
        fake.inject(ACCOUNT, Fault.hang(), endpoint="nowhere")


async def test_faults_are_scoped_by_account_and_endpoint(fake: FakeUpstream, fake_client: httpx.AsyncClient) -> None:
    other = fake.add_account()
    fake.inject(ACCOUNT, Fault.server_error(), endpoint="usage", times=-1)
    fake.inject(other.chatgpt_account_id, Fault.token_expired(), endpoint="models")
    assert (await fake_client.get("/wham/usage")).status_code == 500
    assert (await post(fake_client)).status_code == 200
    assert (await fake_client.get("/wham/usage", headers=other.headers())).status_code == 200
    assert (await fake_client.get("/codex/models", headers=other.headers())).status_code == 401
    assert (await fake_client.get("/codex/models")).status_code == 200
    fake.clear_faults()
    assert (await fake_client.get("/wham/usage")).status_code == 200


async def test_global_fault_hits_any_account(fake: FakeUpstream, fake_client: httpx.AsyncClient) -> None:
    other = fake.add_account()
    fake.inject(None, Fault.server_error(503), times=2)
    assert (await post(fake_client)).status_code == 503
    assert (await post(fake_client, headers=other.headers())).status_code == 503
    assert (await post(fake_client)).status_code == 200
