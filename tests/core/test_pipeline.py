"""The pipeline's seams over real sockets: the core's policy around ``send_upstream``, the token an
attempt carries into a 401 retry, the route the core reports on a retry, and the model-list path."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from codexlb import Account, AccountStatus, Flow, ProxyResponse, hookimpl
from codexlb.testing.fake_faults import Fault
from codexlb.testing.fake_sse import frame
from codexlb.testing.harness import proxy_server

PATH = "/backend-api/codex/responses"
BODY = {"model": "gpt-5.5", "stream": True, "store": False, "prompt_cache_key": "conv-1",
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]}
PIPELINE = ("select_round_robin", "upstream")


class Numbered:
    """A strategy that takes the first candidate and numbers its choices in the route's detail."""

    def __init__(self) -> None:
        self.choices = 0

    @hookimpl
    async def select_account(self, flow: Flow, candidates: Sequence[Account]) -> Account | None:
        self.choices += 1
        flow.set_route("numbered", "first", f"n={self.choices}")
        return sorted(candidates, key=lambda a: a.id)[0] if candidates else None


class FirstAnswer:
    """Answers the first ``send_upstream`` itself; the built-in upstream plugin sends the rest."""

    def __init__(self, answer: ProxyResponse) -> None:
        self.answer: ProxyResponse | None = answer
        self.account: Account | None = None

    @hookimpl
    async def send_upstream(self, account: Account) -> ProxyResponse | None:
        answer, self.answer = self.answer, None
        if answer is not None:
            self.account = account
        return answer


def usage_limit_head(reset_at: int) -> ProxyResponse:
    """A 429 as the backend sends it, header names in mixed case."""
    body = {"error": {"type": "usage_limit_reached", "message": "The usage limit has been reached",
                      "resets_at": reset_at}}
    return ProxyResponse(429, [("Content-Type", "application/json"), ("X-Codex-Primary-Used-Percent", "100"),
                               ("X-Codex-Primary-Window-Minutes", "300"), ("X-Codex-Primary-Reset-At", str(reset_at))],
                         json.dumps(body).encode())


def overloaded_stream() -> ProxyResponse:
    """A 200 stream whose first answer event is an overload: only the core's peek can see it."""
    events = [{"type": "codex.rate_limits", "rate_limits": {"primary": {"used_percent": 37, "window_minutes": 300}}},
              {"type": "response.created", "response": {"id": "r1"}},
              {"type": "response.failed", "response": {"id": "r1", "error": {
                  "code": "server_is_overloaded", "message": "Overloaded. Please try again in 20s."}}}]

    async def stream() -> AsyncIterator[bytes]:
        for event in events:
            yield frame(event)

    return ProxyResponse(200, [("content-type", "text/event-stream")], stream())


@pytest.mark.parametrize("kind", ["429 head", "failed first event"])
async def test_a_replacement_upstream_plugin_gets_the_cores_policy(tmp_path: Path, kind: str) -> None:
    reset_at = int(time.time()) + 900
    replacement = FirstAnswer(usage_limit_head(reset_at) if kind == "429 head" else overloaded_stream())
    async with proxy_server(tmp_path, pipeline=PIPELINE, plugins=[Numbered(), replacement]) as proxy:
        response = await proxy.client.post(PATH, json=BODY)
        assert response.status_code == 200 and b"response.completed" in response.content
        failed = replacement.account
        assert failed is not None and response.headers["x-codexlb-account"] != failed.label
        if kind == "429 head":  # headers applied to the account, the error classified: a usage limit
            assert failed.primary.used_percent == 100 and failed.primary.resets_at == reset_at
            assert failed.status is AccountStatus.RATE_LIMITED and failed.cooldown_until == reset_at
            assert response.headers["x-codexlb-route"] == "numbered:fallback-after-429 n=2"
        else:  # the held events were read (rate limits) and the overload failed over with its wait
            assert failed.primary.used_percent == 37 and failed.status is AccountStatus.ACTIVE
            assert 10 < failed.cooldown_until - time.time() <= 20
            assert response.headers["x-codexlb-route"] == "numbered:fallback-after-200 n=2"


async def test_a_401_refreshes_the_token_the_attempt_sent(tmp_path: Path) -> None:
    """Two turns get a 401 for the same token; the later one finds it already replaced: one refresh."""
    both_sent, retried = asyncio.Event(), asyncio.Event()
    seen: list[str] = []

    class ExpiringToken:
        @hookimpl
        async def send_upstream(self, token: str) -> ProxyResponse | None:
            seen.append(token)
            if token != seen[0]:  # a retry with the refreshed token: the real upstream answers
                retried.set()
                return None
            if seen.count(token) == 2:
                both_sent.set()
                await retried.wait()  # answer the second turn only after the first retried
            await both_sent.wait()
            return ProxyResponse(401, [("content-type", "application/json")],
                                 b'{"error": {"message": "token expired", "code": "token_expired"}}')

    async with proxy_server(tmp_path, accounts=1, pipeline=PIPELINE, plugins=[ExpiringToken()]) as proxy:
        original = proxy.accounts[0].access_token
        first, second = await asyncio.gather(proxy.client.post(PATH, json=BODY), proxy.client.post(PATH, json=BODY))
        fresh = proxy.lb.pool.credentials[proxy.lb.pool.all()[0].id].access_token
    assert first.status_code == second.status_code == 200
    assert proxy.fake.refresh_calls == 1
    assert seen[:2] == [original, original] and fresh != original and sorted(seen[2:]) == [fresh, fresh]
    assert {first.headers["x-codexlb-route"], second.headers["x-codexlb-route"]} == {"round_robin:retry-after-401"}


async def test_the_retry_reason_stays_with_its_flow(tmp_path: Path) -> None:
    replacement = FirstAnswer(usage_limit_head(int(time.time()) + 900))
    async with proxy_server(tmp_path, pipeline=PIPELINE, plugins=[Numbered(), replacement]) as proxy:
        retried = await proxy.client.post(PATH, json=BODY)
        plain = await proxy.client.post(PATH, json=BODY)
    assert retried.headers["x-codexlb-route"] == "numbered:fallback-after-429 n=2"
    assert plain.headers["x-codexlb-route"] == "numbered:first n=3"


async def test_a_model_list_fallback_is_one_flow_answered_from_the_cache(tmp_path: Path) -> None:
    done: list[Flow] = []

    class Spy:
        @hookimpl
        async def flow_done(self, flow: Flow) -> None:
            done.append(flow)

    async with proxy_server(tmp_path, accounts=1, pipeline=PIPELINE, plugins=[Spy()],
                            model_registry_enabled=True) as proxy:
        await proxy.lb.jobs.run_now("models")
        proxy.fake.inject(None, Fault.server_error(), endpoint="models", times=-1)
        newer = await proxy.client.get("/backend-api/codex/models", params={"client_version": "0.150.0"})
        await proxy.settle()
    assert newer.status_code == 200 and newer.json()["models"]
    assert newer.headers["x-codexlb-route"] == "model_registry:fallback" and "x-codexlb-account" not in newer.headers
    assert [(flow.status, str(flow.route)) for flow in done] == [(200, "model_registry:fallback")]
    assert [attempt.status for attempt in done[0].attempts] == [500]  # the live try, recorded on the same flow
