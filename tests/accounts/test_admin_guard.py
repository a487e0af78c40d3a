"""The admin guard of ``/api``: loopback only, ``Host``/``Origin`` checked, JSON bodies only.

Forwarding headers are sent as raw header lines (repeated lines included) over a real socket.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from codexlb import ConfigError
from codexlb.settings import load_settings
from codexlb.testing.harness import ProxyHarness, proxy_server


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def raw_request(port: int, method: str, path: str, headers: list[tuple[str, str]],
                      body: bytes = b"") -> RawAnswer:
    """One HTTP/1.1 request with exactly these header lines (repeats kept), over a fresh connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"{method} {path} HTTP/1.1", *(f"{name}: {value}" for name, value in headers)]
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        lines.append("Connection: close")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        async with asyncio.timeout(10):
            data = await reader.read()
    finally:
        writer.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in header_lines)}
    if parsed.get("transfer-encoding") == "chunked":
        chunks, rest_ = [], rest
        while True:
            size_line, _, rest_ = rest_.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            chunks.append(rest_[:size])
            rest_ = rest_[size + 2:]
        rest = b"".join(chunks)
    return RawAnswer(int(status_line.split()[1]), parsed, rest)


@pytest.fixture
async def proxy(tmp_path: Path) -> Any:
    async with proxy_server(tmp_path, accounts=1, admin_allowed_hosts=("codexlb.internal",)) as harness:
        yield harness


def port_of(proxy: ProxyHarness) -> int:
    return int(proxy.url.rsplit(":", 1)[1])


@pytest.mark.parametrize("forwarding", [
    [("X-Forwarded-For", "127.0.0.1"), ("X-Forwarded-For", "8.8.8.8")],
    [("X-Real-IP", "127.0.0.1"), ("X-Real-IP", "8.8.8.8")],
    [("Forwarded", "for =8.8.8.8")],
    [("Forwarded", 'for="[2001:db8::1]:443";proto=https')],
    [("Forwarded", "proto=https"), ("Forwarded", "for=8.8.8.8")],
    [("Forwarded", "what is this")],
])
async def test_forwarded_requests_are_refused(proxy: ProxyHarness, forwarding: list[tuple[str, str]]) -> None:
    port = port_of(proxy)
    host = [("Host", f"127.0.0.1:{port}")]
    for path in ("/api/accounts", "/api/jobs"):
        refused = await raw_request(port, "GET", path, host + forwarding)
        assert refused.status == 403, (path, refused.body)
        assert refused.json()["error"]["code"] == "forbidden"
    assert (await raw_request(port, "GET", "/api/accounts", host)).status == 200


async def test_firewall_reads_repeated_forwarded_for_lines_as_one_chain(tmp_path: Path) -> None:
    options = {"firewall": {"allow": ["198.51.100.0/24", "127.0.0.1"]}}
    async with proxy_server(tmp_path, accounts=1, pipeline=("firewall", "select_round_robin", "upstream"),
                            plugin_options=options, firewall_trust_proxy_headers=True) as proxy:
        port = port_of(proxy)
        host = [("Host", f"127.0.0.1:{port}")]
        # The trusted proxy appended the real client on its own line: that is the client.
        spoofed = [("X-Forwarded-For", "198.51.100.7"), ("X-Forwarded-For", "203.0.113.9")]
        refused = await raw_request(port, "GET", "/backend-api/wham/usage", host + spoofed)
        assert refused.status == 403 and "203.0.113.9" in refused.json()["error"]["message"]
        allowed = [("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-For", "198.51.100.7")]
        assert (await raw_request(port, "GET", "/backend-api/wham/usage", host + allowed)).status == 200
        # A second line of only trusted hops does not hide the remote client of the first line.
        hidden = [("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-For", "127.0.0.1")]
        refused = await raw_request(port, "GET", "/backend-api/wham/usage", host + hidden)
        assert refused.status == 403 and "203.0.113.9" in refused.json()["error"]["message"]


@pytest.mark.parametrize(("host", "status"), [
    ("127.0.0.1:{port}", 200), ("localhost:{port}", 200), ("[::1]:{port}", 200), ("LOCALHOST", 200),
    ("codexlb.internal:8080", 200),
    ("evil.example:{port}", 403), ("127.0.0.1.evil.example", 403), ("localhost.evil.example:{port}", 403),
    ("", 403), ("127.0.0.1:{port}@evil.example", 403),
])
async def test_host_header(proxy: ProxyHarness, host: str, status: int) -> None:
    port = port_of(proxy)
    answer = await raw_request(port, "GET", "/api/accounts", [("Host", host.format(port=port))])
    assert answer.status == status, answer.body
    if status == 403:
        assert answer.json()["error"]["code"] == "host_not_allowed"
        assert "email" not in answer.body.decode()


async def test_dns_rebinding_cannot_read_accounts(proxy: ProxyHarness) -> None:
    port = port_of(proxy)
    mine = await raw_request(port, "GET", "/api/accounts", [("Host", f"127.0.0.1:{port}")])
    assert mine.status == 200 and mine.json()["data"]
    rebound = await raw_request(port, "GET", "/api/accounts", [("Host", f"attacker.example:{port}"),
                                                               ("Origin", f"http://attacker.example:{port}")])
    assert rebound.status == 403 and b"data" not in rebound.body


@pytest.mark.parametrize(("origin", "fetch_site", "status"), [
    (None, None, 200), ("http://127.0.0.1:{port}", "same-origin", 200), (None, "none", 200),
    ("http://evil.example", "cross-site", 403), ("http://evil.example", None, 403), ("null", None, 403),
    ("http://localhost:{port}", None, 403),  # another origin than the Host the request names
    ("http://127.0.0.1:1", None, 403), ("https://127.0.0.1:{port}", None, 403),
    (None, "cross-site", 403), (None, "same-site", 403),
])
async def test_origin(proxy: ProxyHarness, origin: str | None, fetch_site: str | None, status: int) -> None:
    port = port_of(proxy)
    headers = [("Host", f"127.0.0.1:{port}")]
    if origin is not None:
        headers.append(("Origin", origin.format(port=port)))
    if fetch_site is not None:
        headers.append(("Sec-Fetch-Site", fetch_site))
    answer = await raw_request(port, "GET", "/api/accounts", headers)
    assert answer.status == status, answer.body
    if status == 403:
        assert answer.json()["error"]["code"] == "cross_origin"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", None])
async def test_simple_requests_cannot_import_or_start_a_login(proxy: ProxyHarness, content_type: str | None) -> None:
    """A page's form post or "simple" fetch (no preflight) carries no JSON type: refused, nothing done."""
    port = port_of(proxy)
    account = proxy.fake.add_account("acct-attacker", email="attacker@example.com")
    body = json.dumps(account.auth_json()).encode()
    headers = [("Host", f"127.0.0.1:{port}")] + ([("Content-Type", content_type)] if content_type else [])
    answer = await raw_request(port, "POST", "/api/accounts/import", headers, body)
    assert answer.status == 415 and answer.json()["error"]["code"] == "unsupported_media_type"
    form = await raw_request(port, "POST", "/api/accounts/oauth/start", headers, b"label=x")
    assert form.status == 415
    assert "acct-attacker" not in {a.chatgpt_account_id for a in proxy.lb.pool.all()}
    assert (await proxy.client.get("/api/accounts/oauth/status")).json()["status"] == "idle"
    cross = await raw_request(port, "POST", "/api/accounts/import",
                              [("Host", f"127.0.0.1:{port}"), ("Origin", "http://evil.example"),
                               ("Content-Type", "application/json")], body)
    assert cross.status == 403
    ok = await raw_request(port, "POST", "/api/accounts/import",
                           [("Host", f"127.0.0.1:{port}"), ("Content-Type", "application/json")], body)
    assert ok.status == 200 and "acct-attacker" in {a.chatgpt_account_id for a in proxy.lb.pool.all()}


def test_admin_allowed_hosts_setting(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, environ={"CODEX_LB_ADMIN_ALLOWED_HOSTS": "Dash.Example, 10.0.0.5"})
    assert settings.admin_allowed_hosts == ("dash.example", "10.0.0.5")
    with pytest.raises(ConfigError, match="CODEX_LB_ADMIN_ALLOWED_HOSTS: .*'http://x.example/' is not a host name"):
        load_settings(tmp_path, environ={"CODEX_LB_ADMIN_ALLOWED_HOSTS": "http://x.example/"})
