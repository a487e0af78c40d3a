"""The first-event peek: its time bounds, the read it hands on at the first-byte limit, its retryable errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from codexlb.errors import UpstreamError
from codexlb.settings import Settings
from codexlb.streaming import Deadline
from tests.core.test_streaming import STREAM, make_attempt

FRAMES = [frame + b"\n\n" for frame in STREAM.split(b"\n\n") if frame]


class Source:
    """An upstream stream that sends ``head`` frames, waits for ``go``, then sends the rest."""

    def __init__(self, head: int, fail: BaseException | None = None) -> None:
        self.head, self.fail = head, fail
        self.go = asyncio.Event()
        self.closed = False

    async def stream(self) -> AsyncIterator[bytes]:
        try:
            for frame in FRAMES[: self.head]:
                yield frame
            await self.go.wait()
            if self.fail is not None:
                raise self.fail
            for frame in FRAMES[self.head:]:
                yield frame
        finally:
            self.closed = True


def soon(seconds: float = 0.05) -> Deadline:
    return Deadline(asyncio.get_running_loop().time() + seconds, seconds, "TEST_LIMIT")


async def test_held_events_go_on_at_the_deadline_and_the_read_in_flight_continues() -> None:
    tap, source = make_attempt(), Source(head=2)  # codex.rate_limits, response.created: answering
    wrapped = await tap.peek(source.stream(), soon())
    received = [await wrapped.__anext__(), await wrapped.__anext__()]
    source.go.set()
    received += [chunk async for chunk in wrapped]
    assert b"".join(received) == STREAM
    assert tap.terminal == "response.completed" and tap.flow.usage is not None and tap.flow.usage.cached == 40
    assert tap.scanner.scanned_bytes <= len(STREAM) + 64  # every event was read once


async def test_closing_while_a_read_is_in_flight_closes_the_upstream() -> None:
    tap, source = make_attempt(), Source(head=2)
    wrapped = await tap.peek(source.stream(), soon())
    await wrapped.__anext__()
    await wrapped.__anext__()
    waiting = asyncio.ensure_future(wrapped.__anext__())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await wrapped.aclose()  # type: ignore[attr-defined]
    assert source.closed


@pytest.mark.parametrize("head", [0, 1])
async def test_no_answer_event_by_the_deadline_is_the_deadlines_error(head: int) -> None:
    source = Source(head=head)
    with pytest.raises(UpstreamError) as info:
        await make_attempt().peek(source.stream(), soon())
    assert info.value.code == "upstream_first_byte_timeout" and info.value.retryable
    assert "TEST_LIMIT" in info.value.message and source.closed


async def test_silence_while_held_is_the_idle_error() -> None:
    tap, source = make_attempt(), Source(head=2)
    tap.app.settings = Settings(stream_idle_timeout_seconds=0.05)  # type: ignore[misc]
    with pytest.raises(UpstreamError) as info:
        await tap.peek(source.stream(), Deadline(asyncio.get_running_loop().time() + 60, 60, "X"))
    assert info.value.code == "stream_idle_timeout" and info.value.retryable and source.closed


@pytest.mark.parametrize("fail", [UpstreamError("broke", phase="stream", retryable=False), ConnectionResetError(),
                                  TimeoutError("the stream's own")])
async def test_a_break_before_the_first_output_event_is_retryable(fail: BaseException) -> None:
    source = Source(head=2, fail=fail)
    source.go.set()
    with pytest.raises(UpstreamError) as info:
        await make_attempt().peek(source.stream())
    assert info.value.code == "upstream_stream_error" and info.value.retryable and info.value.phase == "first_event"
