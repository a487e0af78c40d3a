"""Properties of the SSE scanner and the stream guard around the adapters."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from hypothesis import given
from hypothesis import strategies as st

from codexlb.endpoints import ChatAdapter, ResponsesAdapter
from codexlb.sse import SSEEvent, SSEEventTooLarge, SSEScanner
from codexlb.streaming import guard
from codexlb.testing import make_flow

LINE_TEXT = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=40)
EVENT_NAMES = st.sampled_from(["response.created", "response.output_text.delta", "response.completed",
                               "codex.rate_limits", "error", "message"])


@st.composite
def sse_streams(draw: st.DrawFn) -> tuple[bytes, int]:
    """A valid SSE byte stream (one line ending throughout, as real servers send) and its event count."""
    newline = draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    out, count = bytearray(), 0
    for _ in range(draw(st.integers(0, 8))):
        lines: list[bytes] = []
        if draw(st.booleans()):
            lines.append(b": " + draw(LINE_TEXT).encode())
        if draw(st.booleans()):
            lines.append(b"event: " + draw(EVENT_NAMES).encode())
        payload = draw(st.one_of(
            st.dictionaries(st.text(max_size=5), st.integers() | LINE_TEXT, max_size=3).map(json.dumps),
            LINE_TEXT))
        lines += [b"data: " + part.encode() for part in payload.split("\n")]
        if draw(st.booleans()):
            lines.append(b"id: " + draw(LINE_TEXT).encode())
        out += newline.join(lines) + newline + newline
        count += 1
    return bytes(out), count


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


def scan(chunks: list[bytes], limit: int = 1 << 20) -> list[SSEEvent]:
    scanner = SSEScanner(limit)
    return [event for chunk in chunks for event in scanner.feed(chunk)]


@given(sse_streams(), st.lists(st.integers(min_value=0), max_size=30))
def test_any_chunking_of_a_valid_stream_yields_the_same_events(stream: tuple[bytes, int], cuts: list[int]) -> None:
    data, count = stream
    whole = scan([data])
    assert len(whole) == count
    pieces = scan(chunked(data, cuts))
    assert [(e.event, e.data) for e in pieces] == [(e.event, e.data) for e in whole]
    assert b"".join(e.raw for e in whole) == data
    # Where a chunk ends between the CR and LF of a CRLF blank line, the scanner cannot wait for a byte
    # that may never come: that LF opens the next event's ``raw``. No byte is lost or repeated.
    assert b"".join(e.raw for e in pieces) in (data, data.rstrip(b"\n"))


@given(st.binary(max_size=4096), st.lists(st.integers(min_value=0), max_size=20), st.integers(64, 2048))
def test_garbage_raises_nothing_but_event_too_large_and_the_scanner_goes_on(
        data: bytes, cuts: list[int], limit: int) -> None:
    scanner = SSEScanner(limit)
    for chunk in chunked(data, cuts):
        try:
            events = scanner.feed(chunk)
        except SSEEventTooLarge as exc:
            events = exc.events
        for event in events:
            try:
                event.json()
            except ValueError:
                pass
            assert event.type is None or isinstance(event.type, str)
    assert scanner.buffered <= limit + len(data)


async def _stream(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _through_guard(adapter_name: str, stream: bool, chunks: list[bytes]) -> list[bytes]:
    flow = make_flow(path="/v1/responses", endpoint="responses",
                     payload={"model": "m", "input": "hi", "stream": stream})
    if adapter_name == "chat":
        flow = make_flow(path="/v1/chat/completions", endpoint="chat_completions",
                         payload={"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream})
    adapter = ChatAdapter() if adapter_name == "chat" else ResponsesAdapter()
    adapter.prepare(flow)
    body = adapter._chunks(_stream(chunks)) if adapter_name == "chat" else adapter._filtered(_stream(chunks))
    return [piece async for piece in guard(flow, body, adapter.terminal_error)]


@given(st.sampled_from(["responses", "chat"]), st.lists(st.binary(max_size=300), max_size=10))
def test_garbage_upstream_bytes_never_raise_past_the_stream_guard(adapter_name: str, chunks: list[bytes]) -> None:
    out = asyncio.run(_through_guard(adapter_name, True, chunks))
    assert all(isinstance(piece, bytes) for piece in out)
