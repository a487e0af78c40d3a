"""Hook dispatch details: awaiting what a plain implementation returns, unimplemented hooks, tracing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import pytest

from codexlb import hookimpl
from codexlb.hooks import Hooks
from codexlb.plugin_loader import make_plugin_manager
from codexlb.testing import make_account, make_flow

BASE = ["select_round_robin", "upstream"]


def traced_app() -> Any:
    """The part of the app :class:`Hooks` reads: ``settings.trace_hooks``."""
    return cast(Any, SimpleNamespace(settings=SimpleNamespace(trace_hooks=True)))


async def test_plain_implementation_returning_an_awaitable_is_awaited() -> None:
    done: list[str] = []

    class Deferred:
        @hookimpl
        def admit_request(self, flow):  # noqa: ANN001 - a plain function handing back a coroutine
            async def later() -> None:
                done.append("ran")
                flow.reject(403, "later", "refused later")
            return later()

    flow = make_flow()
    await Hooks(make_plugin_manager(BASE, [Deferred()])).admit_request(flow)
    assert done == ["ran"] and flow.response is not None and flow.response.status == 403


async def test_hooks_nobody_implements_do_nothing() -> None:
    hooks = Hooks(make_plugin_manager(BASE))
    flow = make_flow()
    assert hooks.implementers("decode_request") == []
    assert await hooks.decode_request(flow) is None
    assert await hooks.transform_request(flow) is None
    assert await hooks.flow_done(flow) is None
    assert await asyncio.gather(hooks.decode_request(flow), hooks.transform_request(flow)) == [None, None]
    assert flow.response is None


async def test_first_result_skips_declines_from_plain_and_async_implementations() -> None:
    class Declines:
        @hookimpl
        def select_account(self, candidates):  # noqa: ANN001
            return None

    class Picks:
        @hookimpl
        async def select_account(self, candidates):  # noqa: ANN001
            return candidates[0]

    accounts = [make_account("a"), make_account("b")]
    hooks = Hooks(make_plugin_manager(BASE, [Picks(), Declines()]))  # the last extra plugin is called first
    assert hooks.implementers("select_account")[-1] == "select_round_robin"
    assert await hooks.select_account(make_flow(), accounts) is accounts[0]
    assert await hooks.select_account(make_flow(), accounts[::-1]) is accounts[1]


async def test_trace_logs_async_hooks_and_leaves_plain_hooks_plain(caplog: pytest.LogCaptureFixture) -> None:
    class Both:
        @hookimpl
        def admit_request(self, flow):  # noqa: ANN001
            return None

        @hookimpl
        def wrap_response_stream(self, stream):  # noqa: ANN001
            async def upper() -> AsyncIterator[bytes]:
                async for chunk in stream:
                    yield chunk.upper()
            return upper()

    async def source() -> AsyncIterator[bytes]:
        yield b"x"

    hooks = Hooks(make_plugin_manager(BASE, [Both()]), traced_app())
    flow = make_flow()
    with caplog.at_level(logging.INFO, logger="codexlb.hooks"):
        await hooks.admit_request(flow)
        chunks = [c async for c in hooks.wrap_response_stream(flow, source())]
    assert chunks == [b"X"]
    timed = [r.getMessage() for r in caplog.records if r.name == "codexlb.hooks"]
    assert any(m.startswith("hook ") and ".admit_request took " in m for m in timed), timed
    assert not any("wrap_response_stream" in m for m in timed)

