"""The proxy's POST routes served in front of Quart (:mod:`codexlb.web.fast_path`), over real sockets.

What Quart did for these routes and the fast path must do too: read a body sent in pieces, refuse
an oversized one with a 413 (not a reset), notice a client that went away mid-stream (the answer
is closed and the flow logged), answer an error it did not expect with a 500 in OpenAI's shape; and
leave every other request (method, root path, HTTP/1.0) to Quart.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from codexlb import Flow, ProxyResponse, hookimpl
from codexlb.testing.fake_faults import Fault
from codexlb.testing.fake_sse import sample_request
from codexlb.testing.harness import ProxyHarness, proxy_server
from codexlb.web.fast_path import FastRoutes

CODEX = "/backend-api/codex/responses"
BODY = json.dumps(sample_request()).encode()


async def exchange(proxy: ProxyHarness, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes; read the answer to its end (the server closes, or content-length/chunked ends it)."""
    host, port = proxy.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        await writer.drain()
        status = int((await reader.readline()).split()[1])
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            return status, headers, await reader.readexactly(int(headers["content-length"]))
        if headers.get("transfer-encoding") != "chunked":
            return status, headers, await reader.read()
        body = b""
        while (size := int((await reader.readline()).strip() or b"0", 16)) > 0:
            body += await reader.readexactly(size)
            await reader.readline()
        return status, headers, body
    finally:
        writer.close()


def head(path: str = CODEX, version: str = "1.1") -> bytes:
    return f"POST {path} HTTP/{version}\r\nhost: x\r\ncontent-type: application/json\r\n".encode()


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


class Finished:
    """Records each flow ``flow_done`` is called for."""

    def __init__(self) -> None:
        self.flows: list[Flow] = []

    @hookimpl
    async def flow_done(self, flow: Flow) -> None:
        self.flows.append(flow)


@pytest.fixture(name="finished")
def _finished() -> Finished:
    return Finished()


@pytest.fixture(name="proxy")
async def _proxy(tmp_path: Path, finished: Finished) -> AsyncIterator[ProxyHarness]:
    async with proxy_server(tmp_path, plugins=[finished], max_decompressed_body_bytes=64 * 1024) as proxy:
        yield proxy


async def test_a_body_sent_in_pieces_is_read_whole(proxy: ProxyHarness) -> None:
    third = len(BODY) // 3
    pieces = (BODY[:third], BODY[third:2 * third], BODY[2 * third:])
    status, headers, body = await exchange(proxy, head() + b"transfer-encoding: chunked\r\n\r\n" + chunked(*pieces))
    assert status == 200 and headers["content-type"] == "text/event-stream"
    assert b"response.completed" in body
    assert json.loads(proxy.fake.requests[-1].body) == sample_request()


async def test_an_oversized_body_in_pieces_gets_413(proxy: ProxyHarness) -> None:
    piece = b"x" * (20 * 1024)
    status, _, body = await exchange(proxy, head() + b"transfer-encoding: chunked\r\n\r\n" + chunked(*[piece] * 5))
    assert status == 413 and json.loads(body)["error"]["code"] == "payload_too_large"
    assert proxy.fake.requests == []


async def test_the_connection_serves_on_after_a_413(proxy: ProxyHarness) -> None:
    """The oversized body is read to its end after the 413, so the connection takes the next request."""
    host, port = proxy.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    piece = b"x" * (20 * 1024)
    writer.write(head() + b"transfer-encoding: chunked\r\n\r\n" + chunked(*[piece] * 5)
                 + head() + b"content-length: 1\r\n\r\n{")
    await writer.drain()
    statuses = []
    async with asyncio.timeout(10):
        for _ in range(2):
            statuses.append(int((await reader.readline()).split()[1]))
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                length = int(value) if name.lower() == "content-length" else length
            await reader.readexactly(length)
    writer.close()
    assert statuses == [413, 400]


async def test_a_small_answer_has_its_length(proxy: ProxyHarness) -> None:
    status, headers, body = await exchange(proxy, head() + b"content-length: 1\r\n\r\n{")
    assert status == 400 and int(headers["content-length"]) == len(body)
    assert json.loads(body)["error"]["code"] == "invalid_json"


async def test_a_client_that_goes_away_mid_stream_ends_its_flow(proxy: ProxyHarness, finished: Finished) -> None:
    """The answer stalls after its first output; the client reads that and hangs up. The proxy must
    close the answer and log the flow then, not when the upstream ends (it never does here)."""
    proxy.fake.inject(None, Fault.stall_mid_stream(after_events=7))
    host, port = proxy.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head() + b"content-length: %d\r\n\r\n" % len(BODY) + BODY)
    await writer.drain()
    async with asyncio.timeout(10):
        seen = b""
        while b"response.output_text.delta" not in seen:
            seen += await reader.read(4096)
    writer.close()
    async with asyncio.timeout(10):
        while not finished.flows:
            await asyncio.sleep(0.02)
            await proxy.settle()
    flow = finished.flows[0]
    assert flow.status == 200 and flow.request.endpoint == "codex_responses" and flow.finished_at is not None


async def test_other_requests_go_to_quart(proxy: ProxyHarness) -> None:
    status, headers, body = await exchange(proxy, head(version="1.0") + b"content-length: %d\r\n\r\n" % len(BODY)
                                           + BODY)
    assert status == 200 and b"response.completed" in body
    status, headers, body = await exchange(proxy, b"PUT " + CODEX.encode() + b" HTTP/1.1\r\nhost: x\r\n"
                                           b"content-length: 0\r\n\r\n")
    assert status == 405 and json.loads(body)["error"]["code"] == "method_not_allowed"


async def test_dispatch_by_scope() -> None:
    """Only a POST to a listed path, at the root, over HTTP/1.1 or later, is served here."""
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["path"])

    routes = FastRoutes(None, inner, {CODEX: "codex_responses"})  # type: ignore[arg-type]
    base = {"type": "http", "method": "POST", "path": CODEX, "http_version": "1.1", "root_path": ""}
    for change in ({"method": "GET"}, {"path": "/v1/other"}, {"root_path": "/lb"}, {"http_version": "1.0"},
                   {"type": "websocket"}):
        await routes({**base, **change}, None, None)  # type: ignore[arg-type]
    assert len(seen) == 5


class BadHeader:
    """Answers with a header value that cannot be encoded: an error nobody planned for."""

    @hookimpl
    async def transform_request(self, flow: Flow) -> None:
        flow.response = ProxyResponse(200, [("x-bad", "\udcff")], b"never sent")


async def test_an_unexpected_error_is_a_500_in_openai_shape(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, plugins=[BadHeader()]) as proxy:
        response = await proxy.client.post(CODEX, content=BODY, headers={"content-type": "application/json"})
        assert response.status_code == 500
        assert response.json()["error"]["code"] == "internal_error"
        assert (await proxy.client.get("/healthz")).status_code == 200
