"""An attempt's stream reader: same result whatever the chunking, including its skip-the-scan fast path."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import pytest

from codexlb.attempt import TAPPED, UpstreamAttempt, _lowered
from codexlb.pool import AccountPool
from codexlb.settings import Settings
from codexlb.testing import make_account, make_flow

EVENTS = [
    {"type": "codex.rate_limits", "rate_limits": {"primary": {"used_percent": 12.5, "window_minutes": 300,
                                                              "reset_at": 2000000000}}},
    {"type": "response.created", "response": {"id": "r1"}},
    *({"type": "response.output_text.delta", "delta": f"word{i} error "} for i in range(30)),
    {"type": "response.completed", "response": {"id": "r1", "usage": {
        "input_tokens": 100, "input_tokens_details": {"cached_tokens": 40}, "output_tokens": 30,
        "output_tokens_details": {"reasoning_tokens": 7}}}},
]
STREAM = b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in EVENTS)


def make_tap() -> UpstreamAttempt:
    """An attempt past its send, reading the stream as after the peek."""
    app = SimpleNamespace(settings=Settings(), pool=AccountPool())
    attempt = UpstreamAttempt(app, make_flow(), make_account("a"))  # type: ignore[arg-type]
    attempt.scanner.keep_only(TAPPED)
    return attempt


def make_attempt() -> UpstreamAttempt:
    app = SimpleNamespace(settings=Settings(), pool=AccountPool())
    return UpstreamAttempt(app, make_flow(), make_account("a"))  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(20))
def test_any_chunking_gives_the_same_result(seed: int) -> None:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(STREAM)), rng.randint(1, 60)))
    tap = make_tap()
    for start, end in zip([0, *cuts], [*cuts, len(STREAM)], strict=True):
        tap.feed(STREAM[start:end])
    assert tap.terminal == "response.completed"
    usage = tap.flow.usage
    assert usage is not None and (usage.input, usage.cached, usage.output, usage.reasoning) == (100, 40, 30, 7)
    assert tap.account.primary.used_percent == 12.5


def test_event_per_chunk_uses_the_fast_path() -> None:
    tap = make_tap()
    frames = [f + b"\n\n" for f in STREAM.replace(b" error ", b" fine ").split(b"\n\n") if f]
    for chunk in frames:
        tap.feed(chunk)
    assert tap.terminal == "response.completed" and tap.flow.usage is not None
    assert tap.scanner.scanned_bytes < len(STREAM) // 2  # the delta chunks were never scanned


@pytest.mark.parametrize("seed", range(10))
async def test_peek_then_tap_read_every_event_once(seed: int) -> None:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(STREAM)), rng.randint(1, 40)))
    chunks = [STREAM[a:b] for a, b in zip([0, *cuts], [*cuts, len(STREAM)], strict=True)]

    async def upstream():  # noqa: ANN202
        for chunk in chunks:
            yield chunk

    tap = make_attempt()
    received = b"".join([chunk async for chunk in await tap.peek(upstream())])
    assert received == STREAM
    assert tap.terminal == "response.completed"
    assert tap.flow.usage is not None and tap.flow.usage.cached == 40
    assert tap.account.primary.used_percent == 12.5
    assert tap.scanner.scanned_bytes <= len(STREAM) + 64  # one scanner read the stream, once


FRAMES = [frame + b"\n\n" for frame in STREAM.split(b"\n\n") if frame]
ADDED = b'event: response.output_item.added\ndata: {"type": "response.output_item.added", "item": {}}\n\n'
"""The event every real answer starts its output with (the deltas are not among the events the peek reads)."""


@pytest.mark.parametrize("seed", range(10))
async def test_whole_event_chunks_give_the_same_result(seed: int) -> None:
    """Chunks of whole events (what the backend sends; the tap skips some unscanned): any grouping reads the same."""
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(FRAMES)), rng.randint(0, 8)))
    chunks = [b"".join(FRAMES[a:b]) for a, b in zip([0, *cuts], [*cuts, len(FRAMES)], strict=True)]

    async def upstream():  # noqa: ANN202
        for chunk in chunks:
            yield chunk

    tap = make_attempt()
    received = b"".join([chunk async for chunk in await tap.peek(upstream())])
    assert received == STREAM and tap.terminal == "response.completed"
    usage = tap.flow.usage
    assert usage is not None and (usage.input, usage.cached, usage.output, usage.reasoning) == (100, 40, 30, 7)
    assert tap.account.primary.used_percent == 12.5


async def test_a_failure_after_the_first_output_event_in_the_same_chunk_is_tapped() -> None:
    failed = {"type": "response.failed", "response": {"error": {"code": "server_error", "message": "x"}}}
    last = f"event: response.failed\ndata: {json.dumps(failed)}\n\n".encode()
    stream = b"".join([*FRAMES[:2], ADDED, *FRAMES[2:4], last])

    async def upstream():  # noqa: ANN202
        yield stream

    tap = make_attempt()
    assert b"".join([chunk async for chunk in await tap.peek(upstream())]) == stream
    assert tap.terminal == "response.failed" and tap.flow.error_code == "server_error"


def test_response_headers_are_read_lower_cased_whatever_their_spelling() -> None:
    spellings = [(f"X-Codex-{n}", str(n)) for n in range(300)]  # more than the names learnt at once
    assert _lowered([*spellings, ("Content-Type", "a"), ("content-type", "b")]) == {
        **{f"x-codex-{n}": str(n) for n in range(300)}, "content-type": "b"}
