"""Every fault of the fake's vocabulary on every proxied route, over real processes.

One ``codexlb fake-upstream`` and one ``codexlb serve`` per module; each case gets two fresh
accounts (made on the fake, imported through ``/api/accounts/import``, removed afterwards), queues
one fault for whichever account is tried first through ``POST /_fake/faults``, sends one request
and checks: what the client got, whether the proxy failed over and to which account (the fake's
request log), the first account's state (``/api/accounts/<id>``) and ``/healthz``.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.reliability.conftest import Servers
from tests.reliability.procs import provision

MESSAGE = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]
CODEX_BODY = {"model": "gpt-5.5", "instructions": "", "input": MESSAGE, "stream": True, "store": False}
CHAT = {"model": "gpt-5.5", "messages": [{"role": "user", "content": "hi"}]}
ROUTES: dict[str, tuple[str, dict[str, Any]]] = {
    "codex": ("/backend-api/codex/responses", CODEX_BODY),
    "responses-stream": ("/v1/responses", {"model": "gpt-5.5", "input": "hi", "stream": True}),
    "responses": ("/v1/responses", {"model": "gpt-5.5", "input": "hi"}),
    "chat-stream": ("/v1/chat/completions", {**CHAT, "stream": True}),
    "chat": ("/v1/chat/completions", CHAT),
    "compact": ("/backend-api/codex/responses/compact", {"model": "gpt-5.5", "instructions": "", "input": MESSAGE}),
}
STREAMED = {"codex", "responses-stream", "chat-stream"}


@dataclass(frozen=True)
class Case:
    """One fault and what the proxy must make of it."""

    spec: dict[str, Any]
    outcome: str
    """``failover`` (another account answers), ``retry`` (same account after a token refresh), ``ok`` (no
    failover needed) or ``broken`` (the answer had begun: the client gets a terminal error)."""
    status: str = "active"
    """The first account's status afterwards."""
    cooldown: bool = False
    """Whether the first account is kept out of routing for a while afterwards."""
    stream_only: bool = False
    """The fault shapes an SSE stream, so the compact route (JSON) has no such case."""
    usage: dict[str, float] = field(default_factory=dict)
    broken_status: int = 502
    """For ``broken`` on the non-streamed routes: 502 for a broken stream, 504 for a silent one."""


CASES: dict[str, Case] = {
    "usage-limit": Case({"fault": "usage_limit", "resets_in_seconds": 3600}, "failover", "rate_limited", True),
    "rate-limited-429": Case({"fault": "rate_limited"}, "failover", cooldown=True),
    "401-expired": Case({"fault": "token_expired"}, "retry"),
    "401-invalidated": Case({"fault": "token_invalidated"}, "retry"),
    "401-refresh-refused": Case({"fault": "refresh_refused"}, "failover", "reauth_required"),
    "500": Case({"fault": "server_error", "status": 500}, "failover", cooldown=True),
    "503": Case({"fault": "server_error", "status": 503}, "failover", cooldown=True),
    "cloudflare-403": Case({"fault": "cloudflare_403"}, "failover", cooldown=True),
    "connection-refused": Case({"fault": "refuse"}, "failover", cooldown=True),
    "hang-before-head": Case({"fault": "hang"}, "failover", cooldown=True),
    "slow-head": Case({"fault": "slow", "delay_s": 0.3}, "ok"),
    "hang-after-head": Case({"fault": "stall_mid_stream", "after_events": 0}, "failover", cooldown=True,
                            stream_only=True),
    "slow-events": Case({"fault": "slow_events", "delay_s": 0.02}, "ok", stream_only=True),
    "drop-before-output": Case({"fault": "drop_mid_stream", "after_events": 2}, "failover", cooldown=True,
                               stream_only=True),
    "drop-mid-output": Case({"fault": "drop_mid_stream", "after_events": 7}, "broken", stream_only=True),
    "end-before-output": Case({"fault": "end_mid_stream", "after_events": 2}, "failover", cooldown=True,
                              stream_only=True),
    "stall-mid-output": Case({"fault": "stall_mid_stream", "after_events": 7}, "broken", stream_only=True,
                             broken_status=504),
    "oversized-event": Case({"fault": "oversized_event", "size_bytes": 200_000}, "broken", stream_only=True),
    "response-failed-at-start": Case({"fault": "response_failed"}, "failover", cooldown=True, stream_only=True),
    "usage-percent": Case({}, "ok", stream_only=True, usage={"primary_used_percent": 73.0,
                                                              "secondary_used_percent": 41.0}),
}


def matrix() -> list[Any]:
    params = []
    for route in ROUTES:
        for name, case in CASES.items():
            if case.stream_only and route == "compact":
                continue
            params.append(pytest.param(route, case, id=f"{route}-{name}"))
    return params


@pytest.fixture
async def client(servers: Servers) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=servers.url, timeout=httpx.Timeout(10, read=3)) as http:
        yield http


def sse_events(body: bytes) -> list[tuple[str | None, Any]]:
    """``(event name or JSON type, data)`` per SSE event; ``[DONE]`` stays a string."""
    out: list[tuple[str | None, Any]] = []
    for block in body.decode().replace("\r\n", "\n").split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if not data:
            continue
        text = "\n".join(data)
        payload = text if text == "[DONE]" else json.loads(text)
        out.append((name or (payload.get("type") if isinstance(payload, dict) else None), payload))
    return out


def assert_answer(route: str, response: httpx.Response) -> None:
    """A complete, well-formed answer for ``route``."""
    assert response.status_code == 200, response.text[:500]
    if route in ("codex", "responses-stream"):
        events = sse_events(response.content)
        assert events[-1][0] == "response.completed", events[-3:]
        assert not any(kind in ("response.failed", "error") for kind, _ in events)
        if route == "responses-stream":
            assert not any((kind or "").startswith("codex.") for kind, _ in events)
    elif route == "responses":
        body = response.json()
        assert body["status"] == "completed" and body["output"][-1]["content"][0]["text"]
    elif route == "chat-stream":
        events = sse_events(response.content)
        assert events[-1][1] == "[DONE]" and not any("error" in data for _, data in events[:-1])
        assert "".join(data["choices"][0]["delta"].get("content") or "" for _, data in events[:-1]
                       if data.get("choices"))
    elif route == "chat":
        choice = response.json()["choices"][0]
        assert choice["message"]["content"] and choice["finish_reason"] == "stop"
    else:
        assert response.json()["output"][-1]["type"] == "compaction"


def assert_broken(route: str, response: httpx.Response, status: int = 502) -> None:
    """The answer had begun, so the client gets a terminal error in the route's own shape."""
    if route in ("responses", "chat"):
        assert response.status_code == status, response.text[:500]
        error = response.json()["error"]
        assert error["message"] and error["type"] and error["code"]
        return
    assert response.status_code == 200
    events = sse_events(response.content)
    if route == "chat-stream":
        assert events[-1][1] == "[DONE]" and events[-2][1]["error"]["code"]
    else:
        assert events[-1][0] in ("response.failed", "error"), events[-3:]
    assert not any(kind == "response.completed" for kind, _ in events)


async def upstream_log(client: httpx.AsyncClient, servers: Servers, since: int) -> list[dict[str, Any]]:
    log = (await client.get(f"{servers.fake.control_url}requests", params={"since": since})).json()
    return [r for r in log if r["endpoint"] in ("responses", "compact", "token")]


@pytest.mark.parametrize(("route", "case"), matrix())
async def test_fault_matrix(servers: Servers, client: httpx.AsyncClient, route: str, case: Case) -> None:
    control = servers.fake.control_url
    accounts = await provision(client, servers.fake)
    by_chatgpt = {a["chatgpt_account_id"]: a for a in accounts}
    since = len((await client.get(f"{control}requests")).json())
    try:
        if case.spec:
            endpoint = "compact" if route == "compact" else "responses"
            queued = await client.post(f"{control}faults", json={**case.spec, "endpoint": endpoint})
            assert queued.status_code == 201, queued.text
        if case.usage:
            await client.post(f"{control}usage", json=case.usage)
        path, body = ROUTES[route]
        before = time.time()
        response = await client.post(path, json=body)

        if case.outcome == "broken":
            assert_broken(route, response, case.broken_status)
        else:
            assert_answer(route, response)
        calls = [r for r in await upstream_log(client, servers, since) if r["endpoint"] != "token"]
        first, last = calls[0], calls[-1]
        assert first["fault"] == (case.spec.get("fault") if case.spec.get("fault") != "refresh_refused"
                                  else "token_expired")
        if case.outcome == "failover":
            assert len(calls) == 2 and last["account_id"] != first["account_id"] and last["fault"] is None
        elif case.outcome == "retry":
            assert len(calls) == 2 and last["account_id"] == first["account_id"] and last["fault"] is None
        else:
            assert len(calls) == 1
        if case.outcome != "broken":
            assert response.headers["x-codexlb-account"] == by_chatgpt[last["account_id"]]["label"]

        state = (await client.get(f"/api/accounts/{by_chatgpt[first['account_id']]['id']}")).json()
        assert state["status"] == case.status, state
        if case.cooldown:
            assert (state["cooldown_until"] or 0) > before, state
        elif case.outcome in ("ok", "retry"):
            assert not state["cooldown_until"] or state["cooldown_until"] <= time.time(), state
        if case.spec.get("fault") == "usage_limit":
            assert before + 3590 <= state["cooldown_until"] <= time.time() + 3600
        if case.usage:
            assert state["primary"]["used_percent"] == case.usage["primary_used_percent"]
            assert state["secondary"]["used_percent"] == case.usage["secondary_used_percent"]
        assert (await client.get("/healthz")).status_code == 200
    finally:
        await client.delete(f"{control}faults")
        for account in accounts:
            await client.delete(f"/api/accounts/{account['id']}")
