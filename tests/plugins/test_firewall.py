"""Firewall: client IP resolution, allowlist, option checks (bind check: tests/core/test_bind.py; keys: tests/keys)."""

from __future__ import annotations

from pathlib import Path

import pytest

from codexlb import ConfigError
from codexlb.settings import Settings, load_settings
from codexlb.testing import make_flow
from codexlb.testing.harness import proxy_server
from plugins.firewall import UNKNOWN, Firewall, parse_ip, parse_networks, resolve_client_ip

TRUSTED = parse_networks(["127.0.0.1/32", "::1/128", "10.0.0.0/8", "fd00::/8"], "test")
PIPELINE = ("firewall", "select_round_robin", "upstream")
BODY = {"model": "gpt-5", "input": "hi", "store": False, "stream": True}


def make_firewall(allow: object = None, *, trust: bool = False,
                  trusted: tuple[str, ...] = ("127.0.0.1/32",)) -> Firewall:
    fw = Firewall()
    settings = Settings(firewall_trust_proxy_headers=trust, firewall_trusted_proxy_cidrs=trusted)
    fw.configure({} if allow is None else {"allow": allow}, settings)
    return fw


# -- IP resolution ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("1.2.3.4", "1.2.3.4"), (" 1.2.3.4 ", "1.2.3.4"), ("1.2.3.4:8080", "1.2.3.4"), ('"1.2.3.4"', "1.2.3.4"),
    ("::1", "::1"), ("[::1]", "::1"), ("[2001:db8::1]:443", "2001:db8::1"), ("::ffff:10.1.2.3", "10.1.2.3"),
    ("[::ffff:127.0.0.1]:80", "127.0.0.1"), ("fe80::1%eth0", "fe80::1%eth0"),
    ("", None), ("unknown", None), ("_hidden", None), ("1.2.3", None), ("999.1.1.1", None),
    ("1.2.3.4.5", None), ("[::1", None), ("example.com", None), ("1.2.3.4:80:90", None), ("x" * 100, None),
])
def test_parse_ip(text: str, expected: str | None) -> None:
    parsed = parse_ip(text)
    assert (None if parsed is None else str(parsed)) == expected


@pytest.mark.parametrize(("peer", "xff", "expected"), [
    # not a trusted peer: the header is ignored whatever it says
    ("203.0.113.9", "10.0.0.1", "203.0.113.9"),
    ("203.0.113.9", "127.0.0.1, 10.0.0.1", "203.0.113.9"),
    # trusted peer: right-most untrusted hop
    ("127.0.0.1", "198.51.100.7", "198.51.100.7"),
    ("127.0.0.1", "198.51.100.7, 10.0.0.2", "198.51.100.7"),
    ("10.0.0.3", "198.51.100.7,10.0.0.2,  10.9.9.9", "198.51.100.7"),
    # spoofing: addresses the client prepends are left of the real one and never reached
    ("127.0.0.1", "10.0.0.1, 198.51.100.7", "198.51.100.7"),
    ("127.0.0.1", "127.0.0.1, 198.51.100.7", "198.51.100.7"),
    ("127.0.0.1", "garbage, 198.51.100.7", "198.51.100.7"),
    ("127.0.0.1", "1.1.1.1, 2.2.2.2, 198.51.100.7, 10.0.0.2", "198.51.100.7"),
    # garbage where the client should be: unknown (fails any allowlist), never the proxy
    ("127.0.0.1", "198.51.100.7, garbage", UNKNOWN),
    ("127.0.0.1", "198.51.100.7, unknown, 10.0.0.2", UNKNOWN),
    # empty or missing header, or only commas: the peer
    ("127.0.0.1", "", "127.0.0.1"), ("127.0.0.1", None, "127.0.0.1"), ("127.0.0.1", " , ,", "127.0.0.1"),
    # every hop trusted: the first one sent the request
    ("127.0.0.1", "10.0.0.5, 10.0.0.2", "10.0.0.5"),
    # ports and brackets in hops
    ("127.0.0.1", "198.51.100.7:5555", "198.51.100.7"),
    ("127.0.0.1", "[2001:db8::7]:443", "2001:db8::7"),
    # IPv6 peers and chains, IPv4-mapped peers
    ("::1", "2001:db8::7", "2001:db8::7"),
    ("fd00::1", "2001:db8::7, fd00::2", "2001:db8::7"),
    ("::ffff:127.0.0.1", "198.51.100.7", "198.51.100.7"),
    ("::ffff:198.51.100.7", "10.0.0.1", "198.51.100.7"),
    ("2001:db8::9", "10.0.0.1", "2001:db8::9"),
    ("::1", "::ffff:10.0.0.2, ::ffff:198.51.100.7", "198.51.100.7"),
    # a garbage peer (e.g. a unix socket name)
    ("unix:/tmp/sock", "198.51.100.7", UNKNOWN),
])
def test_resolve_client_ip_trusted_chain(peer: str, xff: str | None, expected: str) -> None:
    assert resolve_client_ip(peer, xff, TRUSTED) == expected


def test_resolve_client_ip_ignores_header_when_not_trusting() -> None:
    assert resolve_client_ip("127.0.0.1", "198.51.100.7", None) == "127.0.0.1"


async def test_admit_sets_client_ip_and_allowlist() -> None:
    fw = make_firewall(["198.51.100.0/24"], trust=True)
    flow = make_flow(headers={"x-forwarded-for": "10.0.0.1, 198.51.100.7"}, client_ip="127.0.0.1")
    await fw.admit_request(flow)
    assert flow.request.client_ip == "198.51.100.7" and flow.response is None
    spoofed = make_flow(headers={"x-forwarded-for": "198.51.100.7, 203.0.113.1"}, client_ip="127.0.0.1")
    await fw.admit_request(spoofed)
    assert spoofed.response is not None and spoofed.response.status == 403
    assert spoofed.error_code == "ip_not_allowed"


async def test_untrusted_peer_cannot_use_header() -> None:
    fw = make_firewall(["198.51.100.0/24"], trust=True)
    flow = make_flow(headers={"x-forwarded-for": "198.51.100.7"}, client_ip="203.0.113.1")
    await fw.admit_request(flow)
    assert flow.response is not None and flow.response.status == 403


async def test_unknown_client_is_refused_by_allowlist() -> None:
    fw = make_firewall(["0.0.0.0/0", "::/0"], trust=True)
    flow = make_flow(headers={"x-forwarded-for": "198.51.100.7, junk"}, client_ip="127.0.0.1")
    await fw.admit_request(flow)
    assert flow.request.client_ip == UNKNOWN and flow.response is not None and flow.response.status == 403


async def test_ipv6_allowlist_and_single_host() -> None:
    fw = make_firewall("2001:db8::/32, 192.0.2.5")
    for ip, ok in [("2001:db8::1", True), ("2001:db9::1", False), ("192.0.2.5", True), ("192.0.2.6", False),
                   ("::ffff:192.0.2.5", True)]:
        flow = make_flow(client_ip=ip)
        await fw.admit_request(flow)
        assert (flow.response is None) is ok, ip


async def test_firewall_leaves_keys_alone() -> None:
    flow = make_flow(headers={"authorization": "Bearer anything"})
    await make_firewall().admit_request(flow)
    assert flow.response is None and flow.request.headers["authorization"] == "Bearer anything"


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize("allow", [["10.0.0.0/8", "not-a-cidr"], "10.0.0.0/33", ["10.0.0.0/8", "::g/64"], 42])
def test_bad_allow_is_config_error(allow: object) -> None:
    with pytest.raises(ConfigError, match=r"\[plugins.firewall\] allow"):
        make_firewall(allow)


def test_unknown_option_is_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown option"):
        Firewall().configure({"alow": ["10.0.0.0/8"]}, Settings())


def test_allow_from_env_comma_string(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, environ={"CODEX_LB_PLUGINS__FIREWALL__ALLOW": "10.0.0.0/8, 192.168.1.0/24"})
    fw = Firewall()
    fw.configure(settings.options_for("firewall"), settings)
    assert [str(n) for n in fw.allow] == ["10.0.0.0/8", "192.168.1.0/24"]
    settings = load_settings(tmp_path, environ={"CODEX_LB_PLUGINS__FIREWALL__ALLOW": '["::1/128"]'})
    fw.configure(settings.options_for("firewall"), settings)
    assert [str(n) for n in fw.allow] == ["::1/128"]


# -- over real sockets -----------------------------------------------------------------------------


async def test_allowlist_over_sockets(tmp_path: Path) -> None:
    options = {"firewall": {"allow": ["10.0.0.0/8"]}}
    async with proxy_server(tmp_path, pipeline=PIPELINE, plugin_options=options) as proxy:
        r = await proxy.client.post("/backend-api/codex/responses", json=BODY)
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "ip_not_allowed"
        assert r.json()["error"]["type"] == "invalid_request_error"
        assert not [q for q in proxy.fake.requests if q.endpoint == "responses"]
        assert (await proxy.client.get("/healthz")).status_code == 200


async def test_trusted_proxy_header_over_sockets(tmp_path: Path) -> None:
    options = {"firewall": {"allow": ["198.51.100.0/24"]}}
    async with proxy_server(tmp_path, pipeline=PIPELINE, plugin_options=options, firewall_trust_proxy_headers=True,
                            firewall_trusted_proxy_cidrs=("127.0.0.1/32",)) as proxy:
        ok = await proxy.client.post("/backend-api/codex/responses", json=BODY,
                                     headers={"x-forwarded-for": "198.51.100.7"})
        assert ok.status_code == 200
        spoofed = await proxy.client.post("/backend-api/codex/responses", json=BODY,
                                          headers={"x-forwarded-for": "198.51.100.7, 203.0.113.1"})
        assert spoofed.status_code == 403
        assert (await proxy.client.get("/healthz")).status_code == 200
