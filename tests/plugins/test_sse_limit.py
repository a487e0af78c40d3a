"""SSE limits: whole events only, event-size cap; unit cases and over real sockets (the idle timeout too)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from codexlb import ConfigError
from codexlb.settings import Settings
from codexlb.sse import SSEScanner
from codexlb.testing import make_flow
from codexlb.testing.fake_upstream import Fault
from codexlb.testing.harness import proxy_server
from plugins.sse_limit import EventLimiter, SSELimit, last_event_end

PIPELINE = ("sse_limit", "select_round_robin", "upstream")
BODY = {"model": "gpt-5", "input": "hi", "store": False, "stream": True}
PATH = "/backend-api/codex/responses"


def events(sizes: list[int], eol: str = "\n") -> bytes:
    """Events of roughly the given sizes (data payloads of ``x``), with ``eol`` line ends."""
    out = []
    for n, size in enumerate(sizes):
        out.append(f"event: e{n}{eol}data: {'x' * max(0, size - 20)}{eol}{eol}")
    return "".join(out).encode()


def boundaries(stream: bytes) -> set[int]:
    """Offsets where an event ends (reference parser: line by line, any line end)."""
    ends, i, line_start, n = {0}, 0, 0, len(stream)
    while i < n:
        c = stream[i]
        if c in (0x0A, 0x0D):
            end = i + 2 if c == 0x0D and i + 1 < n and stream[i + 1] == 0x0A else i + 1
            if i == line_start:
                ends.add(end)
            line_start = i = end
        else:
            i += 1
    return ends


def chunked(data: bytes, rng: random.Random, largest: int) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        step = rng.randint(1, largest)
        out.append(data[pos:pos + step])
        pos += step
    return out


# -- unit: boundaries and the limiter --------------------------------------------------------------


@pytest.mark.parametrize(("buf", "start", "expected"), [
    (b"data: a\n\n", 0, 9), (b"data: a\n\ndata: b", 0, 9), (b"data: a\n", 0, -1),
    (b"data: a\r\n\r\n", 0, 11), (b"data: a\r\n\r", 0, 10), (b"data: a\r\r", 0, 9),
    (b"data: a\r\n\n", 0, 10), (b"a\n\nb\n\nc", 0, 6), (b"a\n\nb\r\n\r\nc", 0, 8),
    (b"a\n\nb", 3, -1), (b"a\n\nb", 1, 3), (b"", 0, -1),
])
def test_last_event_end(buf: bytes, start: int, expected: int) -> None:
    assert last_event_end(buf, start) == expected


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("seed", range(6))
def test_limiter_forwards_whole_events_unchanged(eol: str, seed: int) -> None:
    rng = random.Random(seed)
    limit = 4096
    stream = events([rng.choice([30, 200, 1000, 4000]) for _ in range(60)], eol)
    ends = boundaries(stream)
    limiter, out = EventLimiter(limit), []
    for chunk in chunked(stream, rng, rng.choice([7, 300, 5000, 20000])):
        piece = limiter.feed(chunk)
        out.append(piece)
        assert len(limiter.held) <= limit
        if piece:
            done = len(b"".join(out))
            assert done in ends or (done + 1 in ends and stream[done] == 0x0A), "split inside an event"
    assert b"".join(out) + limiter.rest() == stream


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("largest", [1, 333, 9000, 1 << 20])
def test_limiter_refuses_oversized_event(eol: str, largest: int) -> None:
    limit = 8192
    stream = events([100, 500, limit + 50, 100], eol)
    before = events([100, 500], eol)
    limiter, out = EventLimiter(limit), []
    for chunk in chunked(stream, random.Random(largest), largest):
        out.append(limiter.feed(chunk))
        assert len(limiter.held) <= limit
        if limiter.error is not None:
            break
    assert limiter.error is not None and limiter.error.code == "sse_event_too_large"
    # the events before it, whole (a CRLF's LF may still be on its way); nothing of the big one
    assert b"".join(out) in (before, before[:-1] if eol == "\r\n" else before)


def test_limiter_unfinished_last_event_is_handed_on() -> None:
    limiter = EventLimiter(1024)
    assert limiter.feed(b"data: a\n\ndata: b") == b"data: a\n\n"
    assert limiter.rest() == b"data: b"


def test_configure() -> None:
    plugin = SSELimit()
    plugin.configure({}, Settings(max_sse_event_bytes=4096, stream_idle_timeout_seconds=1.5))
    assert plugin.max_event_bytes == 4096
    limiter = plugin.filter_response_stream(make_flow())
    assert isinstance(limiter, EventLimiter) and limiter.limit == 4096
    with pytest.raises(ConfigError, match=r"\[plugins.sse_limit\]"):
        plugin.configure({"idle": 1}, Settings())


# -- over real sockets -----------------------------------------------------------------------------


def parse(body: bytes) -> list[dict[str, object]]:
    """Every event's JSON; fails if any event is cut or garbled."""
    scanner = SSEScanner(64 << 20)
    found = [event.json() for event in scanner.feed(body)]
    assert scanner.buffered == 0
    return found


async def test_oversized_event_ends_stream_cleanly(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, pipeline=PIPELINE, max_sse_event_bytes=256 * 1024) as proxy:
        proxy.fake.inject(None, Fault.oversized_event(3 << 20))
        r = await proxy.client.post(PATH, json=BODY)
        assert r.status_code == 200
        found = parse(r.content)
        assert found[0]["type"] == "codex.rate_limits" or found[0]["type"] == "response.created"
        last = found[-1]
        assert last["type"] == "response.failed"
        assert last["response"]["error"]["code"] == "sse_event_too_large"  # type: ignore[index]
        assert not any(e["type"] == "response.output_text.delta" for e in found)
        assert (await proxy.client.get("/healthz")).status_code == 200


async def test_large_event_within_limit_passes(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, pipeline=PIPELINE, max_sse_event_bytes=16 << 20) as proxy:
        proxy.fake.inject(None, Fault.oversized_event(8 << 20))
        r = await proxy.client.post(PATH, json=BODY)
        found = parse(r.content)
        assert found[-1]["type"] == "response.completed"
        deltas = [e for e in found if e["type"] == "response.output_text.delta"]
        assert len(deltas[0]["delta"]) == 8 << 20  # type: ignore[arg-type]
        assert (await proxy.client.get("/healthz")).status_code == 200


async def test_idle_upstream_ends_stream(tmp_path: Path) -> None:
    """Silence after the first output event (the 4th frame) reached the client ends the stream."""
    async with proxy_server(tmp_path, pipeline=PIPELINE, stream_idle_timeout_seconds=0.3) as proxy:
        proxy.fake.inject(None, Fault.stall_mid_stream(after_events=4))
        r = await proxy.client.post(PATH, json=BODY)
        found = parse(r.content)
        assert found[-1]["type"] == "response.failed"
        assert found[-1]["response"]["error"]["code"] == "stream_idle_timeout"  # type: ignore[index]
        assert (await proxy.client.get("/healthz")).status_code == 200


async def test_drop_mid_stream_ends_with_terminal_event(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, pipeline=PIPELINE, stream_idle_timeout_seconds=0.3) as proxy:
        proxy.fake.inject(None, Fault.drop_mid_stream(after_events=4))
        r = await proxy.client.post(PATH, json=BODY)
        found = parse(r.content)
        assert found[-1]["type"] == "response.failed"
        assert len(found) >= 4  # the events sent before the drop arrived whole
        assert (await proxy.client.get("/healthz")).status_code == 200


async def test_normal_stream_unchanged(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, pipeline=PIPELINE) as proxy:
        r = await proxy.client.post(PATH, json=BODY)
        found = parse(r.content)
        assert found[-1]["type"] == "response.completed"
        assert json.dumps(found).count("output_text.delta") >= 1


async def test_hang_before_headers_is_the_upstream_plugins_timeout(tmp_path: Path) -> None:
    """``Fault.hang`` never sends headers: the upstream plugin's header wait (same setting) answers."""
    async with proxy_server(tmp_path, accounts=1, pipeline=PIPELINE, stream_idle_timeout_seconds=0.3) as proxy:
        proxy.fake.inject(None, Fault.hang())
        r = await proxy.client.post(PATH, json=BODY)
        assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
        assert (await proxy.client.get("/healthz")).status_code == 200
