"""Stalls and breaks before the first byte: every wait is bounded, and failover holds until a byte is sent.

Timeouts are injected short; the assertions are on outcomes (which account answered, status, error
shape), with the HTTP client's own timeout as the generous bound.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from codexlb.testing.fake_faults import Fault
from codexlb.testing.fake_sse import parse_sse
from codexlb.testing.harness import ProxyHarness, proxy_server
from tests.proxy.conftest import PIPELINE
from tests.proxy.test_failover import BODY, post

PATH = "/backend-api/codex/responses"
LONG = 60.0
"""A limit that must not be the one that fires in a test."""


def tried(proxy: ProxyHarness) -> list[str]:
    """The account of every upstream attempt, in order."""
    return [r.account_id or "" for r in proxy.fake.requests_for("responses")]


def assert_failed_over(proxy: ProxyHarness, response, reason: str) -> None:  # noqa: ANN001
    assert response.status_code == 200, response.text
    names = [name for name, _ in parse_sse(response.content)]
    assert names.count("response.created") == 1 and names[-1] == "response.completed"
    accounts = tried(proxy)
    assert len(accounts) == 2 and accounts[0] != accounts[1]
    route = response.headers["x-codexlb-route"]  # e.g. sticky:fallback-after-429 from=<old> to=<new>
    assert route.split(" ")[0].endswith(f":fallback-after-{reason}")
    first = next(a for a in proxy.lb.pool.all() if a.chatgpt_account_id == accounts[0])
    assert first.cooldown_until > time.time()


@pytest.mark.parametrize("after_events", [0, 1, 2, 3])
async def test_reset_before_first_output_fails_over(proxy: ProxyHarness, after_events: int) -> None:
    """Frames: codex.rate_limits, response.created, response.in_progress, then the first output item."""
    proxy.fake.inject(None, Fault.drop_mid_stream(after_events=after_events))
    assert_failed_over(proxy, await post(proxy), "upstream_stream_error")


@pytest.mark.parametrize("after_events", [0, 1, 2, 3])
async def test_clean_end_before_first_output_fails_over(proxy: ProxyHarness, after_events: int) -> None:
    proxy.fake.inject(None, Fault.end_mid_stream(after_events=after_events))
    assert_failed_over(proxy, await post(proxy), "upstream_stream_error")


@pytest.mark.parametrize("after_events", [1, 2, 3])
async def test_silence_while_held_is_bounded_by_the_idle_timeout(tmp_path: Path, after_events: int) -> None:
    async with proxy_server(tmp_path, pipeline=PIPELINE, stream_idle_timeout_seconds=0.4,
                            upstream_first_byte_timeout_seconds=LONG) as proxy:
        proxy.fake.inject(None, Fault.stall_mid_stream(after_events=after_events))
        assert_failed_over(proxy, await post(proxy), "stream_idle_timeout")


@pytest.mark.parametrize("fault", [Fault.hang(), Fault.stall_mid_stream(after_events=0),
                                   Fault.stall_mid_stream(after_events=1)],
                         ids=["no-head", "head-only", "rate-limits-frame-only"])
async def test_no_answer_event_is_bounded_by_the_first_byte_limit(tmp_path: Path, fault: Fault) -> None:
    async with proxy_server(tmp_path, pipeline=PIPELINE, stream_idle_timeout_seconds=LONG,
                            upstream_first_byte_timeout_seconds=0.4) as proxy:
        proxy.fake.inject(None, fault)
        assert_failed_over(proxy, await post(proxy), "upstream_first_byte_timeout")


async def test_hung_pool_answers_504_within_the_overall_limit(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, accounts=4, pipeline=PIPELINE, proxy_max_attempts=4,
                            stream_idle_timeout_seconds=LONG, upstream_first_byte_timeout_seconds=0.4,
                            upstream_first_byte_total_seconds=1.0) as proxy:
        proxy.fake.inject(None, Fault.hang(), times=-1)
        response = await proxy.client.post(PATH, json=BODY, timeout=15)
        assert response.status_code == 504
        error = response.json()["error"]
        assert error["code"] == "upstream_first_byte_timeout" and error["type"] == "server_error"
        assert "CODEX_LB_UPSTREAM_FIRST_BYTE" in error["message"]
        assert 1 <= len(tried(proxy)) < 4  # the overall limit ended it before every account was tried


async def test_slow_reasoning_after_response_created_keeps_its_account(tmp_path: Path) -> None:
    """An upstream that said ``response.created`` is answering: at the first-byte limit its events go on."""
    async with proxy_server(tmp_path, pipeline=PIPELINE, stream_idle_timeout_seconds=LONG,
                            upstream_first_byte_timeout_seconds=0.3) as proxy:
        proxy.fake.inject(None, Fault.stall_mid_stream(after_events=2, delay_s=1.0))
        response = await post(proxy)
        assert response.status_code == 200
        names = [name for name, _ in parse_sse(response.content)]
        assert names[:3] == ["codex.rate_limits", "response.created", "response.in_progress"]
        assert names.count("response.created") == 1 and names[-1] == "response.completed"
        assert len(tried(proxy)) == 1


async def test_client_hears_back_while_the_upstream_still_reasons(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, pipeline=PIPELINE, stream_idle_timeout_seconds=LONG,
                            upstream_first_byte_timeout_seconds=0.3) as proxy:
        proxy.fake.inject(None, Fault.stall_mid_stream(after_events=2))
        received = b""
        async with proxy.client.stream("POST", PATH, json=BODY, timeout=15) as response:
            assert response.status_code == 200
            async for chunk in response.aiter_bytes():
                received += chunk
                if b"event: response.created" in received:
                    break
        assert len(tried(proxy)) == 1
        assert (await proxy.client.get("/healthz")).status_code == 200


async def test_compaction_is_not_cut_by_the_first_byte_limit(tmp_path: Path) -> None:
    """Compaction answers JSON once it is done: only the idle timeout bounds its wait."""
    async with proxy_server(tmp_path, pipeline=PIPELINE, upstream_first_byte_timeout_seconds=0.2,
                            upstream_first_byte_total_seconds=0.2) as proxy:
        proxy.fake.inject(None, Fault.slow(0.6), endpoint="compact")
        response = await proxy.client.post(PATH + "/compact", json=BODY, timeout=15)
        assert response.status_code == 200 and response.json()["output"][-1]["type"] == "compaction"
        assert len(proxy.fake.requests_for("compact")) == 1


async def test_large_json_answer_arrives_whole(proxy: ProxyHarness) -> None:
    """A non-streamed answer that arrives in many chunks is read to its end, not cut at the first."""
    text = "x" * (2 << 20)
    body = {**BODY, "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}]}
    response = await proxy.client.post(PATH + "/compact", json=body, timeout=15)
    assert response.status_code == 200
    assert response.json()["output"][0]["content"][0]["text"] == text
