"""image_inline: the SSRF address classifier, every refusal, and inlining over real sockets."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yarl
from aiohttp import web

from codexlb import BadRequest, ConfigError
from codexlb.settings import Settings
from codexlb.testing import make_flow
from codexlb.testing.harness import proxy_server
from plugins._ssrf import IPAddress, refusal_reason, system_lookup
from plugins.image_inline import ImageInline, host_allowed, image_refs

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
TEST_IP = ipaddress.ip_address("127.0.0.2")
"""The test image server's address: the only non-public address the test policy allows."""


def test_policy(address: IPAddress) -> str | None:
    return None if address == TEST_IP else refusal_reason(address)


test_policy.__test__ = False  # type: ignore[attr-defined]
NAMES = {"img.test": ["127.0.0.2"], "cdn.img.test": ["127.0.0.2"], "evil.test": ["127.0.0.1"],
         "mixed.test": ["127.0.0.2", "10.0.0.7"], "meta.test": ["169.254.169.254"]}


async def test_lookup(host: str, port: int) -> list[IPAddress]:
    if host in NAMES:
        return [ipaddress.ip_address(a) for a in NAMES[host]]
    return await system_lookup(host, port)


test_lookup.__test__ = False  # type: ignore[attr-defined]

# -- the address classifier ------------------------------------------------------------------------

REFUSED = [
    "127.0.0.1", "127.255.255.254", "10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.255",
    "192.168.1.1", "169.254.169.254", "169.254.0.1", "100.64.0.1", "100.127.255.254", "0.0.0.0", "0.1.2.3",
    "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255", "192.0.0.8", "192.0.2.1", "198.18.0.1",
    "198.51.100.1", "203.0.113.1", "192.88.99.1",
    "::", "::1", "fe80::1", "fe80::1%eth0", "fc00::1", "fd12:3456::1", "fec0::1", "ff02::1", "ff0e::1",
    "2001:db8::1", "100::1", "2001::1", "2001:10::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::ffff:100.64.0.1", "::ffff:0.0.0.0",
    "::127.0.0.1", "::10.0.0.1", "::ffff:0:127.0.0.1", "64:ff9b::127.0.0.1", "64:ff9b::a9fe:a9fe",
    "64:ff9b:1::10.0.0.1", "2002:7f00:1::", "2002:a00:1::1", "2002:a9fe:a9fe::",
]
ALLOWED = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "100.63.255.255", "100.128.0.1", "172.15.255.255",
           "172.32.0.1", "192.169.0.1", "2606:4700:4700::1111", "2a00:1450:4001::200e", "::ffff:8.8.8.8",
           "64:ff9b::808:808", "2002:808:808::1"]


@pytest.mark.parametrize("text", REFUSED)
def test_refused_addresses(text: str) -> None:
    assert refusal_reason(ipaddress.ip_address(text)) is not None


@pytest.mark.parametrize("text", ALLOWED)
def test_public_addresses(text: str) -> None:
    assert refusal_reason(ipaddress.ip_address(text)) is None


@pytest.mark.parametrize(("text", "words"), [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.1.1", "private"), ("169.254.169.254", "link-local"),
    ("100.64.0.1", "CGNAT"), ("224.0.0.1", "multicast"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("::ffff:127.0.0.1", "IPv4-mapped loopback"), ("::127.0.0.1", "IPv4-compatible loopback"),
    ("64:ff9b::a00:1", "NAT64 private"), ("2002:7f00:1::", "6to4 loopback"), ("240.1.1.1", "reserved"),
])
def test_reasons_are_named(text: str, words: str) -> None:
    assert words in (refusal_reason(ipaddress.ip_address(text)) or "")


@pytest.mark.parametrize(("host", "allowed", "ok"), [
    ("img.test", ("img.test",), True), ("IMG.test.", ("img.test",), True), ("a.img.test", ("img.test",), False),
    ("a.img.test", ("*.img.test",), True), ("img.test", ("*.img.test",), False),
    ("evilimg.test", ("*.img.test",), False), ("other.test", ("img.test", "*.cdn.test"), False),
])
def test_host_allowed(host: str, allowed: tuple[str, ...], ok: bool) -> None:
    assert host_allowed(host, allowed) is ok


def test_image_refs_finds_both_shapes() -> None:
    payload: dict[str, Any] = {
        "input": [{"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "image_url"},
            {"type": "input_image", "image_url": "https://a.test/1.png"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
            {"type": "input_image", "image_url": {"url": "HTTP://a.test/2.png"}}]},
            {"type": "function_call_output", "output": [{"type": "input_image", "image_url": "http://a.test/3"}]}],
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://b.test/x"}},
                                                  {"type": "image_url", "image_url": "https://b.test/y"}]}],
        "tools": [{"type": "function", "parameters": {"type": "object"}}],
    }
    assert [url for _, url in image_refs(payload)] == [
        "https://a.test/1.png", "HTTP://a.test/2.png", "http://a.test/3", "https://b.test/x", "https://b.test/y"]


@pytest.mark.parametrize(("options", "message"), [
    ({"max_bytes": 0}, "max_bytes: invalid value 0; allowed: a whole number in 1"),
    ({"max_bytes": "big"}, "max_bytes: invalid value 'big'"), ({"timeout_seconds": -1}, "timeout_seconds"),
    ({"max_redirects": 1.5}, "a whole number"), ({"max_images": True}, "max_images"), ({"proxy": "x"}, "unknown"),
])
def test_bad_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ImageInline().configure(options, Settings())


# -- an image server on 127.0.0.2 ------------------------------------------------------------------


@pytest.fixture
async def images() -> AsyncIterator[str]:
    hang = asyncio.Event()

    async def png(request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    async def text(request: web.Request) -> web.Response:
        return web.Response(text="<html>", content_type="text/html")

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "image/png"})
        await response.prepare(request)  # no content-length: the cap is applied while reading
        for _ in range(int(request.query.get("kib", "64"))):
            await response.write(b"\x00" * 1024)
        return response

    async def slow(request: web.Request) -> web.Response:
        await hang.wait()
        return web.Response(body=PNG, content_type="image/png")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404)

    app = web.Application()
    app.add_routes([web.get("/a.png", png), web.get("/page", text), web.get("/big", big), web.get("/slow", slow),
                    web.get("/redirect", redirect), web.get("/missing", missing)])
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.2", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"127.0.0.2:{port}"
    finally:
        hang.set()
        await runner.cleanup()


def make_plugin(policy: Any = test_policy, options: dict[str, Any] | None = None, **settings: Any) -> ImageInline:
    plugin = ImageInline(policy=policy, lookup=test_lookup)
    plugin.configure(options or {}, Settings(**settings))
    return plugin


async def inline(plugin: ImageInline, url: str) -> str:
    payload = {"model": "gpt-5", "input": [{"type": "message", "role": "user", "content": [
        {"type": "input_image", "image_url": url}]}]}
    flow = make_flow(payload=payload)
    try:
        await plugin.transform_request(flow)
    finally:
        await plugin.shutdown()
    assert flow.request.payload_modified
    return flow.request.payload["input"][0]["content"][0]["image_url"]  # type: ignore[index]


async def refused(plugin: ImageInline, url: str, code: str = "image_fetch_refused") -> str:
    with pytest.raises(BadRequest) as info:
        await inline(plugin, url)
    assert info.value.status == 400 and info.value.code == code, info.value.message
    assert "/a.png" not in info.value.message and "?to=" not in info.value.message  # host only, never the URL
    return info.value.message


async def test_inlines_from_allowed_test_server(images: str) -> None:
    port = images.split(":")[1]
    for host in (images, f"img.test:{port}"):
        data_url = await inline(make_plugin(), f"http://{host}/a.png")
        assert data_url == "data:image/png;base64," + base64.b64encode(PNG).decode()


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{port}/a.png", "http://10.0.0.1/a.png", "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:127.0.0.1]:{port}/a.png", "http://100.64.0.1/a.png", "http://localhost:{port}/a.png",
    "http://[::1]:{port}/a.png", "http://0.0.0.0:{port}/a.png", "http://127.1:{port}/a.png",
    "http://2130706433:{port}/a.png", "http://0x7f.0.0.1/a.png", "http://evil.test:{port}/a.png",
    "http://mixed.test:{port}/a.png", "http://meta.test/a.png",
    "http://{host}/redirect?to=http://127.0.0.1:{port}/a.png",
    "http://{host}/redirect?to=http://evil.test:{port}/a.png",
    "http://{host}/redirect?to=http://[::ffff:7f00:1]:{port}/a.png",
    "http://{host}/redirect?to=file:///etc/passwd",
])
async def test_ssrf_refused_with_default_policy(images: str, url: str) -> None:
    port = images.split(":")[1]
    await refused(make_plugin(), url.format(port=port, host=images))


async def test_default_policy_refuses_the_test_server_itself(images: str) -> None:
    await refused(make_plugin(policy=refusal_reason), f"http://{images}/a.png")


async def test_redirects_are_followed_and_bounded(images: str) -> None:
    hop = f"http://{images}/redirect?to="
    assert (await inline(make_plugin(), f"{hop}/a.png")).startswith("data:image/png;base64,")
    chain = f"http://{images}/a.png"
    for _ in range(4):
        chain = str(yarl.URL(f"http://{images}/redirect").with_query(to=chain))
    assert "more than 3 redirects" in await refused(make_plugin(options={"max_redirects": 3}), chain)
    assert (await inline(make_plugin(options={"max_redirects": 4}), chain)).startswith("data:image/png")


async def test_allowed_hosts(images: str) -> None:
    port = images.split(":")[1]
    plugin = make_plugin(image_inline_allowed_hosts=("*.img.test",))
    assert (await inline(plugin, f"http://cdn.img.test:{port}/a.png")).startswith("data:image/png")
    message = await refused(make_plugin(image_inline_allowed_hosts=("*.img.test",)), f"http://img.test:{port}/a.png")
    assert "IMAGE_INLINE_ALLOWED_HOSTS" in message
    await refused(make_plugin(image_inline_allowed_hosts=("img.test",)), f"http://{images}/a.png")
    # a redirect leaving the allowed hosts is refused too
    await refused(make_plugin(image_inline_allowed_hosts=("img.test",)),
                  f"http://img.test:{port}/redirect?to=http://{images}/a.png")


async def test_size_cap(images: str) -> None:
    assert await inline(make_plugin(options={"max_bytes": 65536}), f"http://{images}/big?kib=64")
    message = await refused(make_plugin(options={"max_bytes": 65536}), f"http://{images}/big?kib=65")
    assert "larger than 65536" in message


async def test_not_an_image(images: str) -> None:
    assert "text/html" in await refused(make_plugin(), f"http://{images}/page")


async def test_http_error_and_timeout_fail(images: str) -> None:
    assert "HTTP 404" in await refused(make_plugin(), f"http://{images}/missing", "image_fetch_failed")
    message = await refused(make_plugin(options={"timeout_seconds": 0.2}), f"http://{images}/slow",
                            "image_fetch_failed")
    assert "timed out" in message


async def test_too_many_images_and_disabled(images: str) -> None:
    urls = [f"http://{images}/a.png?{n}" for n in range(3)]
    payload = {"input": [{"type": "message", "role": "user",
                          "content": [{"type": "input_image", "image_url": u} for u in urls]}]}
    with pytest.raises(BadRequest, match="too many"):
        await make_plugin(options={"max_images": 2}).transform_request(make_flow(payload=payload))
    flow = make_flow(payload=payload)
    await make_plugin(image_inline_fetch_enabled=False).transform_request(flow)
    assert not flow.request.payload_modified


@pytest.mark.parametrize("url", ["data:image/png;base64,AAAA", "file:///etc/passwd", "ftp://img.test/a.png"])
async def test_other_urls_are_left_alone(url: str) -> None:
    """Only http(s) is fetched; anything else goes upstream unchanged (the backend refuses it)."""
    flow = make_flow(payload={"model": "gpt-5", "input": [{"type": "message", "role": "user", "content": [
        {"type": "input_image", "image_url": url}]}]})
    await make_plugin().transform_request(flow)
    assert not flow.request.payload_modified


# -- over real sockets -----------------------------------------------------------------------------


async def test_codex_and_chat_routes_over_sockets(tmp_path: Path, images: str) -> None:
    plugin = ImageInline(policy=test_policy, lookup=test_lookup)
    expected = "data:image/png;base64," + base64.b64encode(PNG).decode()
    async with proxy_server(tmp_path, pipeline=("select_round_robin", "upstream"), plugins=(plugin,)) as proxy:
        body = {"model": "gpt-5", "store": False, "stream": True, "input": [{"type": "message", "role": "user",
                "content": [{"type": "input_image", "image_url": f"http://{images}/a.png"}]}]}
        r = await proxy.client.post("/backend-api/codex/responses", json=body)
        assert r.status_code == 200, r.text
        assert proxy.fake.requests[-1].json["input"][0]["content"][0]["image_url"] == expected
        chat = {"model": "gpt-5", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": f"http://{images}/a.png"}}]}]}
        r = await proxy.client.post("/v1/chat/completions", json=chat)
        assert r.status_code == 200, r.text
        sent = proxy.fake.requests[-1].json["input"][0]["content"]
        assert {"type": "input_image", "image_url": expected} in [
            {k: v for k, v in part.items() if k != "detail"} for part in sent]
        bad = {**body, "input": [{"type": "message", "role": "user",
                                  "content": [{"type": "input_image", "image_url": "http://169.254.169.254/"}]}]}
        r = await proxy.client.post("/backend-api/codex/responses", json=bad)
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "image_fetch_refused"
        assert (await proxy.client.get("/healthz")).status_code == 200
