"""One admission path: every client route in the app's URL map refuses an unadmitted client.

Over real sockets, with the api_keys plugin enforcing a static key (``CODEX_LB_API_KEYS``) or a key
stored in the database, or the firewall enforcing an allowlist. The WebSocket handshake on
``/backend-api/codex/responses`` is admitted too: refused like any route, or upgraded for an
admitted client; a plain GET there gets 426 so a client falls back to HTTP.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from codexlb.testing.harness import TEST_PLUGINS, ProxyHarness, proxy_server
from codexlb.testing.secrets import register_secret
from tests.accounts.test_admin_guard import raw_request
from tests.keys.conftest import make_key, plugin

KEY = "sk-codexlb-admission-key-0123456789"
register_secret(KEY)
NOT_CLIENT = ("/api/", "/healthz", "/readyz", "/metrics", "/dashboard")  # /dashboard: its own sign-in
KNOWN_CLIENT_ROUTES = {"/backend-api/wham/usage", "/backend-api/wham/accounts/check", "/backend-api/wham/settings/user",
                       "/backend-api/codex/responses", "/v1/responses", "/v1/models"}
PIPELINE = ("firewall", "api_keys", *TEST_PLUGINS)
CONFIGS = {
    "static_key": ({"api_keys": (KEY,)}, 401, "invalid_api_key"),
    "stored_key": ({}, 401, "invalid_api_key"),  # a key made through /api/keys before the walk
    "allowlist": ({"plugin_options": {"firewall": {"allow": ["10.0.0.0/8"]}}}, 403, "ip_not_allowed"),
}


def client_routes(proxy: ProxyHarness) -> list[tuple[str, str, bool]]:
    """``(method, path, websocket)`` of every client route of the running app."""
    assert proxy.lb.quart is not None
    routes = []
    for rule in proxy.lb.quart.url_map.iter_rules():
        path = re.sub(r"<[^>]+>", "x", rule.rule)
        if path.startswith(NOT_CLIENT) or path in NOT_CLIENT:
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            routes.append((method, path, bool(rule.websocket)))
    return routes


async def websocket_status(url: str, headers: dict[str, str] | None = None) -> int:
    """The status a real WebSocket client's handshake gets (it must not be accepted)."""
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with session.ws_connect(url, headers=headers):
                pass
    return refused.value.status


@pytest.mark.parametrize("config", list(CONFIGS))
async def test_every_client_route_is_admitted(tmp_path: Path, config: str) -> None:
    overrides, status, code = CONFIGS[config]
    async with proxy_server(tmp_path, accounts=1, pipeline=PIPELINE, **overrides) as proxy:
        if config == "stored_key":
            await make_key(proxy, "walker")
            assert plugin(proxy).ring.required
        routes = client_routes(proxy)
        assert KNOWN_CLIENT_ROUTES <= {path for _, path, _ in routes}
        assert any(websocket for _, _, websocket in routes)
        for method, path, websocket in routes:
            if websocket:
                got = await websocket_status(proxy.url.replace("http", "ws") + path)
                assert got == status, (method, path, "websocket")
                continue
            answer = await proxy.client.request(method, path, headers={"content-type": "application/json"})
            assert answer.status_code == status, (method, path, answer.text)
            assert answer.json()["error"]["code"] == code, (method, path)
        assert not [q for q in proxy.fake.requests if q.endpoint in ("responses", "compact", "models")]
        for path in ("/healthz", "/readyz", "/api/accounts"):  # not client routes: their own rules
            assert (await proxy.client.get(path)).status_code == 200, path


@pytest.mark.parametrize("stored", [False, True], ids=["static_key", "stored_key"])
async def test_admitted_client_reaches_the_routes(tmp_path: Path, stored: bool) -> None:
    async with proxy_server(tmp_path, accounts=1, pipeline=PIPELINE, api_keys=() if stored else (KEY,)) as proxy:
        key = await make_key(proxy, "client") if stored else KEY
        auth = {"authorization": f"Bearer {key}"}
        usage = await proxy.client.get("/backend-api/wham/usage", headers=auth)
        assert usage.status_code == 200 and "rate_limit" in usage.json()
        check = await proxy.client.get("/backend-api/wham/accounts/check", headers={"x-api-key": key})
        assert check.status_code == 200 and check.json()["accounts"]
        for path in ("/v1/models", "/backend-api/codex/models"):
            assert (await proxy.client.get(path, headers=auth)).status_code == 200, path
            assert (await proxy.client.get(path, headers={"x-api-key": key + "x"})).status_code == 401, path
        async with aiohttp.ClientSession() as session, session.ws_connect(
                proxy.url.replace("http", "ws") + "/backend-api/codex/responses", headers=auth) as ws:
            await ws.send_json({"type": "response.create", "model": "gpt-5.5", "input": "hi", "store": False})
            while (frame := await ws.receive_json(timeout=10))["type"] != "response.completed":
                assert frame["type"] != "error", frame
        assert not [q for q in proxy.fake.requests if key in str(dict(q.headers))]  # never forwarded


async def test_plain_get_gets_426_and_a_client_falls_back_to_http(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, accounts=1) as proxy:
        port = int(proxy.url.rsplit(":", 1)[1])
        answer = await raw_request(port, "GET", "/backend-api/codex/responses", [("Host", f"127.0.0.1:{port}")])
        assert answer.status == 426 and answer.headers.get("upgrade") == "websocket"
        assert answer.json()["error"]["code"] == "upgrade_required"
        body: dict[str, Any] = {"model": "gpt-5.5", "input": "hi", "store": False, "stream": True}
        fallback = await proxy.client.post("/backend-api/codex/responses", json=body)
        assert fallback.status_code == 200 and b"response.completed" in fallback.content
