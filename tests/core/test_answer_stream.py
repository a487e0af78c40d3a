"""The streamed answer's one loop and the attempt's one timer: idle bound, tap, filters, guard, closing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from codexlb import Flow, ProxyResponse, hookimpl
from codexlb.answer_stream import AnswerStream
from codexlb.attempt import TAPPED, UpstreamAttempt
from codexlb.errors import FlowError, StreamIdleTimeout
from codexlb.sse_frames import terminal_error_event
from codexlb.streaming import Watch
from codexlb.testing.harness import proxy_server
from tests.core.test_streaming import STREAM, make_attempt

FRAMES = [frame + b"\n\n" for frame in STREAM.split(b"\n\n") if frame]


class Source:
    """An upstream that yields ``chunks``, then ends or (``hang``) waits forever; records that it was closed."""

    def __init__(self, chunks: list[bytes], hang: bool = False, fail: BaseException | None = None) -> None:
        self.chunks, self.hang, self.fail, self.closed = chunks, hang, fail, False

    async def stream(self) -> AsyncIterator[bytes]:
        try:
            for chunk in self.chunks:
                yield chunk
            if self.fail is not None:
                raise self.fail
            if self.hang:
                await asyncio.Event().wait()
        finally:
            self.closed = True


def answer(source: Source, idle: float = 60.0, held: list[bytes] | None = None) -> tuple[AnswerStream, UpstreamAttempt]:
    attempt = make_attempt()
    attempt.scanner.keep_only(TAPPED)
    return AnswerStream(attempt, held or [], source.stream(), None, Watch(), idle), attempt


class Halves:
    """A filter that passes on the first half of what it has and holds the rest; fails on ``bad``."""

    def __init__(self, bad: bytes = b"\0") -> None:
        self.held, self.bad = b"", bad
        self.error: FlowError | None = None

    def feed(self, chunk: bytes) -> bytes:
        data = self.held + chunk
        if self.bad in data:
            self.error = FlowError("bad bytes", status=502, code="bad_bytes")
            return data[:data.index(self.bad)]
        cut = len(data) // 2
        self.held = data[cut:]
        return data[:cut]

    def rest(self) -> bytes:
        out, self.held = self.held, b""
        return out


async def test_held_chunks_then_the_upstream_every_chunk_tapped_once() -> None:
    stream, attempt = answer(Source(FRAMES[2:]), held=[FRAMES[0], FRAMES[1]])
    attempt.feed(FRAMES[0] + FRAMES[1])  # the peek tapped what it held
    assert b"".join([chunk async for chunk in stream]) == STREAM
    assert attempt.terminal == "response.completed" and attempt.flow.usage is not None
    assert attempt.flow.first_byte_at is not None and stream.watch.handle is None


async def test_filters_chain_and_hand_on_what_they_hold_at_the_end() -> None:
    stream, _ = answer(Source(FRAMES))
    stream.filters = [Halves(), Halves()]
    assert b"".join([chunk async for chunk in stream]) == STREAM


async def test_a_filter_error_ends_the_stream_after_the_bytes_before_it() -> None:
    source = Source([b"event: a\ndata: 1\n\n", b"event: b\ndata: \0\n\n", *FRAMES], hang=True)
    stream, _ = answer(source)
    stream.filters = [Halves(b"\0")]
    stream.guard(terminal_error_event)
    received = [chunk async for chunk in stream]
    assert b"".join(received[:-1]) == b"event: a\ndata: 1\n\nevent: b\ndata: "
    assert b'"code":"bad_bytes"' in received[-1] and source.closed
    assert stream.attempt.flow.error_code == "bad_bytes"


async def test_unguarded_errors_are_raised_and_close_the_upstream() -> None:
    source = Source([FRAMES[0]], fail=ConnectionResetError())
    stream, _ = answer(source)
    with pytest.raises(ConnectionResetError):
        async for _ in stream:
            pass
    assert source.closed


async def test_an_end_without_terminal_event_is_stream_incomplete() -> None:
    stream, _ = answer(Source(FRAMES[:5]))
    stream.guard(terminal_error_event)
    received = [chunk async for chunk in stream]
    assert b"".join(received[:-1]) == b"".join(FRAMES[:5])
    assert b'"code":"stream_incomplete"' in received[-1]


async def test_silence_is_the_idle_timeout_and_closes_the_upstream() -> None:
    source = Source([FRAMES[0]], hang=True)
    stream, _ = answer(source, idle=0.05)
    got = []
    with pytest.raises(StreamIdleTimeout) as info:
        async for chunk in stream:
            got.append(chunk)
    assert got == [FRAMES[0]] and source.closed
    assert info.value.code == "stream_idle_timeout" and isinstance(info.value, TimeoutError)
    assert "CODEX_LB_STREAM_IDLE_TIMEOUT_SECONDS" in info.value.message


async def test_client_read_time_is_not_idle_time() -> None:
    stream, _ = answer(Source(FRAMES[:3], hang=False), idle=0.05)
    stream.guard(terminal_error_event)
    got = []
    async for chunk in stream:
        got.append(chunk)
        await asyncio.sleep(0.1)  # a slow client: longer than the idle timeout between reads
    assert got[:3] == FRAMES[:3] and b"stream_idle_timeout" not in got[-1]


async def test_other_timeouts_are_not_the_idle_timeout() -> None:
    stream, _ = answer(Source([FRAMES[0]], fail=TimeoutError("the upstream's own")))
    with pytest.raises(TimeoutError) as info:
        async for _ in stream:
            pass
    assert not isinstance(info.value, StreamIdleTimeout)


async def test_outside_cancellation_is_not_a_timeout_and_closes_the_upstream() -> None:
    source = Source([FRAMES[0]], hang=True)
    stream, _ = answer(source, idle=60)

    async def consume() -> None:
        async for _ in stream:
            pass

    task = asyncio.ensure_future(consume())
    for _ in range(3):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert source.closed and stream.watch.handle is None


async def test_closing_closes_the_upstream() -> None:
    source = Source(FRAMES, hang=True)
    stream, _ = answer(source)
    assert await stream.__anext__() == FRAMES[0]
    await stream.aclose()
    assert source.closed
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()


# -- the timer ---------------------------------------------------------------------------------------


async def test_watch_cancels_only_the_armed_wait_at_its_end() -> None:
    watch = Watch()
    loop = watch.loop
    watch.arm(loop.time() + 0.02)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.sleep(1)
    assert watch.expired()
    watch.disarm()
    await asyncio.sleep(0.05)  # between waits the timer does nothing
    watch.close()


async def test_watch_end_moved_later_does_not_fire_early() -> None:
    watch = Watch()
    loop = watch.loop
    watch.arm(loop.time() + 0.02)
    watch.arm(loop.time() + 0.2)  # later: the timer stays, fires early and re-arms itself
    started = loop.time()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.sleep(1)
    assert watch.expired() and loop.time() - started >= 0.15
    watch.close()


async def test_watch_end_moved_earlier_fires_then() -> None:
    watch = Watch()
    loop = watch.loop
    watch.arm(loop.time() + 30)
    watch.arm(loop.time() + 0.02)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(asyncio.sleep(1), 5)
    assert watch.expired()
    watch.close()


async def test_watch_tells_an_outside_cancellation_from_its_own() -> None:
    watch = Watch()

    async def wait() -> bool:
        watch.arm(watch.loop.time() + 30)
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            return watch.expired()
        return True

    task = asyncio.ensure_future(wait())
    await asyncio.sleep(0)
    task.cancel()
    assert await task is False
    watch.close()
    assert watch.handle is None


# -- over real sockets -----------------------------------------------------------------------------


async def test_a_client_that_goes_away_mid_stream_closes_the_upstream(tmp_path: Path) -> None:
    added = b'event: response.output_item.added\ndata: {"type":"response.output_item.added","item":{}}\n\n'
    source = Source([FRAMES[0], FRAMES[1] + added, FRAMES[2]], hang=True)
    finished: list[Flow] = []

    class Upstream:
        @hookimpl(tryfirst=True)
        async def send_upstream(self) -> ProxyResponse:
            return ProxyResponse(200, [("content-type", "text/event-stream")], source.stream())

        @hookimpl
        async def flow_done(self, flow: Flow) -> None:
            finished.append(flow)

    async with proxy_server(tmp_path, plugins=[Upstream()]) as proxy:
        received = b""
        async with proxy.client.stream("POST", "/backend-api/codex/responses", timeout=15,
                                       json={"model": "gpt-5", "input": "hi", "store": False, "stream": True}) as r:
            async for chunk in r.aiter_bytes():
                received += chunk
                if FRAMES[2] in received:
                    break
        for _ in range(200):  # the server notices the closed connection on its next write or read
            if source.closed and finished:
                break
            await asyncio.sleep(0.01)
        assert source.closed and len(finished) == 1 and finished[0].first_byte_at is not None
