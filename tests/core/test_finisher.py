"""flow_done through the finisher: one task for many flows, in order, errors contained, settled at shutdown."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from codexlb import Flow, hookimpl
from codexlb.finisher import Finisher
from codexlb.hooks import Hooks
from codexlb.plugin_loader import make_plugin_manager
from codexlb.tasks import TaskSet
from codexlb.testing import make_flow
from codexlb.testing.harness import proxy_server

BASE = ["select_round_robin", "upstream"]


class Recorder:
    def __init__(self, fail_on: str | None = None) -> None:
        self.seen: list[str] = []
        self.tasks: set[asyncio.Task[object] | None] = set()
        self.fail_on = fail_on

    @hookimpl
    async def flow_done(self, flow: Flow) -> None:
        self.tasks.add(asyncio.current_task())
        self.seen.append(flow.id)
        if flow.id == self.fail_on:
            raise RuntimeError("observer broke")


async def test_flows_are_observed_in_order_by_one_task() -> None:
    recorder = Recorder()
    finisher = Finisher(Hooks(make_plugin_manager(BASE, [recorder])), TaskSet())
    flows = [make_flow() for _ in range(50)]
    for flow in flows[:20]:
        finisher.add(flow)
    await asyncio.sleep(0)
    for flow in flows[20:]:
        finisher.add(flow)
    assert await finisher.settle(timeout=5)
    assert recorder.seen == [f.id for f in flows]
    assert len(recorder.tasks) == 1 and finisher.task is not None and not finisher.task.done()
    finisher.task.cancel()


async def test_a_failing_observer_is_logged_and_the_next_flows_are_still_observed(
        caplog: pytest.LogCaptureFixture) -> None:
    flows = [make_flow() for _ in range(3)]
    recorder = Recorder(fail_on=flows[1].id)
    finisher = Finisher(Hooks(make_plugin_manager(BASE, [recorder])), TaskSet())
    with caplog.at_level(logging.ERROR, logger="codexlb.hooks"):
        for flow in flows:
            finisher.add(flow)
        assert await finisher.settle(timeout=5)
    assert recorder.seen == [f.id for f in flows]
    assert "failed in flow_done" in caplog.text


async def test_nothing_is_queued_when_no_plugin_observes() -> None:
    finisher = Finisher(Hooks(make_plugin_manager(BASE, [])), TaskSet())
    finisher.add(make_flow())
    assert not finisher.flows and finisher.task is None and await finisher.settle(timeout=1)


async def test_settle_reports_an_observer_that_does_not_finish() -> None:
    class Stuck:
        @hookimpl
        async def flow_done(self) -> None:
            await asyncio.Event().wait()

    tasks = TaskSet()
    finisher = Finisher(Hooks(make_plugin_manager(BASE, [Stuck()])), tasks)
    finisher.add(make_flow())
    assert await finisher.settle(timeout=0.05) is False
    await tasks.cancel_all()


async def test_shutdown_observes_every_finished_flow_before_the_plugins_stop(tmp_path: Path) -> None:
    events: list[str] = []

    class Ordered:
        @hookimpl
        async def flow_done(self, flow: Flow) -> None:
            await asyncio.sleep(0.01)  # slower than the answers: flows are still queued at shutdown
            events.append("flow_done")

        @hookimpl
        async def shutdown(self) -> None:
            events.append("shutdown")

    async with proxy_server(tmp_path, plugins=[Ordered()]) as proxy:
        for _ in range(5):
            r = await proxy.client.post("/backend-api/codex/responses",
                                        json={"model": "gpt-5", "input": "hi", "store": False, "stream": True})
            assert r.status_code == 200
    assert events == ["flow_done"] * 5 + ["shutdown"]
