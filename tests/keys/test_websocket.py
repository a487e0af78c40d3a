"""Client keys on Codex's WebSocket transport: the handshake presents the key, every turn is checked.

Over real sockets (aiohttp's client, the proxy under Hypercorn): each turn counts as a request
against the key's limits, is held to its models, is logged with the key, and stops once the key
is revoked, each refusal an in-band error frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import select

from codexlb.db.models import RequestLogRow
from codexlb.testing.harness import proxy_server
from tests.keys.conftest import PIPELINE, SLOW_SYNC, bearer, make_key, plugin
from tests.websocket.test_transport import turn, until_terminal, ws_url


def with_model(model: str) -> dict[str, Any]:
    return {**turn(None, "hi"), "model": model}


async def test_every_turn_is_checked_counted_and_logged(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, accounts=1, pipeline=PIPELINE, plugin_options=SLOW_SYNC) as proxy:
        key = await make_key(proxy, "ws-user", limits=["requests=3/day"], models=["gpt-5.5"])
        key_id = (await proxy.client.get("/api/keys/ws-user")).json()["id"]
        async with aiohttp.ClientSession() as session, session.ws_connect(ws_url(proxy), headers=bearer(key)) as ws:
            await ws.send_json(turn(None, "one"))
            assert (await until_terminal(ws))[-1]["type"] == "response.completed"
            await ws.send_json(with_model("gpt-4o"))
            refused = (await until_terminal(ws))[-1]
            assert (refused["type"], refused["status"], refused["error"]["code"]) == ("error", 403, "model_not_allowed")
            await ws.send_json(turn(None, "three"))
            assert (await until_terminal(ws))[-1]["type"] == "response.completed"
            await ws.send_json(turn(None, "four"))  # three turns admitted: the limit is reached
            limited = (await until_terminal(ws))[-1]
            assert (limited["status"], limited["error"]["code"]) == (429, "api_key_limit_reached")
            assert limited["headers"]["x-should-retry"] == "false" and int(limited["headers"]["retry-after"]) > 0
        upstream = [q for q in proxy.fake.requests if q.endpoint == "responses"]
        assert len(upstream) == 2 and not [q for q in upstream if key in str(dict(q.headers))]
        await proxy.lb.pm.get_plugin("log_db").flush()
        assert proxy.lb.sessionmaker is not None
        async with proxy.lb.sessionmaker() as db:
            rows = (await db.execute(select(RequestLogRow.api_key_id, RequestLogRow.status)
                                     .where(RequestLogRow.endpoint == "codex_websocket"))).all()
        assert sorted((r.api_key_id, r.status) for r in rows) == sorted(
            [(key_id, 200), (key_id, 403), (key_id, 200), (key_id, 429)])


async def test_a_key_revoked_mid_connection_stops_the_next_turn(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, accounts=1, pipeline=PIPELINE, plugin_options=SLOW_SYNC) as proxy:
        key = await make_key(proxy, "leaver")
        async with aiohttp.ClientSession() as session, session.ws_connect(ws_url(proxy), headers=bearer(key)) as ws:
            await ws.send_json(turn(None, "before"))
            assert (await until_terminal(ws))[-1]["type"] == "response.completed"
            assert (await proxy.client.post("/api/keys/leaver/revoke")).status_code == 200
            await ws.send_json(turn(None, "after"))
            refused = (await until_terminal(ws))[-1]
            assert (refused["status"], refused["error"]["code"]) == (401, "invalid_api_key")
        assert plugin(proxy).ring.required


async def test_a_connection_opened_before_any_key_existed_needs_one_once_keys_exist(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, accounts=1, pipeline=PIPELINE, plugin_options=SLOW_SYNC) as proxy:
        async with aiohttp.ClientSession() as session, session.ws_connect(ws_url(proxy)) as ws:
            await ws.send_json(turn(None, "open"))
            assert (await until_terminal(ws))[-1]["type"] == "response.completed"
            await make_key(proxy, "first")
            await ws.send_json(turn(None, "closed now"))
            refused = (await until_terminal(ws))[-1]
            assert (refused["status"], refused["error"]["code"]) == (401, "invalid_api_key")
