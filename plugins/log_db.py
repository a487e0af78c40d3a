"""Write one request-log row per proxied request, in batches, off the hot path.

Hooks: ``flow_done`` (queue the row), ``startup`` (start the writer), ``shutdown`` (final flush).
Rows are flushed every ``flush_interval_seconds`` or when ``batch_size`` rows are waiting. If the
database is down they stay in a bounded buffer (``max_buffered_rows``; the oldest are dropped
beyond it, with a warning) and are retried. When the database refuses a batch for what is in it,
the batch is written row by row and only the rows it refuses are dropped (with a warning), so one
bad row never holds back the others. Each row carries the account's id and label, and stays after
the account is removed.

Settings table ``[plugins.log_db]``:
- ``flush_interval_seconds`` (float, default 1.0)
- ``batch_size`` (int, default 500)
- ``max_buffered_rows`` (int, default 100000)
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from codexlb import Flow, hookimpl
from codexlb.options import PluginOptions

if TYPE_CHECKING:
    from codexlb.types import AppView

log = logging.getLogger("codexlb.log_db")


def row_of(flow: Flow) -> dict[str, Any]:
    """The request-log row of a finished flow."""
    started, usage = flow.started_at, flow.usage
    finished = flow.finished_at or started
    return {
        "time": started, "account_id": flow.account.id if flow.account else None,
        "account_label": flow.account.label if flow.account else None,
        "endpoint": flow.request.endpoint, "model": flow.model, "status": flow.status,
        "error_code": flow.error_code,
        "input_tokens": usage.input if usage else None, "cached_tokens": usage.cached if usage else None,
        "output_tokens": usage.output if usage else None,
        "reasoning_tokens": usage.reasoning if usage else None,
        "ttfb_ms": round((flow.first_byte_at - started) * 1000, 3) if flow.first_byte_at else None,
        "duration_ms": round((finished - started) * 1000, 3), "client_ip": flow.request.client_ip,
        "session_key_hash": flow.session_key_hash, "route": str(flow.route) if flow.route is not None else None,
        "attempts": max(1, len(flow.attempts)), "api_key_id": flow.api_key_id,
    }


class LogDB:
    """Buffers request-log rows and writes them in batches."""

    def __init__(self) -> None:
        self.flush_interval_seconds = 1.0
        self.batch_size = 500
        self.max_buffered_rows = 100_000
        self.buffer: deque[dict[str, Any]] = deque()
        self.dropped = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._app: AppView | None = None
        self._flushing = asyncio.Lock()

    @hookimpl
    def configure(self, config: Mapping[str, Any]) -> None:
        options = PluginOptions("log_db", config, ("flush_interval_seconds", "batch_size", "max_buffered_rows"))
        self.flush_interval_seconds = options.number("flush_interval_seconds", self.flush_interval_seconds,
                                                     low=0.001)
        self.batch_size = options.number("batch_size", self.batch_size, low=1, integer=True)
        self.max_buffered_rows = options.number("max_buffered_rows", self.max_buffered_rows, low=1, integer=True)

    @hookimpl
    async def startup(self, app: AppView) -> None:
        self._app = app
        self._wake, self._flushing = asyncio.Event(), asyncio.Lock()
        self._task = app.tasks.spawn(self._run(), "log_db-writer")

    @hookimpl
    async def flow_done(self, flow: Flow) -> None:
        if len(self.buffer) >= self.max_buffered_rows:
            self.buffer.popleft()
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("request log buffer full: %d row(s) dropped so far", self.dropped)
        self.buffer.append(row_of(flow))
        if len(self.buffer) >= self.batch_size:
            self._wake.set()

    async def flush(self) -> int:
        """Write the rows buffered when it starts; returns how many were written.

        Rows that arrive while it writes wait for the next flush, so a steady stream of requests
        is written in one transaction per interval, not in a chase of small ones. Rows stay
        buffered while the database is down. One flush at a time: two would both write the rows
        at the front of the buffer.
        """
        async with self._flushing:
            return await self._flush(len(self.buffer))

    async def _flush(self, count: int) -> int:
        if self._app is None or self._app.sessionmaker is None:
            return 0
        from codexlb.db.engine import is_unavailable
        from codexlb.db.requestlog import insert_request_logs

        written = 0
        while self.buffer and written < count:
            batch = [self.buffer[i] for i in range(min(self.batch_size, len(self.buffer), count - written))]
            try:
                await insert_request_logs(self._app.sessionmaker, batch)
            except Exception as exc:
                if is_unavailable(exc):
                    log.warning("request log write failed (%d row(s) kept, will retry): %s", len(self.buffer),
                                type(exc).__name__)
                    return written
                done, available = await self._write_singly(len(batch))
                written += done
                if not available:
                    return written
                count -= len(batch) - done  # the refused rows are gone, not written
                continue
            self._forget(batch)
            written += len(batch)
        return written

    async def _write_singly(self, count: int) -> tuple[int, bool]:
        """Write the first ``count`` buffered rows one at a time, dropping each one the database refuses.

        Returns the rows written and whether the database stayed available (if not, the rest stay).
        """
        from codexlb.db.engine import is_unavailable
        from codexlb.db.requestlog import insert_request_logs

        assert self._app is not None and self._app.sessionmaker is not None
        written = 0
        for _ in range(count):
            if not self.buffer:
                break
            row = self.buffer[0]
            try:
                await insert_request_logs(self._app.sessionmaker, [row])
            except Exception as exc:
                if is_unavailable(exc):
                    log.warning("request log write failed (%d row(s) kept, will retry): %s", len(self.buffer),
                                type(exc).__name__)
                    return written, False
                reason = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""])[0]
                log.warning("request log row dropped, the database refused it (time %s, endpoint %s): %s: %s",
                            row.get("time"), row.get("endpoint"), type(exc).__name__, reason[:200])
            else:
                written += 1
            self._forget([row])
        return written, True

    def _forget(self, rows: list[dict[str, Any]]) -> None:
        """Remove written rows from the front (unless the full buffer already dropped them)."""
        for row in rows:
            if self.buffer and self.buffer[0] is row:
                self.buffer.popleft()

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.flush_interval_seconds)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    @hookimpl
    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        while self.buffer and await self.flush():
            pass
