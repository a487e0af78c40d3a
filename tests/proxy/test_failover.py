"""Failover before the first byte, cooldowns, pool exhaustion, and mid-stream failures."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from codexlb.testing.fake_faults import Fault
from codexlb.testing.harness import ProxyHarness, proxy_server
from codexlb.types import AccountStatus
from tests.proxy.conftest import PIPELINE

BODY = {"model": "gpt-5.5", "instructions": "", "input": [{"type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "hi"}]}], "stream": True, "store": False}


async def post(proxy: ProxyHarness, body: dict | None = None):  # noqa: ANN201
    return await proxy.client.post("/backend-api/codex/responses", json=body or BODY)


def failed_account(proxy: ProxyHarness):  # noqa: ANN201
    """The pool account that got the first (failed) attempt."""
    first = proxy.fake.requests_for("responses")[0]
    return next(a for a in proxy.lb.pool.all() if a.chatgpt_account_id == first.account_id)


def served_by(proxy: ProxyHarness) -> str:
    return proxy.fake.requests_for("responses")[-1].account_id


async def test_usage_limit_cools_down_until_resets_at_and_fails_over(proxy: ProxyHarness) -> None:
    resets_at = int(time.time()) + 3600
    proxy.fake.inject(None, Fault.usage_limit(resets_at=resets_at))
    response = await post(proxy)
    assert response.status_code == 200 and b"response.completed" in response.content
    assert response.headers["x-codexlb-route"].split(" ")[0].endswith(":fallback-after-429")  # then from=, to=
    failed = failed_account(proxy)
    assert failed.status is AccountStatus.RATE_LIMITED and failed.cooldown_until == resets_at
    assert served_by(proxy) != failed.chatgpt_account_id
    assert len(proxy.fake.requests_for("responses")) == 2


async def test_usage_limit_uses_resets_in_seconds_when_no_resets_at(proxy: ProxyHarness) -> None:
    proxy.fake.inject(None, Fault.usage_limit(resets_in_seconds=600))
    before = time.time()
    assert (await post(proxy)).status_code == 200
    cooldown = failed_account(proxy).cooldown_until
    assert before + 599 <= cooldown <= time.time() + 601


async def test_other_429_short_cooldown(proxy: ProxyHarness) -> None:
    proxy.fake.inject(None, Fault.rate_limited())
    assert (await post(proxy)).status_code == 200
    failed = failed_account(proxy)
    assert failed.status is AccountStatus.ACTIVE and time.time() < failed.cooldown_until < time.time() + 120


@pytest.mark.parametrize("fault", [Fault.cloudflare_403(), Fault.server_error(500), Fault.server_error(503),
                                   Fault.refuse(), Fault.model_not_supported("gpt-5.5"),
                                   Fault.response_failed("server_is_overloaded"),
                                   Fault.error_event("server_error")],
                         ids=["cloudflare", "500", "503", "refused", "model-not-supported", "first-event-failed",
                              "first-event-error"])
async def test_transient_failures_fail_over(proxy: ProxyHarness, fault: Fault) -> None:
    proxy.fake.inject(None, fault)
    response = await post(proxy)
    assert response.status_code == 200 and b"response.completed" in response.content
    assert b"response.failed" not in response.content
    requests = proxy.fake.requests_for("responses")
    assert len(requests) == 2 and requests[0].account_id != requests[1].account_id


async def test_hang_before_headers_fails_over(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, pipeline=PIPELINE, stream_idle_timeout_seconds=0.5) as proxy:
        proxy.fake.inject(None, Fault.hang())
        response = await post(proxy)
        assert response.status_code == 200 and b"response.completed" in response.content


async def test_401_refreshes_and_retries_same_account(proxy: ProxyHarness) -> None:
    proxy.fake.inject(None, Fault.token_expired())
    response = await post(proxy)
    assert response.status_code == 200
    requests = proxy.fake.requests_for("responses")
    assert len(requests) == 2 and requests[0].account_id == requests[1].account_id
    assert proxy.fake.refresh_calls == 1
    assert response.headers["x-codexlb-route"].split(" ")[0].endswith(":retry-after-401")


async def test_400_returned_unchanged(proxy: ProxyHarness) -> None:
    body = {"error": {"type": "invalid_request_error", "code": "invalid_value", "message": "bad input",
                      "param": "input"}}
    proxy.fake.inject(None, Fault.status(400, body))
    response = await post(proxy)
    assert response.status_code == 400 and response.json() == body
    assert len(proxy.fake.requests_for("responses")) == 1


async def test_attempts_are_bounded(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, accounts=5, pipeline=PIPELINE, proxy_max_attempts=3) as proxy:
        proxy.fake.inject(None, Fault.server_error(500), times=-1)
        response = await post(proxy)
        assert response.status_code == 502
        assert response.json()["error"]["type"] == "server_error"
        assert len(proxy.fake.requests_for("responses")) == 3


async def test_pool_exhausted_is_429_with_earliest_reset(proxy: ProxyHarness) -> None:
    now = int(time.time())
    resets = [now + 7200, now + 3600]
    for account, reset in zip(proxy.accounts, resets, strict=True):
        proxy.fake.inject(account.chatgpt_account_id, Fault.usage_limit(resets_at=reset), times=-1)
    response = await post(proxy)
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["type"] == "usage_limit_reached" and error["resets_at"] == now + 3600
    assert 3500 < error["resets_in_seconds"] <= 3600
    assert 3500 < int(response.headers["retry-after"]) <= 3600
    calls = len(proxy.fake.requests_for("responses"))
    again = await post(proxy)
    assert again.status_code == 429 and len(proxy.fake.requests_for("responses")) == calls


async def test_limits_on_some_accounts_and_errors_on_the_rest_say_both(proxy: ProxyHarness) -> None:
    limited, failing = proxy.accounts
    now = int(time.time())
    proxy.fake.inject(limited.chatgpt_account_id, Fault.usage_limit(resets_at=now + 3600), times=-1)
    proxy.fake.inject(failing.chatgpt_account_id, Fault.server_error(500), times=-1)
    await post(proxy)  # one account now limited, the other cooling down
    response = await post(proxy)
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["type"] == "usage_limit_reached"
    assert "on 1 of 2 pooled accounts" in error["message"] and "cooling down" in error["message"]
    assert error["resets_in_seconds"] < 3500  # the cooling-down account comes back first


async def test_no_accounts_is_503_with_how_to(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, accounts=0, pipeline=PIPELINE) as proxy:
        response = await post(proxy)
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "no_account_available" and "codexlb accounts login" in error["message"]


async def test_mid_stream_drop_ends_with_terminal_event(proxy: ProxyHarness) -> None:
    proxy.fake.inject(None, Fault.drop_mid_stream(after_events=6))
    response = await post(proxy)
    assert response.status_code == 200
    assert response.content.rstrip().split(b"\n\n")[-1].startswith(b"event: response.failed")
    assert b"response.completed" not in response.content
    assert len(proxy.fake.requests_for("responses")) == 1


async def test_all_cooling_after_errors_is_503_not_usage_limit(proxy: ProxyHarness) -> None:
    proxy.fake.inject(None, Fault.server_error(500), times=2)
    first = await post(proxy)
    assert first.status_code == 502
    second = await post(proxy)
    assert second.status_code == 503 and second.json()["error"]["code"] == "accounts_cooling_down"
    assert int(second.headers["retry-after"]) >= 1
