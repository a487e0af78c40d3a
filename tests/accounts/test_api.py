"""The /api admin routes over real sockets: OAuth start/status/complete, import, account admin, loopback only."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from codexlb.app import create_app, lb_of
from codexlb.forwarding import is_loopback
from codexlb.testing.fake_upstream import FakeUpstream
from codexlb.testing.harness import ProxyHarness, proxy_server, serve_app
from codexlb.types import AccountStatus
from tests.accounts.conftest import PIPELINE, assert_no_secrets, authorize, browser, make_settings
from tests.accounts.test_authjson import camel
from tests.accounts.test_refresh import BODY

CALLBACK = {"oauth_callback_host": "127.0.0.1", "oauth_callback_port": 0,
            "oauth_redirect_uri": "http://127.0.0.1:1455/auth/callback"}


@contextlib.asynccontextmanager
async def running(tmp_path: Path, fake: FakeUpstream, **overrides: Any) -> AsyncIterator[ProxyHarness]:
    async with proxy_server(tmp_path, accounts=0, fake=fake, pipeline=PIPELINE,
                            **{**CALLBACK, **overrides}) as harness:
        yield harness


@pytest.fixture
async def proxy(tmp_path: Path, fake: FakeUpstream) -> AsyncIterator[ProxyHarness]:
    async with running(tmp_path, fake) as harness:
        yield harness


async def status_until(proxy: ProxyHarness, predicate: Any) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            state = (await proxy.client.get("/api/accounts/oauth/status")).json()
            if predicate(state):
                return state
            await asyncio.sleep(0.01)


async def test_oauth_through_the_listener(proxy: ProxyHarness, caplog) -> None:
    fake = proxy.fake
    account = fake.next_login = fake.add_account("acct-dash", email="dash@example.com")
    assert (await proxy.client.get("/api/accounts/oauth/status")).json()["status"] == "idle"
    started = (await proxy.client.post("/api/accounts/oauth/start", json={"label": "dash"})).json()
    assert started["status"] == "pending" and started["listening"] is True
    assert started["authorize_url"].startswith(f"{fake.auth_base_url}/oauth/authorize?")
    _, page = await browser(started["authorize_url"])
    assert page.status_code == 200 and "Login complete" in page.text
    state = await status_until(proxy, lambda s: s["status"] != "pending" and not s["listening"])
    assert state["status"] == "success" and state["account"]["label"] == "dash" and state["account"]["created"]
    pooled = proxy.lb.pool.get(state["account"]["id"])
    assert pooled is not None and pooled.label == "dash" and pooled.status is AccountStatus.ACTIVE
    assert proxy.lb.pool.credentials[pooled.id].access_token == account.access_token
    assert (await proxy.client.post("/backend-api/codex/responses", json=BODY)).status_code == 200  # routable
    listed = (await proxy.client.get("/api/accounts")).json()["data"]
    assert [a["label"] for a in listed] == ["dash"]
    assert_no_secrets(fake, str(started), str(state), str(listed), page.text, caplog=caplog)


async def test_oauth_busy_port_then_pasted_url(tmp_path: Path, fake: FakeUpstream) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        async with running(tmp_path, fake, oauth_callback_port=busy.getsockname()[1]) as proxy:
            started = (await proxy.client.post("/api/accounts/oauth/start")).json()
            assert started["listening"] is False and "already in use" in started["message"]
            location = await authorize(started["authorize_url"])
            done = await proxy.client.post("/api/accounts/oauth/complete", json={"callback_url": location})
            assert done.status_code == 200 and done.json()["status"] == "success"
            assert len(proxy.lb.pool.accounts) == 1
            again = await proxy.client.post("/api/accounts/oauth/complete", json={"callback_url": location})
            assert again.status_code == 400 and again.json()["error"]["code"] == "finished"


async def test_oauth_complete_errors(proxy: ProxyHarness) -> None:
    none = await proxy.client.post("/api/accounts/oauth/complete", json={"callback_url": "x"})
    assert none.status_code == 409 and none.json()["error"]["code"] == "no_login"
    await proxy.client.post("/api/accounts/oauth/start")
    empty = await proxy.client.post("/api/accounts/oauth/complete", json={})
    assert empty.status_code == 400 and empty.json()["error"]["type"] == "invalid_request_error"
    forged = await proxy.client.post("/api/accounts/oauth/complete",
                                     json={"callback_url": "http://localhost:1455/auth/callback?code=c&state=s"})
    assert forged.status_code == 400 and forged.json()["error"]["code"] == "state_mismatch"
    state = await status_until(proxy, lambda s: not s["listening"])
    assert state["status"] == "error" and state["error"]["code"] == "state_mismatch"
    assert proxy.lb.pool.accounts == {} and proxy.fake.requests_for("token") == []


async def test_oauth_times_out(tmp_path: Path, fake: FakeUpstream) -> None:
    async with running(tmp_path, fake, oauth_timeout_seconds=0.05) as proxy:
        await proxy.client.post("/api/accounts/oauth/start")
        state = await status_until(proxy, lambda s: s["status"] != "pending")
        assert state["error"]["code"] == "timeout" and "timed out" in state["error"]["message"]


async def test_import_one_or_many(proxy: ProxyHarness, caplog) -> None:
    fake = proxy.fake
    one, two = fake.add_account("acct-one"), fake.add_account("acct-two")
    first = await proxy.client.post("/api/accounts/import", json=one.auth_json())
    assert first.status_code == 200 and first.json()["data"][0]["created"] is True
    both = await proxy.client.post("/api/accounts/import", json=[one.auth_json(), camel(two)])
    assert [a["created"] for a in both.json()["data"]] == [False, True]
    assert {a.chatgpt_account_id for a in proxy.lb.pool.all()} == {"acct-one", "acct-two"}
    bad = await proxy.client.post("/api/accounts/import", json=[fake.add_account().auth_json(), {"tokens": {}}])
    message = bad.json()["error"]["message"]
    assert bad.status_code == 400 and "item 1: tokens lack id_token and access_token" in message
    assert "item 0" not in message and message.endswith("nothing was imported")
    assert len(proxy.lb.pool.accounts) == 2 and len(await proxy.lb.store.list()) == 2
    garbage = fake.add_account().auth_json()
    garbage["tokens"]["id_token"] = "abc"
    refused = await proxy.client.post("/api/accounts/import", json=garbage)
    assert refused.status_code == 400 and refused.json()["error"]["message"] == (
        "id_token is not a JWT (expected header.payload.signature with a JSON payload); copy the auth.json "
        "Codex wrote, unchanged; nothing was imported")
    not_json = await proxy.client.post("/api/accounts/import", content=b"{",
                                       headers={"content-type": "application/json"})
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "invalid_json"
    assert_no_secrets(fake, first.text, both.text, bad.text, caplog=caplog)


async def test_get_patch_delete(proxy: ProxyHarness) -> None:
    account = proxy.fake.add_account("acct-admin", email="admin@example.com")
    imported = (await proxy.client.post("/api/accounts/import", json=account.auth_json())).json()["data"][0]
    ref = imported["id"]
    got = (await proxy.client.get(f"/api/accounts/{ref[:8]}")).json()
    assert got["email"] == "admin@example.com" and not {"access_token", "refresh_token"} & set(got)
    patched = await proxy.client.patch(f"/api/accounts/{ref}", json={"label": "main", "priority": 5,
                                                                      "status": "paused"})
    assert patched.status_code == 200
    assert (patched.json()["label"], patched.json()["priority"], patched.json()["status"]) == ("main", 5, "paused")
    live = proxy.lb.pool.get(ref)
    assert live is not None and (live.label, live.priority, live.status) == ("main", 5, AccountStatus.PAUSED)
    assert proxy.lb.pool.usable() == []
    row = await proxy.lb.store.get(ref)  # type: ignore[union-attr]
    assert row is not None and (row.label, row.priority, row.status) == ("main", 5, AccountStatus.PAUSED)
    resumed = await proxy.client.patch("/api/accounts/main", json={"status": "active"})
    assert resumed.json()["status"] == "active" and proxy.lb.pool.usable() == [live]

    for body, code in (({"email": "x"}, 400), ({"status": "deleted"}, 400), ({"priority": "high"}, 400),
                       ({"label": ""}, 400), ([], 400)):
        answer = await proxy.client.patch(f"/api/accounts/{ref}", json=body)
        assert answer.status_code == code and answer.json()["error"]["type"] == "invalid_request_error"
    proxy.lb.pool.set_status(live, AccountStatus.REAUTH_REQUIRED, "refresh_token_expired")
    await proxy.lb.store.update(ref, status="reauth_required", status_reason="refresh_token_expired")  # type: ignore[union-attr]
    refused = await proxy.client.patch(f"/api/accounts/{ref}", json={"status": "active"})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "reauth_required"

    missing = await proxy.client.get("/api/accounts/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "account_not_found"
    deleted = await proxy.client.delete(f"/api/accounts/{ref}")
    assert deleted.json() == {"id": ref, "object": "account", "deleted": True}
    assert proxy.lb.pool.accounts == {} and await proxy.lb.store.list() == []  # type: ignore[union-attr]


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (a socket bound to it is reachable locally)."""
    candidates: list[str] = []
    with contextlib.suppress(OSError):
        candidates += [info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)]
    for probe in ("10.255.255.255", "192.0.2.1"):
        with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.connect((probe, 9))
            candidates.append(udp.getsockname()[0])
    return next((ip for ip in candidates if not is_loopback(ip) and ip != "0.0.0.0"), None)


async def test_api_refuses_non_loopback_clients(tmp_path: Path, fake: FakeUpstream) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    app = create_app(make_settings(tmp_path, fake, pipeline_plugins=PIPELINE))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((address, 0))
    sock.set_inheritable(True)
    shutdown = asyncio.Event()
    server = asyncio.ensure_future(serve_app(app, sock, shutdown))
    try:
        async with httpx.AsyncClient(base_url=f"http://{address}:{sock.getsockname()[1]}", timeout=10) as client:
            async with asyncio.timeout(10):
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        if (await client.get("/healthz")).status_code == 200:
                            break
                    await asyncio.sleep(0.01)
            for method, path in (("GET", "/api/accounts"), ("POST", "/api/accounts/oauth/start"),
                                 ("DELETE", "/api/accounts/x")):
                answer = await client.request(method, path)
                assert answer.status_code == 403
                error = answer.json()["error"]
                assert error["code"] == "forbidden" and "only clients on this machine" in error["message"]
        assert lb_of(app).pool.accounts == {}
    finally:
        shutdown.set()
        await server
        with contextlib.suppress(OSError):  # Hypercorn closed it already
            sock.close()


@pytest.mark.parametrize("headers", [
    {"x-forwarded-for": "203.0.113.5"}, {"x-forwarded-for": "127.0.0.1, 198.51.100.7"},
    {"x-real-ip": "203.0.113.5"}, {"forwarded": 'for="[2001:db8::1]:443";proto=https'},
    {"x-forwarded-for": "127.0.0.1"},  # a local proxy forwarding a local client is still a proxy
])
async def test_api_refuses_clients_behind_a_local_reverse_proxy(tmp_path: Path, headers: dict[str, str]) -> None:
    async with proxy_server(tmp_path, accounts=1) as proxy:
        refused = await proxy.client.get("/api/accounts", headers=headers)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
        assert (await proxy.client.get("/api/jobs", headers=headers)).status_code == 403
        assert (await proxy.client.get("/api/accounts")).status_code == 200
