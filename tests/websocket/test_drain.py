"""SIGTERM with WebSockets open on a real server: running turns finish, then 1001.

Under ``codexlb serve``, under Hypercorn's command line (one process, and ``--workers``), and under
``codexlb serve --workers``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from codexlb.testing.fake_faults import Fault
from codexlb.testing.fake_upstream import FakeUpstream
from tests.core.test_serve import free_port, seed_accounts, serve_env, start_server
from tests.deploy.procs import codexlb_env, codexlb_serve, running
from tests.deploy.procs import seed_accounts as deploy_seed
from tests.deploy.test_hypercorn import PLUGINS, render_toml, worker_processes
from tests.support.postgres import postgres_base_url, temp_postgres_database
from tests.websocket.test_transport import turn, until_terminal


def going_away(message: aiohttp.WSMessage) -> None:
    """The server's close frame: 1001 and why (the client's ``close_code`` can read 1006 when the
    exiting server is gone before the client's close reply reaches it)."""
    assert message.type == aiohttp.WSMsgType.CLOSE, message
    assert message.data == 1001 and "shutting down" in message.extra, message


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
                going_away(await idle.receive(timeout=10))
                rest = await until_terminal(busy)  # the running turn finishes
                assert rest[-1]["type"] == "response.completed"
                going_away(await busy.receive(timeout=10))
            assert await asyncio.wait_for(proc.wait(), 30) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def _drain_on_sigterm(proc: asyncio.subprocess.Process, port: int, fake: FakeUpstream) -> None:
    """Idle sockets close with 1001 while a turn runs; that turn finishes, then 1001; exit 0."""
    url = f"ws://127.0.0.1:{port}/backend-api/codex/responses"
    async with aiohttp.ClientSession() as http:
        idle = [await http.ws_connect(url) for _ in range(4)]  # several: with workers, likely on each
        for n, ws in enumerate(idle):
            await ws.send_json(turn(None, f"idle {n}"))
            assert (await until_terminal(ws))[-1]["type"] == "response.completed"
        busy = await http.ws_connect(url)
        fake.inject(None, Fault.stall_mid_stream(after_events=6, delay_s=5))
        await busy.send_json(turn(None, "long"))
        assert json.loads((await busy.receive(timeout=10)).data)["type"] == "codex.rate_limits"
        running = asyncio.create_task(until_terminal(busy))
        proc.send_signal(signal.SIGTERM)
        for ws in idle:
            going_away(await ws.receive(timeout=10))
        assert not running.done()  # the idle ones closed while the turn was still stalled upstream
        assert (await running)[-1]["type"] == "response.completed"
        going_away(await busy.receive(timeout=10))
    assert await asyncio.wait_for(proc.wait(), 30) == 0


async def test_hypercorn_command_line_drains_websockets(tmp_path: Path) -> None:
    async with FakeUpstream() as fake:
        await deploy_seed(tmp_path, fake, 1)
        port = free_port()
        args = [sys.executable, "-m", "hypercorn", "--config", str(render_toml(tmp_path, port)), "codexlb.asgi:app"]
        async with running(args, codexlb_env(tmp_path, fake, port, PLUGINS), tmp_path,
                           f"http://127.0.0.1:{port}/readyz") as proc:
            await _drain_on_sigterm(proc, port, fake)


@pytest.mark.parametrize("command", ["serve", "hypercorn"])
async def test_workers_drain_websockets(tmp_path: Path, command: str) -> None:
    """Hypercorn's parent takes the signal; each worker drains on its shutdown event."""
    async with FakeUpstream() as fake, temp_postgres_database(postgres_base_url()) as db:
        await deploy_seed(tmp_path, fake, 1, database_url=db)
        port = free_port()
        args = (codexlb_serve("--workers", "2") if command == "serve" else
                [sys.executable, "-m", "hypercorn", "--config", str(render_toml(tmp_path, port)),
                 "--workers", "2", "codexlb.asgi:app"])
        env = codexlb_env(tmp_path, fake, port, PLUGINS, CODEX_LB_DATABASE_URL=db)
        async with running(args, env, tmp_path, f"http://127.0.0.1:{port}/readyz") as proc:
            assert len(worker_processes(proc.pid)) == 2
            await _drain_on_sigterm(proc, port, fake)


async def test_a_worker_signalled_alone_still_ends(tmp_path: Path) -> None:
    """Only the parent's shutdown makes a worker finish gracefully; SIGTERM to one worker ends it."""
    async with FakeUpstream() as fake, temp_postgres_database(postgres_base_url()) as db:
        await deploy_seed(tmp_path, fake, 1, database_url=db)
        port = free_port()
        env = codexlb_env(tmp_path, fake, port, PLUGINS, CODEX_LB_DATABASE_URL=db)
        async with running(codexlb_serve("--workers", "2"), env, tmp_path,
                           f"http://127.0.0.1:{port}/readyz") as proc:
            worker = worker_processes(proc.pid)[0]
            os.kill(worker, signal.SIGTERM)
            for _ in range(300):
                if worker not in worker_processes(proc.pid):
                    break
                await asyncio.sleep(0.1)
            assert worker not in worker_processes(proc.pid)
