"""Codex CLI's own route: captured requests go through and streams arrive byte-identical."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import zstandard

from codexlb.testing.fake_upstream import FakeUpstream
from codexlb.testing.harness import ProxyHarness
from tests.proxy.conftest import codex_posts, load_fixture, request_headers

PASSED_THROUGH = ("session-id", "thread-id", "originator", "user-agent", "version", "x-client-request-id")


@pytest.mark.parametrize("path", codex_posts(), ids=lambda p: p.parent.name + "/" + p.name[:4])
async def test_captured_request_streams_byte_identical(proxy: ProxyHarness, path: Path) -> None:
    fixture = load_fixture(path)
    headers = request_headers(fixture)
    plain = body = json.dumps(fixture["body"]).encode()
    if fixture.get("content_encoding") == "zstd":
        body = zstandard.ZstdCompressor().compress(body)
    else:
        headers.pop("content-encoding", None)
    response = await proxy.client.post("/backend-api/codex/responses", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    served = proxy.fake.requests_for("responses")[-1]
    account = next(a for a in proxy.accounts if a.chatgpt_account_id == served.account_id)

    # The same request sent directly to an identical fake, as the proxy's account.
    async with FakeUpstream(clock=proxy.fake.clock) as twin:  # the same frozen clock as the proxied fake
        for _ in proxy.accounts:
            twin.add_account()
        direct_headers = {**{k: v for k, v in headers.items() if k != "content-encoding"},
                          "authorization": f"Bearer {account.access_token}",
                          "chatgpt-account-id": account.chatgpt_account_id}
        async with httpx.AsyncClient() as client:
            direct = await client.post(twin.base_url + "/codex/responses", content=plain,
                                       headers={**direct_headers, "content-type": "application/json"})
    assert direct.status_code == 200
    assert response.content == direct.content

    # Codex's own headers pass through; credentials are the account's; the body is the decoded JSON.
    for name in PASSED_THROUGH:
        if name in headers:
            assert served.headers.get(name) == headers[name], name
    for name in headers:
        if name.startswith("x-codex-"):
            assert served.headers.get(name) == headers[name]
    assert served.headers.get("authorization") == f"Bearer {account.access_token}"
    assert served.headers.get("chatgpt-account-id") == account.chatgpt_account_id
    assert served.headers.get("content-encoding") is None
    assert served.json == fixture["body"]
    assert response.headers["x-codexlb-account"] in ("acct1", "acct2")
    assert response.headers["x-codexlb-route"]


async def test_hop_by_hop_and_client_credentials_not_forwarded(proxy: ProxyHarness) -> None:
    fixture = load_fixture(codex_posts()[0])
    headers = {"authorization": "Bearer client-secret-token", "chatgpt-account-id": "client-acct",
               "proxy-authorization": "Basic x", "te": "trailers", "content-type": "application/json"}
    response = await proxy.client.post("/backend-api/codex/responses", json=fixture["body"], headers=headers)
    assert response.status_code == 200
    served = proxy.fake.requests_for("responses")[-1]
    assert "client-secret-token" not in served.headers.get("authorization", "")
    assert served.headers.get("chatgpt-account-id") != "client-acct"
    assert served.headers.get("proxy-authorization") is None and served.headers.get("te") is None


async def test_codex_startup_calls_answered_for_the_pool(proxy: ProxyHarness) -> None:
    check = await proxy.client.get("/backend-api/wham/accounts/check", headers={"chatgpt-account-id": "x1"})
    assert check.status_code == 200 and check.json()["account_ordering"] == ["x1"]
    assert (await proxy.client.get("/backend-api/wham/settings/user")).json() == {}
    await proxy.client.post("/backend-api/codex/responses", json=load_fixture(codex_posts()[0])["body"])
    usage = (await proxy.client.get("/backend-api/wham/usage")).json()
    assert usage["rate_limit"]["allowed"] is True
    assert usage["rate_limit"]["primary_window"]["limit_window_seconds"] == 300 * 60
    ws = await proxy.client.get("/backend-api/codex/responses")
    assert ws.status_code == 426 and ws.json()["error"]["code"] == "upgrade_required"


async def test_models_passthrough(proxy: ProxyHarness) -> None:
    codex = await proxy.client.get("/backend-api/codex/models", params={"client_version": "0.169.0"})
    assert codex.status_code == 200 and codex.json()["models"]
    served = proxy.fake.requests_for("models")[-1]
    assert "client_version=0.169.0" in served.query_string


async def test_remote_compaction_goes_through_on_the_conversation_account(proxy: ProxyHarness) -> None:
    body = {"model": "gpt-5.5", "instructions": "", "prompt_cache_key": "conv-compact",
            "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]}
    turn = await proxy.client.post("/backend-api/codex/responses", json={**body, "stream": True, "store": False})
    compact = await proxy.client.post("/backend-api/codex/responses/compact", json=body)
    assert compact.status_code == 200, compact.text
    output = compact.json()["output"]
    assert any(item.get("type") == "compaction" for item in output)
    assert compact.headers["x-codexlb-account"] == turn.headers["x-codexlb-account"]
    served = proxy.fake.requests_for("compact")[-1]
    assert served.path == "/backend-api/codex/responses/compact" and served.json == body
