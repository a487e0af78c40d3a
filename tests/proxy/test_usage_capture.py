"""Usage capture: headers and codex.rate_limits update the pool at once; no database on the hot path."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event

from codexlb.testing.fake_sse import parse_sse
from codexlb.testing.harness import proxy_server
from codexlb.types import TokenUsage
from tests.proxy.conftest import PIPELINE
from tests.proxy.test_failover import BODY


async def test_rate_limits_reach_the_pool_before_the_next_selection(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, accounts=1, pipeline=PIPELINE) as proxy:
        fake_account = proxy.accounts[0]
        fake_account.set_usage(primary=42.0, secondary=7.0)
        response = await proxy.client.post("/backend-api/codex/responses", json=BODY)
        assert response.status_code == 200
        account = proxy.lb.pool.all()[0]
        assert 42.0 <= account.primary.used_percent < 43.0
        assert 7.0 <= account.secondary.used_percent < 8.0
        assert account.primary.window_minutes == 300 and account.secondary.window_minutes == 10080
        assert account.primary.resets_at and account.last_used_at


def sent_usage(sse: bytes) -> TokenUsage:
    """The usage the upstream's ``response.completed`` carried, read from the bytes the client got."""
    usage = next(data["response"]["usage"] for name, data in parse_sse(sse) if name == "response.completed")
    return TokenUsage(usage["input_tokens"], usage["input_tokens_details"]["cached_tokens"],
                      usage["output_tokens"], usage["output_tokens_details"]["reasoning_tokens"])


async def test_tokens_captured_from_response_completed(tmp_path: Path) -> None:
    captured = []

    class Spy:
        from codexlb import hookimpl

        @hookimpl
        async def flow_done(self, flow):  # noqa: ANN001
            captured.append(flow.usage)

    async with proxy_server(tmp_path, accounts=1, pipeline=PIPELINE, plugins=[Spy()]) as proxy:
        body = {**BODY, "prompt_cache_key": "conv-7", "reasoning": {"effort": "low"}}
        answers = [await proxy.client.post("/backend-api/codex/responses", json=body) for _ in range(2)]
        await proxy.settle()
    assert captured == [sent_usage(answer.content) for answer in answers]
    first, second = captured
    assert first.input > 0 and first.output > 0 and first.cached == 0
    assert second.cached > 0 and second.reasoning > 0


async def test_no_database_round_trip_while_proxying(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, accounts=2, pipeline=PIPELINE) as proxy:
        await proxy.lb.jobs.stop()  # background writers would run concurrently
        await proxy.lb.tasks.cancel_all()
        statements: list[str] = []
        sync_engine = proxy.lb.engine.sync_engine

        def count(conn, cursor, statement, *args):  # noqa: ANN001, ANN002
            statements.append(statement)

        event.listen(sync_engine, "before_cursor_execute", count)
        try:
            for _ in range(5):
                response = await proxy.client.post("/backend-api/codex/responses", json=BODY)
                assert response.status_code == 200
            await proxy.client.post("/v1/chat/completions",
                                    json={"model": "gpt-5.5", "messages": [{"role": "user", "content": "hi"}]})
        finally:
            event.remove(sync_engine, "before_cursor_execute", count)
        assert statements == []
