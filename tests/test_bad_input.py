"""Client mistakes get a clear 4xx in OpenAI's error shape, over real sockets, and nothing logged at ERROR.

What the app cannot shape: requests Hypercorn refuses before the app sees them. A request head
larger than Hypercorn's ``h11_max_incomplete_size`` (16 KiB: one huge header, a huge URL) gets
``431`` with an empty body and the connection closed; malformed HTTP (a bad ``Content-Length``,
control characters in a header name, a broken chunk, garbage instead of a request line) gets
``400`` with an empty body. Both are still 4xx, and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from codexlb.testing.harness import ProxyHarness, proxy_server

PIPELINE = ("firewall", "decompress", "image_inline", "select_round_robin", "upstream", "sse_limit", "log_stdout")
JSON = {"content-type": "application/json"}
CODEX = "/backend-api/codex/responses"


pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ProxyHarness]:
    """One proxy for the whole module (each case is a single request)."""
    async with proxy_server(tmp_path_factory.mktemp("bad_input"), pipeline=PIPELINE,
                            max_decompressed_body_bytes=64 * 1024) as harness:
        yield harness


@pytest_asyncio.fixture(loop_scope="module")
async def proxy(server: ProxyHarness, caplog: pytest.LogCaptureFixture) -> AsyncIterator[ProxyHarness]:
    """The proxy; afterwards it still answers /healthz and nothing was logged at ERROR."""
    caplog.set_level(logging.DEBUG)
    yield server
    assert (await server.client.get("/healthz")).status_code == 200
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], "a client mistake was logged at ERROR"


def assert_openai_error(body: object, code: str) -> None:
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == code, error
    assert error["type"] == "invalid_request_error"
    assert isinstance(error["message"], str) and error["message"]


@pytest.mark.parametrize(("path", "body", "headers", "status", "code"), [
    ("/v1/responses", b'{"model": ', JSON, 400, "invalid_json"),
    (CODEX, b'{"model": "gpt-5",}', JSON, 400, "invalid_json"),
    ("/v1/responses", b"[1, 2]", JSON, 400, "invalid_json"),
    ("/v1/chat/completions", b'"a string"', JSON, 400, "invalid_json"),
    ("/v1/responses", b"null", JSON, 400, "invalid_json"),
    ("/v1/responses", b"42", JSON, 400, "invalid_json"),
    ("/v1/responses", b'{"model":"gpt-5","input":"x"}', {"content-type": "text/plain"}, 415,
     "unsupported_media_type"),
    (CODEX, b"model=gpt-5", {"content-type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
    ("/v1/responses", b'{"model":"gpt-5","input":"\xff\xfe"}', JSON, 400, "invalid_json"),
    (CODEX, b'{"model":"gpt-5","input":"\xc3\x28"}', JSON, 400, "invalid_json"),
    ("/v1/responses", b"", JSON, 400, "invalid_json"),
    (CODEX, b"   ", JSON, 400, "invalid_json"),
    ("/v1/responses", b"[" * 60_000, JSON, 400, "invalid_json"),  # nested too deeply
    ("/v1/responses", b'{"model":"gpt-5","input":"\\ud800"}', JSON, 400, "invalid_json"),  # lone surrogate
    ("/v1/chat/completions", b'{"model":"gpt-5","messages":[{"role":"user","content":"\\udfff x"}]}', JSON, 400,
     "invalid_json"),
    ("/v1/responses", b'{"model":"gpt-5","input":"x","temperature":NaN}', JSON, 400, "invalid_json"),
    (CODEX, b'{"model":"gpt-5","input":"x","top_p":-Infinity}', JSON, 400, "invalid_json"),
    (CODEX, b'{"model":"gpt-5","input":"x","temperature":1e999}', JSON, 400, "invalid_json"),
    ("/v1/responses", b'{"model":"gpt-5","input":"x","top_p":-1.5E+400}', JSON, 400, "invalid_json"),
    ("/v1/chat/completions", b'{"model":"gpt-5","messages":[],"n":[2e308]}', JSON, 400, "invalid_json"),
    (CODEX, b'{"model":"gpt-5"}', {**JSON, "content-encoding": "lzma"}, 415, "unsupported_content_encoding"),
    (CODEX, b"\x1f\x8b not really gzip", {**JSON, "content-encoding": "gzip"}, 400, "invalid_body_encoding"),
    ("/v1/chat/completions", b'{"model":"gpt-5","messages":"hi"}', JSON, 400, None),
    ("/v1/responses", b'{"model":5,"input":"x"}', JSON, 400, None),
])
async def test_bad_bodies(proxy: ProxyHarness, path: str, body: bytes, headers: dict[str, str], status: int,
                          code: str | None) -> None:
    sent_before = len(proxy.fake.requests)
    r = await proxy.client.post(path, content=body, headers=headers)
    assert r.status_code == status, r.text
    assert_openai_error(r.json(), code or r.json()["error"]["code"])
    assert len(proxy.fake.requests) == sent_before  # refused before the upstream


async def test_valid_emoji_escapes_are_fine(proxy: ProxyHarness) -> None:
    """A surrogate *pair* is a valid escape (Python's json.dumps writes emoji that way)."""
    body = b'{"model":"gpt-5","input":"smile \\ud83d\\ude00"}'
    r = await proxy.client.post("/v1/responses", content=body, headers=JSON)
    assert r.status_code == 200, r.text
    assert proxy.fake.requests[-1].json["input"][0]["content"][0]["text"] == "smile \U0001F600"


@pytest.mark.parametrize(("method", "path", "status", "code"), [
    ("GET", "/v1/nope", 404, "not_found"),
    ("POST", "/nothing/here", 404, "not_found"),
    ("GET", "/backend-api/codex/responses/../../etc/passwd", 404, "not_found"),
    ("GET", "/v1/responses", 405, "method_not_allowed"),
    ("DELETE", CODEX, 405, "method_not_allowed"),
    ("PUT", "/v1/chat/completions", 405, "method_not_allowed"),
    ("OPTIONS", "/v1/responses", 405, "method_not_allowed"),
    ("POST", "/v1/models", 405, "method_not_allowed"),
])
async def test_unknown_routes_and_methods(proxy: ProxyHarness, method: str, path: str, status: int,
                                          code: str) -> None:
    r = await proxy.client.request(method, path, content=b"{}" if method in ("POST", "PUT") else None)
    assert r.status_code == status
    assert_openai_error(r.json(), code)
    if status == 405:
        assert r.headers["allow"] and method not in r.headers["allow"]
        assert method in r.json()["error"]["message"]


async def raw_request(proxy: ProxyHarness, data: bytes) -> tuple[int, bytes]:
    """Send raw bytes, read one answer: (status, body)."""
    host, port = proxy.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        await writer.drain()
        status = int((await reader.readline()).split()[1])
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, await reader.readexactly(length)
    finally:
        writer.close()


HEAD = b"POST " + CODEX.encode() + b" HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"


@pytest.mark.parametrize(("data", "status"), [
    (HEAD + b"x-big: " + b"a" * 70_000 + b"\r\ncontent-length: 2\r\n\r\n{}", 431),
    (b"GET /v1/models?" + b"a" * 70_000 + b" HTTP/1.1\r\nhost: x\r\n\r\n", 431),
    (HEAD + b"content-length: abc\r\n\r\n{}", 400),
    (HEAD + b"x-a\x01b: v\r\ncontent-length: 2\r\n\r\n{}", 400),
    (HEAD + b"transfer-encoding: chunked\r\n\r\nzz\r\n", 400),
    (b"HELLO\r\n\r\n", 400),
])
async def test_malformed_http_is_refused_by_hypercorn(proxy: ProxyHarness, data: bytes, status: int) -> None:
    assert (await raw_request(proxy, data))[0] == status


async def test_many_small_headers_reach_the_app(proxy: ProxyHarness) -> None:
    headers = b"".join(b"x-h%d: v\r\n" % i for i in range(500))
    status, body = await raw_request(proxy, HEAD + headers + b"content-length: 5\r\n\r\n{bad}")
    assert status == 400 and b"invalid_json" in body


async def test_body_over_the_cap(proxy: ProxyHarness) -> None:
    size = 64 * 1024 + 1
    status, body = await raw_request(proxy, HEAD + b"content-length: %d\r\n\r\n" % size + b"x" * size)
    assert status == 413 and b"payload_too_large" in body
    # far over the cap: refused from the declared length alone, without reading the body
    status, body = await raw_request(proxy, HEAD + b"content-length: %d\r\n\r\n" % (10 * size))
    assert status == 413 and b"payload_too_large" in body


async def test_uploading_client_gets_the_413_not_a_reset(proxy: ProxyHarness) -> None:
    response = await proxy.client.post("/v1/responses", content=b"{" + b" " * (80 * 1024) + b"}",
                                       headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
