"""log_db: request-log rows written in batches off the hot path; kept and retried when the DB is down."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

import codexlb.db.requestlog as requestlog
from codexlb.db.requestlog import recent_request_logs
from codexlb.flow import session_key_hash
from codexlb.testing import make_flow
from codexlb.testing.harness import proxy_server
from plugins.log_db import LogDB

PIPELINE = ("select_round_robin", "upstream", "log_db")
BODY = {"model": "gpt-5.5", "input": [{"type": "message", "role": "user",
                                       "content": [{"type": "input_text", "text": "hi"}]}],
        "stream": True, "store": False, "prompt_cache_key": "conv-1"}


async def test_rows_written_with_usage_route_and_timing(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, pipeline=PIPELINE) as proxy:
        plugin: LogDB = proxy.lb.pm.get_plugin("log_db")
        for _ in range(3):
            response = await proxy.client.post("/backend-api/codex/responses", json=BODY)
            assert response.status_code == 200
        await proxy.client.post("/v1/responses", content=b"{not json", headers={"content-type": "application/json"})
        assert await _settle(plugin) == 4
        rows = [SimpleNamespace(**r) for r in await recent_request_logs(proxy.lb.sessionmaker, limit=10)]
    ok = [r for r in rows if r.status == 200]
    assert len(ok) == 3 and all(r.endpoint == "codex_responses" and r.model == "gpt-5.5" for r in ok)
    assert all(r.output_tokens and r.input_tokens and r.ttfb_ms is not None for r in ok)
    assert {r.account_id for r in ok} <= {a.id for a in proxy.lb.pool.all()}
    assert all(r.route and r.route.startswith("round_robin:") for r in ok)
    bad = next(r for r in rows if r.status == 400)
    assert bad.error_code == "invalid_json" and bad.account_id is None


async def _settle(plugin: LogDB) -> int:
    """Wait for the background flow_done tasks, then flush."""
    import asyncio

    for _ in range(200):
        if len(plugin.buffer) >= 4:
            break
        await asyncio.sleep(0.01)
    return await plugin.flush()


async def test_database_down_keeps_rows_and_retries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    async with proxy_server(tmp_path, pipeline=PIPELINE, accounts=1) as proxy:
        plugin: LogDB = proxy.lb.pm.get_plugin("log_db")
        await plugin.flow_done(make_flow())
        real = requestlog.insert_request_logs

        async def down(*args: object, **kwargs: object) -> None:
            raise ConnectionError("database is down")

        monkeypatch.setattr(requestlog, "insert_request_logs", down)
        assert await plugin.flush() == 0 and len(plugin.buffer) == 1
        assert any("request log write failed" in r.message for r in caplog.records)
        monkeypatch.setattr(requestlog, "insert_request_logs", real)
        assert await plugin.flush() == 1 and not plugin.buffer


async def test_buffer_is_bounded() -> None:
    plugin = LogDB()
    plugin.configure({"max_buffered_rows": 2})
    for _ in range(5):
        await plugin.flow_done(make_flow())
    assert len(plugin.buffer) == 2 and plugin.dropped == 3


def test_session_key_is_hashed() -> None:
    assert session_key_hash("conv-1") != "conv-1" and len(session_key_hash("conv-1") or "") == 16
    assert session_key_hash(None) is None
