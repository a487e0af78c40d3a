"""Request parsing over a running proxy: any body gives the 200 path or an OpenAI-shaped 4xx, never a 5xx.

The proxy (``proxy_server``: Hypercorn on a loopback socket, the fake upstream, the default request
plugins) runs on its own event loop in a thread for the whole module; hypothesis drives a plain
client against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from codexlb.testing.fake_records import decode_body
from codexlb.testing.harness import proxy_server

PIPELINE = ("decompress", "select_round_robin", "upstream", "sse_limit")
ROUTES = ["/backend-api/codex/responses", "/backend-api/codex/responses/compact", "/v1/responses",
          "/v1/chat/completions"]
VALID = {
    "/backend-api/codex/responses": {"model": "gpt-5.5", "instructions": "", "input": [], "stream": True,
                                     "store": False},
    "/backend-api/codex/responses/compact": {"model": "gpt-5.5", "instructions": "", "input": []},
    "/v1/responses": {"model": "gpt-5.5", "input": "hi"},
    "/v1/chat/completions": {"model": "gpt-5.5", "messages": [{"role": "user", "content": "hi"}]},
}


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    ready: dict[str, Any] = {}
    started, stop = threading.Event(), threading.Event()

    async def run() -> None:
        async with proxy_server(tmp_path_factory.mktemp("parsing"), accounts=2, pipeline=PIPELINE,
                                stream_idle_timeout_seconds=5.0) as proxy:
            ready["url"] = proxy.url
            started.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)

    def main() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:  # shown by the fixture if start-up failed
            ready["error"] = exc
            started.set()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    started.wait(60)
    if "url" not in ready:
        raise RuntimeError(f"proxy did not start: {ready.get('error')!r}")
    try:
        with httpx.Client(base_url=ready["url"], timeout=30) as client:
            yield client
    finally:
        stop.set()
        thread.join(30)


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                           max_leaves=12)


@st.composite
def bodies(draw: st.DrawFn, route: str) -> bytes:
    valid = VALID[route]
    choice = draw(st.sampled_from(["bytes", "json", "mutated", "fields", "deep"]))
    if choice == "bytes":
        return draw(st.binary(max_size=300))
    if choice == "json":
        return json.dumps(draw(JSON_VALUES)).encode()
    if choice == "deep":
        depth = draw(st.integers(1, 5000))
        return b"[" * depth + b"]" * draw(st.integers(0, depth))
    text = json.dumps(valid).encode()
    if choice == "mutated":
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(st.binary(max_size=8)) + text[at + draw(st.integers(0, 8)):]
    key = draw(st.sampled_from([*valid, "tools", "tool_choice", "stream", "text", "reasoning", "messages"]))
    return json.dumps({**valid, key: draw(JSON_VALUES)}).encode()


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, dict[str, str], bytes]:
    route = draw(st.sampled_from(ROUTES))
    body = draw(bodies(route))
    headers = {"content-type": draw(st.sampled_from(["application/json", "application/json; charset=utf-8",
                                                     "text/plain", "application/x-www-form-urlencoded"]))}
    encoding = draw(st.sampled_from([None, "gzip", "zstd", "br", "gzip, zstd", "bogus"]))
    if encoding == "gzip":
        body = gzip.compress(body)
    elif encoding == "zstd":
        body = zstandard.ZstdCompressor().compress(body)
    elif encoding == "gzip, zstd":
        body = zstandard.ZstdCompressor().compress(gzip.compress(body))
    if encoding is not None:
        headers["content-encoding"] = encoding if draw(st.booleans()) else encoding.upper()
    return route, headers, body


def is_json_object(body: bytes, headers: dict[str, str]) -> bool:
    """Whether the proxy would pass the body on (the upstream's own 4xx then reaches the client as is)."""
    if not headers["content-type"].startswith("application/json"):
        return False
    with contextlib.suppress(ValueError, UnicodeDecodeError, RecursionError):
        return isinstance(json.loads(decode_body(body, headers.get("content-encoding", "").lower())), dict)
    return False


@given(requests())
def test_any_body_gets_the_200_path_or_an_openai_shaped_4xx_never_a_5xx(
        proxy: httpx.Client, request: tuple[str, dict[str, str], bytes]) -> None:
    route, headers, body = request
    response = proxy.post(route, content=body, headers=headers)
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400 and not is_json_object(body, headers):
        error = response.json()["error"]
        assert isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str)
