"""The fake's stall and clean-end stream faults: frames first, then silence or an end without a terminal event."""

from __future__ import annotations

import asyncio

import httpx

from codexlb.testing.fake_faults import Fault
from codexlb.testing.fake_sse import parse_sse, sample_request
from codexlb.testing.fake_upstream import FakeUpstream

ACCOUNT = "acct-fake-0001"


async def test_end_mid_stream_ends_cleanly_after_n_frames(fake: FakeUpstream, fake_client: httpx.AsyncClient) -> None:
    fake.inject(ACCOUNT, Fault.end_mid_stream(after_events=2))
    response = await fake_client.post("/codex/responses", json=sample_request())
    assert response.status_code == 200
    assert [name for name, _ in parse_sse(response.content)] == ["codex.rate_limits", "response.created"]


async def test_stall_mid_stream_sends_n_frames_then_nothing(fake: FakeUpstream,
                                                           fake_client: httpx.AsyncClient) -> None:
    fake.inject(ACCOUNT, Fault.stall_mid_stream(after_events=1))
    received = b""
    async with fake_client.stream("POST", "/codex/responses", json=sample_request()) as response:
        assert response.status_code == 200
        chunks = response.aiter_raw()
        while b"\n\n" not in received:
            received += await chunks.__anext__()
        assert [name for name, _ in parse_sse(received)] == ["codex.rate_limits"]
        silent = asyncio.ensure_future(chunks.__anext__())
        done, _ = await asyncio.wait([silent], timeout=0.3)
        assert not done  # nothing more comes while the fault lasts
        silent.cancel()


async def test_stall_with_a_delay_then_sends_the_rest(fake: FakeUpstream, fake_client: httpx.AsyncClient) -> None:
    fake.inject(ACCOUNT, Fault.stall_mid_stream(after_events=2, delay_s=0.2))
    names = [name for name, _ in parse_sse((await fake_client.post("/codex/responses", json=sample_request())).content)]
    assert names[:3] == ["codex.rate_limits", "response.created", "response.in_progress"]
    assert names.count("response.created") == 1 and names[-1] == "response.completed"
