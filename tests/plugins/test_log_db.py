"""log_db: request-log rows written in batches off the hot path; kept and retried when the DB is down."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest

import codexlb.db.requestlog as requestlog
from codexlb.db.engine import make_engine, make_sessionmaker
from codexlb.db.requestlog import recent_request_logs
from codexlb.flow import session_key_hash
from codexlb.testing import make_flow
from codexlb.testing.harness import proxy_server
from plugins.log_db import LogDB
from tests.support.postgres import postgres_base_url, temp_postgres_database
from tests.support.refusals import allow_request_logs, refuse_request_logs

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
        await proxy.settle()
        rows = [SimpleNamespace(**r) for r in await recent_request_logs(proxy.lb.sessionmaker, limit=10)]
    assert len(rows) == 4 and not plugin.buffer
    ok = [r for r in rows if r.status == 200]
    assert len(ok) == 3 and all(r.endpoint == "codex_responses" and r.model == "gpt-5.5" for r in ok)
    assert all(r.output_tokens and r.input_tokens and r.ttfb_ms is not None for r in ok)
    assert {r.account_id for r in ok} <= {a.id for a in proxy.lb.pool.all()}
    assert all(r.route and r.route.startswith("round_robin:") for r in ok)
    bad = next(r for r in rows if r.status == 400)
    assert bad.error_code == "invalid_json" and bad.account_id is None


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


async def test_concurrent_flushes_write_each_row_once(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, pipeline=PIPELINE, accounts=1) as proxy:
        plugin: LogDB = proxy.lb.pm.get_plugin("log_db")
        for _ in range(3):
            await plugin.flow_done(make_flow())
        written = await asyncio.gather(plugin.flush(), plugin.flush(), plugin.flush())
        assert sorted(written) == [0, 0, 3] and not plugin.buffer
        assert len(await recent_request_logs(proxy.lb.sessionmaker, limit=10)) == 3


async def test_rows_arriving_during_a_flush_wait_for_the_next(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A flush writes what was buffered when it began: a steady stream is one transaction an interval."""
    async with proxy_server(tmp_path, pipeline=PIPELINE, accounts=1) as proxy:
        plugin: LogDB = proxy.lb.pm.get_plugin("log_db")
        real, batches = requestlog.insert_request_logs, []

        async def insert_while_requests_finish(sessionmaker: object, rows: list[dict[str, object]]) -> None:
            batches.append(len(rows))
            if len(batches) == 1:
                await plugin.flow_done(make_flow())  # a request finishes while the first batch is written
            await real(sessionmaker, rows)  # type: ignore[arg-type]

        monkeypatch.setattr(requestlog, "insert_request_logs", insert_while_requests_finish)
        for _ in range(3):
            await plugin.flow_done(make_flow())
        assert await plugin.flush() == 3 and batches == [3] and len(plugin.buffer) == 1
        assert await plugin.flush() == 1 and batches == [3, 1] and not plugin.buffer
        monkeypatch.setattr(requestlog, "insert_request_logs", real)
        assert len(await recent_request_logs(proxy.lb.sessionmaker, limit=10)) == 4


async def test_buffer_is_bounded() -> None:
    plugin = LogDB()
    plugin.configure({"max_buffered_rows": 2})
    for _ in range(5):
        await plugin.flow_done(make_flow())
    assert len(plugin.buffer) == 2 and plugin.dropped == 3


def test_session_key_is_hashed() -> None:
    assert session_key_hash("conv-1") != "conv-1" and len(session_key_hash("conv-1") or "") == 16
    assert session_key_hash(None) is None


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'data' / 'store.db'}"
        return
    async with temp_postgres_database(postgres_base_url()) as url:
        yield url


HELD = {"log_db": {"flush_interval_seconds": 3600, "batch_size": 10_000}}
"""Rows stay buffered until the server stops (the shutdown flush writes them)."""


async def test_removed_account_keeps_its_history_and_logging_goes_on(tmp_path: Path, database_url: str) -> None:
    """Rows buffered for an account removed mid-way are written with the others, at shutdown too."""
    async with proxy_server(tmp_path, pipeline=PIPELINE, database_url=database_url, plugin_options=HELD) as proxy:
        removed = proxy.lb.pool.all()[0]
        for _ in range(4):
            assert (await proxy.client.post("/backend-api/codex/responses", json=BODY)).status_code == 200
        deleted = await proxy.client.delete(f"/api/accounts/{removed.id}")
        assert deleted.status_code == 200 and deleted.json()["deleted"] is True
        for _ in range(4):
            assert (await proxy.client.post("/backend-api/codex/responses", json=BODY)).status_code == 200
        plugin: LogDB = proxy.lb.pm.get_plugin("log_db")
        assert len(plugin.buffer) == 8  # nothing written yet: the removal happened with its rows buffered
        settings = proxy.lb.settings
    engine = make_engine(settings)
    try:
        rows = await recent_request_logs(make_sessionmaker(engine), limit=100)
    finally:
        await engine.dispose()
    assert len(rows) == 8 and all(r["status"] == 200 for r in rows)
    gone = [r for r in rows if r["account_id"] == removed.id]
    assert gone and all(r["account_label"] == removed.label for r in gone)
    assert {r["account_label"] for r in rows} == {a.label for a in [removed, *proxy.lb.pool.all()]}


async def test_a_refused_row_is_dropped_alone(tmp_path: Path, database_url: str,
                                              caplog: pytest.LogCaptureFixture) -> None:
    async with proxy_server(tmp_path, pipeline=PIPELINE, database_url=database_url, plugin_options=HELD) as proxy:
        plugin: LogDB = proxy.lb.pm.get_plugin("log_db")
        for n in range(5):
            await plugin.flow_done(make_flow())
            plugin.buffer[-1]["time"] = float(n)
        plugin.buffer[2]["input_tokens"] = 2 ** 70  # too large for the column: the database refuses this row
        plugin.buffer[3]["model"] = "m" * 5000  # longer than the column: cut to fit, not refused
        with caplog.at_level(logging.WARNING, "codexlb.log_db"):
            assert await plugin.flush() == 4
        assert not plugin.buffer
        assert [r.getMessage() for r in caplog.records if "row dropped" in r.getMessage()] != []
        rows = await recent_request_logs(proxy.lb.sessionmaker, limit=10)
        assert sorted(r["time"] for r in rows) == [0.0, 1.0, 3.0, 4.0]
        assert next(r["model"] for r in rows if r["time"] == 3.0) == "m" * 200
        await plugin.flow_done(make_flow())
        assert await plugin.flush() == 1  # later batches are not held back


async def test_rows_the_database_refuses_are_dropped_alone(tmp_path: Path, database_url: str,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """A row a trigger refuses (a constraint) and one the driver cannot encode (a client's lone surrogate)
    are dropped; the batch's other rows are written."""
    async with proxy_server(tmp_path, pipeline=PIPELINE, database_url=database_url, plugin_options=HELD) as proxy:
        plugin: LogDB = proxy.lb.pm.get_plugin("log_db")
        await refuse_request_logs(proxy.lb.sessionmaker, status=999)
        for n in range(6):
            await plugin.flow_done(make_flow())
            plugin.buffer[-1] |= {"time": float(n), "status": 200}
        plugin.buffer[1]["status"] = 999
        plugin.buffer[4]["model"] = "gpt-\ud800"
        with caplog.at_level(logging.WARNING, "codexlb.log_db"):
            assert await plugin.flush() == 4
        assert not plugin.buffer
        assert len([r for r in caplog.records if "row dropped" in r.getMessage()]) == 2
        rows = await recent_request_logs(proxy.lb.sessionmaker, limit=10)
        assert sorted(r["time"] for r in rows) == [0.0, 2.0, 3.0, 5.0]


async def test_rows_are_kept_while_the_database_cannot_write(tmp_path: Path, database_url: str) -> None:
    async with proxy_server(tmp_path, pipeline=PIPELINE, database_url=database_url, plugin_options=HELD) as proxy:
        plugin: LogDB = proxy.lb.pm.get_plugin("log_db")
        await refuse_request_logs(proxy.lb.sessionmaker, unavailable=True)
        for _ in range(3):
            await plugin.flow_done(make_flow())
        assert await plugin.flush() == 0 and len(plugin.buffer) == 3
        await allow_request_logs(proxy.lb.sessionmaker)
        assert await plugin.flush() == 3 and not plugin.buffer
        assert len(await recent_request_logs(proxy.lb.sessionmaker, limit=10)) == 3
