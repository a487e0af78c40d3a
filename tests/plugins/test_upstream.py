"""The upstream plugin against the fake backend over loopback: what it sends, and that it hands
the answer back as received (rate limits and classification are the core's, around the hook)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from codexlb.errors import UpstreamError
from codexlb.flow import Flow, ProxyResponse
from codexlb.testing import make_account, make_flow
from codexlb.testing.fake_accounts import FakeAccount
from codexlb.testing.fake_faults import Fault
from codexlb.testing.fake_sse import parse_sse
from codexlb.testing.fake_upstream import FakeUpstream
from codexlb.testing.harness import make_settings
from codexlb.types import Account
from plugins.upstream import _PASSES, Upstream

BODY = {"model": "gpt-5.5", "stream": True, "store": False,
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]}


@contextlib.asynccontextmanager
async def started(tmp_path: Path, fake: FakeUpstream, **overrides: Any) -> AsyncIterator[tuple[Upstream, Any]]:
    """The plugin configured and started as the app does, with an app that has settings only."""
    app = SimpleNamespace(settings=make_settings(tmp_path, fake=fake, **overrides))
    plugin = Upstream()
    plugin.configure({}, app.settings)
    await plugin.startup(app)  # type: ignore[arg-type]
    try:
        yield plugin, app
    finally:
        await plugin.shutdown()


def account_of(fake_account: FakeAccount) -> Account:
    return make_account("a", chatgpt_account_id=fake_account.chatgpt_account_id)


def responses_flow(**headers: str) -> Flow:
    return make_flow(payload=BODY, headers={"content-type": "application/json", **headers})


async def body_of(response: ProxyResponse) -> bytes:
    if isinstance(response.body, bytes):
        return response.body
    return b"".join([chunk async for chunk in response.body])


async def test_sends_the_attempts_token_and_only_the_allowlisted_headers(tmp_path: Path) -> None:
    async with FakeUpstream() as fake, started(tmp_path, fake) as (plugin, app):
        fake_account = fake.add_account()
        flow = responses_flow(authorization="Bearer client-key", cookie="session=1", **{
            "session-id": "s-1", "x-codex-turn-metadata": "{}", "x-forwarded-for": "203.0.113.7"})
        response = await plugin.send_upstream(flow, account_of(fake_account), fake_account.access_token, app)
        events = [name for name, _ in parse_sse(await body_of(response))]
    assert response.status == 200 and events[-1] == "response.completed"
    sent = fake.requests_for("responses")[0].headers
    assert sent["authorization"] == f"Bearer {fake_account.access_token}"
    assert sent["chatgpt-account-id"] == fake_account.chatgpt_account_id
    assert sent["session-id"] == "s-1" and sent["x-codex-turn-metadata"] == "{}"
    assert "cookie" not in sent and "x-forwarded-for" not in sent and sent["accept-encoding"] == "identity"


async def test_a_failed_answer_comes_back_as_received(tmp_path: Path) -> None:
    async with FakeUpstream() as fake, started(tmp_path, fake) as (plugin, app):
        fake_account = fake.add_account()
        fake_account.set_usage(primary=100.0)
        fake.inject(fake_account.chatgpt_account_id, Fault.usage_limit(resets_in_seconds=600))
        account = account_of(fake_account)
        limited = await plugin.send_upstream(responses_flow(), account, fake_account.access_token, app)
        refused = await plugin.send_upstream(responses_flow(), account, "not-the-accounts-token", app)
    assert limited.status == 429 and isinstance(limited.body, bytes)
    assert json.loads(limited.body)["error"]["type"] == "usage_limit_reached"
    assert limited.header("x-codex-primary-used-percent") == "100"
    assert account.primary.used_percent == 0.0  # the core applies the headers, not the plugin
    assert refused.status == 401 and isinstance(refused.body, bytes) and b"error" in refused.body


async def test_a_json_answer_is_read_whole(tmp_path: Path) -> None:
    async with FakeUpstream() as fake, started(tmp_path, fake) as (plugin, app):
        fake_account = fake.add_account()
        flow = make_flow(method="GET", path="/v1/models", endpoint="models", headers={})
        flow.upstream_method, flow.upstream_path = "GET", "/codex/models"
        response = await plugin.send_upstream(flow, account_of(fake_account), fake_account.access_token, app)
    assert response.status == 200 and isinstance(response.body, bytes)
    assert json.loads(response.body)["models"]
    assert fake.requests_for("models")[0].query["client_version"] == app.settings.model_registry_client_version


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_transport_failures_are_the_cores_errors(tmp_path: Path) -> None:
    async with FakeUpstream() as fake:
        fake_account = fake.add_account()
        account, token = account_of(fake_account), fake_account.access_token
        nowhere = f"http://127.0.0.1:{closed_port()}/backend-api"
        async with started(tmp_path, fake, upstream_base_url=nowhere) as (plugin, app):
            with pytest.raises(UpstreamError) as unreachable:
                await plugin.send_upstream(responses_flow(), account, token, app)
        async with started(tmp_path, fake, stream_idle_timeout_seconds=0.2) as (plugin, app):
            fake.inject(None, Fault.hang())
            with pytest.raises(UpstreamError) as silent:
                await plugin.send_upstream(responses_flow(), account, token, app)
            fake.inject(None, Fault.drop_mid_stream(after_events=2))
            dropping = await plugin.send_upstream(responses_flow(), account, token, app)
            with pytest.raises(UpstreamError) as broken:
                await body_of(dropping)
    assert unreachable.value.code == "upstream_unreachable" and unreachable.value.retryable
    assert silent.value.code == "upstream_timeout" and silent.value.status == 504 and silent.value.retryable
    assert unreachable.value.cooldown_seconds == silent.value.cooldown_seconds == 5.0
    assert broken.value.code == "upstream_stream_error" and broken.value.phase == "stream"
    assert not broken.value.retryable  # bytes may have reached the client: no failover


async def test_the_head_wait_bound_ends_with_the_wait(tmp_path: Path) -> None:
    """A cancellation of the caller stays one; after an answer the bound no longer cancels the caller."""
    async with FakeUpstream() as fake:
        fake_account = fake.add_account()
        account, token = account_of(fake_account), fake_account.access_token
        async with started(tmp_path, fake, stream_idle_timeout_seconds=0.2) as (plugin, app):
            waiting = asyncio.create_task(plugin.send_upstream(responses_flow(), account, token, app))
            await asyncio.sleep(0)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            answer = await plugin.send_upstream(responses_flow(), account, token, app)
            await asyncio.sleep(0.3)  # past the bound: a timer left behind would cancel this task
            assert answer.status == 200 and b"response.completed" in await body_of(answer)


async def test_answer_headers_pass_as_received_but_the_dropped_ones(tmp_path: Path) -> None:
    async with FakeUpstream() as fake, started(tmp_path, fake) as (plugin, app):
        fake_account = fake.add_account()
        account, token = account_of(fake_account), fake_account.access_token
        for _ in range(2):  # the second answer's names are already known
            answer = await plugin.send_upstream(responses_flow(), account, token, app)
            names = [k for k, _ in answer.headers]
            await body_of(answer)
            assert "Content-Type" in names and any(k.startswith("x-codex-") for k in names)
            assert not {k.lower() for k in names} & {"date", "server", "transfer-encoding", "content-length"}
    for n in range(300):  # the learnt names stay bounded
        assert _PASSES[f"X-Name-{n}"] and not _PASSES["Set-Cookie"]
    assert len(_PASSES) <= 256 and not _PASSES["DATE"]
