"""SIGTERM with WebSockets open on a real ``codexlb serve``: running turns finish, then 1001."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import aiohttp

from codexlb.testing.fake_upstream import FakeUpstream
from tests.core.test_serve import free_port, seed_accounts, serve_env, start_server
from tests.websocket.test_transport import turn, until_terminal


async def test_sigterm_finishes_the_running_turn_then_closes_with_1001(tmp_path: Path) -> None:
    async with FakeUpstream(event_delay=0.05) as fake:
        await seed_accounts(tmp_path, fake, 1)
        port = free_port()
        proc = await start_server(tmp_path, serve_env(tmp_path, fake, port))
        url = f"ws://127.0.0.1:{port}/backend-api/codex/responses"
        try:
            async with aiohttp.ClientSession() as http, http.ws_connect(url) as idle, \
                    http.ws_connect(url) as busy:
                await idle.send_json(turn(None, "first"))
                assert (await until_terminal(idle))[-1]["type"] == "response.completed"
                await busy.send_json(turn(None, "long"))
                first = json.loads((await busy.receive(timeout=10)).data)
                assert first["type"] == "codex.rate_limits"
                proc.send_signal(signal.SIGTERM)
                closed = await idle.receive(timeout=10)
                assert closed.type == aiohttp.WSMsgType.CLOSE and idle.close_code == 1001
                rest = await until_terminal(busy)  # the running turn finishes
                assert rest[-1]["type"] == "response.completed"
                closed = await busy.receive(timeout=10)
                assert closed.type == aiohttp.WSMsgType.CLOSE and busy.close_code == 1001
                assert "shutting down" in closed.extra
            assert await asyncio.wait_for(proc.wait(), 30) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
