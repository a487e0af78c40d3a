"""Codex's WebSocket transport over real sockets: aiohttp's client, the proxy under Hypercorn, the fake.

Each turn is a pipeline flow (endpoint ``codex_websocket``): the request-log rows, route reasons
and usage are read from ``flow_done`` as the log plugins see them.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from codexlb import Flow, hookimpl
from codexlb.testing.fake_upstream import Fault
from codexlb.testing.harness import ProxyHarness, proxy_server

FIXTURES = Path(__file__).parents[1] / "fixtures" / "codex-cli"
F04 = FIXTURES / "F04-codex-chatgpt-lbstyle-ws" / "0004-WS-backend-api_codex_responses.json"
F24 = FIXTURES / "F24-codex-tool-call-turn-ws" / "0004-WS-backend-api_codex_responses.json"


class Flows:
    """A plugin that keeps every finished flow (what log_db and log_stdout get)."""

    def __init__(self) -> None:
        self.done: list[Flow] = []

    @hookimpl
    async def flow_done(self, flow: Flow) -> None:
        self.done.append(flow)


def captured(path: Path) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Handshake headers (no credentials) and client frames of a captured Codex WebSocket."""
    record = json.loads(path.read_text())
    headers = {}
    for line in record["headers"]:
        name, value = line.split(": ", 1)
        if name.lower() in ("session-id", "thread-id", "originator", "openai-beta", "x-client-request-id"):
            headers[name] = value
    return headers, [m["body"] for m in record["ws_messages"]]


def ws_url(proxy: ProxyHarness) -> str:
    return proxy.url.replace("http", "ws") + "/backend-api/codex/responses"


async def until_terminal(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    """Frames of one turn, up to its terminal event or error."""
    frames = []
    while True:
        message = await ws.receive(timeout=10)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        frames.append(json.loads(message.data))
        if frames[-1]["type"] in ("response.completed", "response.failed", "response.incomplete", "error"):
            return frames


def turn(prev: str | None, text: str) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "response.create", "model": "gpt-5.5", "store": False, "stream": True,
                             "prompt_cache_key": "conv-1",
                             "input": [{"type": "message", "role": "user",
                                        "content": [{"type": "input_text", "text": text}]}]}
    if prev is not None:
        frame["previous_response_id"] = prev
    return frame


def texts(items: list[dict[str, Any]]) -> list[str]:
    out = []
    for item in items:
        if item.get("type") == "message":
            out.append(item["content"][0]["text"][:30])
        else:
            out.append(item["type"])
    return out


async def test_prewarm_then_three_chained_turns(tmp_path: Path) -> None:
    flows = Flows()
    headers, frames = captured(F04)
    async with proxy_server(tmp_path, accounts=2, plugins=[flows]) as proxy, aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url(proxy), headers=headers) as ws:
            await ws.send_json(frames[0])  # Codex's prewarm: generate false, the developer message only
            prewarm = await until_terminal(ws)
            assert [f["type"] for f in prewarm] == ["response.created", "response.completed"]
            assert not proxy.fake.requests_for("responses")  # answered without sampling upstream
            prev = prewarm[-1]["response"]["id"]
            sent = copy.deepcopy(frames[1])  # the turn: previous_response_id + only the new items
            sent["previous_response_id"] = prev
            await ws.send_json(sent)
            answer = await until_terminal(ws)
            assert answer[0]["type"] == "codex.rate_limits" and answer[-1]["type"] == "response.completed"
            prev = answer[-1]["response"]["id"]
            for n in (2, 3):
                await ws.send_json({**turn(prev, f"turn {n}"), "prompt_cache_key": sent["prompt_cache_key"]})
                answer = await until_terminal(ws)
                assert answer[-1]["type"] == "response.completed", answer[-1]
                prev = answer[-1]["response"]["id"]
        served = proxy.fake.requests_for("responses")
        assert len(served) == 3 and len({r.account_id for r in served}) == 1  # one account per connection
        last = served[-1].json
        assert "previous_response_id" not in last and last["store"] is False and "generate" not in last
        answer_text = "Hello from the fake Codex upst"
        assert texts(last["input"])[0] == "You are Codex, a coding agent "
        assert texts(last["input"])[3:] == ["say hi", answer_text, "turn 2", answer_text, "turn 3"]
        assert len(last["input"]) == 8  # prewarm's item, turn 1's three, then each answer and input
    turns = [f for f in flows.done if f.request.endpoint == "codex_websocket"]
    assert len(turns) == 3 and all(f.status == 200 and f.usage is not None for f in turns)
    assert [str(f.route) for f in turns][0] == "sticky:new" and {str(f.route) for f in turns[1:]} == {"sticky:hit"}
    assert all(f.session_key_hash for f in turns) and len({f.account.id for f in turns if f.account}) == 1


async def test_tool_call_turn_sends_only_the_output_and_upstream_gets_the_call(tmp_path: Path) -> None:
    headers, frames = captured(F24)
    async with proxy_server(tmp_path, accounts=1) as proxy, aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url(proxy), headers=headers) as ws:
            await ws.send_json(frames[0])
            prev = (await until_terminal(ws))[-1]["response"]["id"]
            first = copy.deepcopy(frames[1])
            first["previous_response_id"] = prev
            first["input"][-1]["content"][0]["text"] = "call tool exec_command"
            await ws.send_json(first)
            answer = await until_terminal(ws)
            calls = [f["item"] for f in answer if f["type"] == "response.output_item.done"]
            assert calls and calls[0]["type"] == "function_call"
            output = copy.deepcopy(frames[2])  # only [function_call_output]
            output["previous_response_id"] = answer[-1]["response"]["id"]
            output["input"][0]["call_id"] = calls[0]["call_id"]
            await ws.send_json(output)
            assert (await until_terminal(ws))[-1]["type"] == "response.completed"
        last = proxy.fake.requests_for("responses")[-1].json["input"]
        assert [i["type"] for i in last[-2:]] == ["function_call", "function_call_output"]
        assert last[-2]["call_id"] == last[-1]["call_id"]


async def test_failover_on_429_before_the_first_event_rebuilds_the_context(tmp_path: Path) -> None:
    flows = Flows()
    async with proxy_server(tmp_path, accounts=2, plugins=[flows]) as proxy, aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url(proxy)) as ws:
            await ws.send_json(turn(None, "turn 1"))
            prev = (await until_terminal(ws))[-1]["response"]["id"]
            first = proxy.fake.requests_for("responses")[-1].account_id
            proxy.fake.inject(first, Fault.usage_limit(resets_in_seconds=600))
            await ws.send_json(turn(prev, "turn 2"))
            answer = await until_terminal(ws)
            assert answer[-1]["type"] == "response.completed"
        moved = proxy.fake.requests_for("responses")[-1]
        assert moved.account_id != first
        assert texts(moved.json["input"]) == ["turn 1", "Hello from the fake Codex upst", "turn 2"]
    second = [f for f in flows.done if f.request.endpoint == "codex_websocket"][-1]
    assert str(second.route).startswith("sticky:fallback-after-429 from=") and len(second.attempts) == 2
    assert second.attempts[0].status == 429 and second.status == 200


async def test_every_account_limited_is_an_in_band_429_codex_reads(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, accounts=1) as proxy, aiohttp.ClientSession() as http:
        proxy.fake.inject(None, Fault.usage_limit(resets_in_seconds=600), times=-1)
        async with http.ws_connect(ws_url(proxy)) as ws:
            await ws.send_json(turn(None, "hi"))
            [error] = await until_terminal(ws)
            assert error["type"] == "error" and error["status"] == 429
            assert error["error"]["code"] == "usage_limit_reached" and error["error"]["resets_at"] > 0
            assert error["headers"]["x-should-retry"] == "false" and int(error["headers"]["retry-after"]) > 0


async def test_failure_after_the_first_event_is_an_in_band_error(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, accounts=2) as proxy, aiohttp.ClientSession() as http:
        proxy.fake.inject(None, Fault.drop_mid_stream(after_events=4))
        async with http.ws_connect(ws_url(proxy)) as ws:
            await ws.send_json(turn(None, "hi"))
            frames = await until_terminal(ws)
            assert any(f["type"] == "response.output_item.added" for f in frames)
            assert frames[-1]["type"] == "error" and frames[-1]["status"] == 502
            assert frames[-1]["error"]["code"] == "upstream_stream_error"
        assert len(proxy.fake.requests_for("responses")) == 1  # no failover once the client has events


async def test_unknown_previous_response_is_the_upstream_error_and_the_socket_stays(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, accounts=1) as proxy, aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url(proxy)) as ws:
            await ws.send_json(turn("resp_nope", "hi"))
            [error] = await until_terminal(ws)
            assert error["status"] == 400 and error["error"]["code"] == "previous_response_not_found"
            await ws.send_json({"type": "response.processed", "response_id": "resp_x"})  # ignored
            await ws.send_json(turn(None, "hi"))
            assert (await until_terminal(ws))[-1]["type"] == "response.completed"


@pytest.mark.parametrize(("message", "code", "close"), [
    ("not json", "invalid_json", 1007), ('["a list"]', "invalid_frame", 1007),
    (b"\x00binary", "unsupported_frame", 1003),
])
async def test_bad_first_frame_gets_an_error_frame_and_a_close(tmp_path: Path, message: str | bytes, code: str,
                                                               close: int) -> None:
    async with proxy_server(tmp_path, accounts=1) as proxy, aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url(proxy)) as ws:
            await (ws.send_bytes(message) if isinstance(message, bytes) else ws.send_str(message))
            [error] = await until_terminal(ws)
            assert error["status"] == 400 and error["error"]["code"] == code
            assert (await ws.receive(timeout=10)).type == aiohttp.WSMsgType.CLOSE and ws.close_code == close
        async with http.ws_connect(ws_url(proxy)) as ws:  # the server is fine
            await ws.send_json(turn(None, "hi"))
            assert (await until_terminal(ws))[-1]["type"] == "response.completed"


async def test_oversized_message_closes_with_1009(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, accounts=1, websocket_max_message_bytes=4096) as proxy, \
            aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url(proxy)) as ws:
            await ws.send_json(turn(None, "x" * 5000))
            [error] = await until_terminal(ws)
            assert error["error"]["code"] == "message_too_large" and "WEBSOCKET_MAX_MESSAGE_BYTES" in \
                error["error"]["message"]
            assert (await ws.receive(timeout=10)).type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1009
        assert not proxy.fake.requests_for("responses")


async def test_context_bound_closes_with_1009(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, accounts=1, websocket_max_context_bytes=2048) as proxy, \
            aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url(proxy)) as ws:
            prev = None
            for n in range(20):
                await ws.send_json(turn(prev, f"turn {n} " + "y" * 200))
                frames = await until_terminal(ws)
                if frames[-1]["type"] == "error":
                    break
                prev = frames[-1]["response"]["id"]
            assert frames[-1]["error"]["code"] == "context_too_large" and n > 0
            assert (await ws.receive(timeout=10)).type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1009


async def test_idle_connection_is_closed(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, accounts=1, websocket_idle_timeout_seconds=0.3) as proxy, \
            aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url(proxy)) as ws:
            await ws.send_json(turn(None, "hi"))
            assert (await until_terminal(ws))[-1]["type"] == "response.completed"
            closed = await ws.receive(timeout=10)
            assert closed.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1000
            assert "CODEX_LB_WEBSOCKET_IDLE_TIMEOUT_SECONDS" in closed.extra
