"""Many WebSockets at once through the proxy: none waits on a connection limit.

aiohttp's client caps a session at 100 connections by default; an open WebSocket holds one for its
whole life. 150 sockets stay open here while each runs chained turns, all at the same time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from codexlb.testing.harness import proxy_server
from tests.websocket.test_transport import turn, until_terminal, ws_url

SOCKETS = 150


async def test_150_open_websockets_all_complete_their_turns(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, accounts=2) as proxy, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        sockets = await asyncio.gather(*(http.ws_connect(ws_url(proxy)) for _ in range(SOCKETS)))
        try:
            prev: list[str | None] = [None] * SOCKETS

            async def one(n: int, ws: aiohttp.ClientWebSocketResponse, text: str) -> None:
                await ws.send_json({**turn(prev[n], text), "prompt_cache_key": f"conv-{n}"})
                frames = await until_terminal(ws)
                assert frames[-1]["type"] == "response.completed", frames[-1]
                prev[n] = frames[-1]["response"]["id"]

            for step in range(2):  # every socket open and mid-conversation while the others run
                await asyncio.gather(*(one(n, ws, f"turn {step}") for n, ws in enumerate(sockets)))
            assert all(not ws.closed for ws in sockets)
        finally:
            await asyncio.gather(*(ws.close() for ws in sockets))
        assert len(proxy.fake.requests_for("responses")) == 2 * SOCKETS
