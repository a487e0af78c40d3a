"""WebSocket transport: latency per turn, bytes uploaded per turn, memory of idle connections.

    .venv/bin/python -m bench.ws_bench                 # ~1-2 minutes
    .venv/bin/python -m bench.ws_bench --quick         # fewer conversations and 100 idle connections

A 25-turn Codex-like conversation (a 21 KB developer message, then ~1.5 KB of new input per turn)
runs four ways: a WebSocket straight to the fake (what a WebSocket upstream would be), HTTP
straight to the fake (the whole context each turn), and the same two through ``codexlb serve``
(every default plugin). The fake runs in this process; the proxy in its own. Latency is the time
from sending a turn to its ``response.completed``. Memory: RSS of the proxy before and after
opening N WebSockets that each hold a 25-turn context, divided by N.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.fastfake import account_info
from bench.procs import available_plugins, raise_fd_limit, rss_kb, start_proxy
from codexlb.testing.fake_upstream import FakeUpstream

TURNS = 25
DEVELOPER = "You are a coding agent. " * 900  # ~21 KB, like Codex's system prompt
COMPLETED = b'"type":"response.completed"'


def user_item(n: int) -> dict[str, Any]:
    text = f"turn {n}: " + "please look at this file and explain it. " * 36  # ~1.5 KB
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def frame(prev: str | None, items: list[dict[str, Any]], key: str) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "response.create", "model": "gpt-5.5", "store": False, "stream": True,
                           "prompt_cache_key": key, "input": items, "reasoning": {"effort": "medium"}}
    if prev:
        out["previous_response_id"] = prev
    return out


async def ws_conversation(http: aiohttp.ClientSession, url: str, headers: dict[str, str], key: str,
                          turns: int = TURNS) -> tuple[list[float], list[int], aiohttp.ClientWebSocketResponse]:
    """Run a chained conversation; per-turn latency and bytes sent. The socket is left open."""
    ws = await http.ws_connect(url, headers=headers, max_msg_size=0)
    prev, latencies, sizes = None, [], []
    first = [{"type": "message", "role": "developer", "content": [{"type": "input_text", "text": DEVELOPER}]}]
    for n in range(turns):
        data = json.dumps(frame(prev, [*(first if n == 0 else []), user_item(n)], key))
        start = time.perf_counter()
        await ws.send_str(data)
        while True:
            message = await ws.receive(timeout=60)
            if message.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"socket closed: {message}")
            if '"response.completed"' in message.data[:40]:
                prev = json.loads(message.data)["response"]["id"]
                break
            if message.data.startswith('{"type":"error"'):
                raise RuntimeError(message.data[:300])
        latencies.append(time.perf_counter() - start)
        sizes.append(len(data.encode()))
    return latencies, sizes, ws


async def http_conversation(http: aiohttp.ClientSession, url: str, headers: dict[str, str],
                            key: str) -> tuple[list[float], list[int]]:
    """The same conversation over HTTP: the whole history in every request."""
    history: list[Any] = [{"type": "message", "role": "developer",
                           "content": [{"type": "input_text", "text": DEVELOPER}]}]
    latencies, sizes = [], []
    for n in range(TURNS):
        history.append(user_item(n))
        body = frame(None, history, key)
        del body["type"]
        data = json.dumps(body).encode()
        start = time.perf_counter()
        async with http.post(url, data=data, headers={**headers, "content-type": "application/json"}) as answer:
            raw = await answer.read()
        latencies.append(time.perf_counter() - start)
        sizes.append(len(data))
        if COMPLETED not in raw:
            raise RuntimeError(raw[:300])
        for block in raw.split(b"\n\n"):
            if b"response.output_item.done" in block:
                history.append(json.loads(block.split(b"data: ", 1)[1])["item"])
    return latencies, sizes


def summary(latencies: list[list[float]], sizes: list[int]) -> dict[str, float]:
    late = [lat for conv in latencies for lat in conv[1:]]  # turn 1 carries the first context everywhere
    return {"p50_ms": round(statistics.median(late) * 1000, 2),
            "p90_ms": round(statistics.quantiles(late, n=10)[-1] * 1000, 2),
            "bytes_turn_25": sizes[-1], "bytes_turn_2": sizes[1]}


async def main(conversations: int, idle: int) -> dict[str, Any]:
    raise_fd_limit()
    results: dict[str, Any] = {}
    async with FakeUpstream(events=20, primary_step=0.0, secondary_step=0.0) as fake:
        accounts = [fake.add_account() for _ in range(4)]
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            child, port = await start_proxy(root, fake.base_url, fake.auth_base_url,
                                            [account_info(a) for a in accounts], available_plugins(), None)
            try:
                direct_ws = fake.base_url.replace("http", "ws") + "/codex/responses"
                direct_http = fake.base_url + "/codex/responses"
                proxy_ws = f"ws://127.0.0.1:{port}/backend-api/codex/responses"
                proxy_http = f"http://127.0.0.1:{port}/backend-api/codex/responses"
                own = dict(accounts[0].headers())
                # no connection cap: aiohttp's default of 100 would hold the 101st idle socket back
                async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
                    runs: dict[str, tuple[list[list[float]], list[int]]] = {k: ([], []) for k in
                                                                            ("direct_ws", "direct_http",
                                                                             "proxy_ws", "proxy_http")}
                    for c in range(conversations):  # rotating order, so drift hits every mode alike
                        key = f"bench-{c}"
                        lat, size, ws = await ws_conversation(http, direct_ws, own, key + "d")
                        await ws.close()
                        runs["direct_ws"][0].append(lat)
                        runs["direct_ws"] = (runs["direct_ws"][0], size)
                        lat, size = await http_conversation(http, direct_http, own, key + "h")
                        runs["direct_http"][0].append(lat)
                        runs["direct_http"] = (runs["direct_http"][0], size)
                        lat, size, ws = await ws_conversation(http, proxy_ws, {}, key + "p")
                        await ws.close()
                        runs["proxy_ws"][0].append(lat)
                        runs["proxy_ws"] = (runs["proxy_ws"][0], size)
                        lat, size = await http_conversation(http, proxy_http, {}, key + "q")
                        runs["proxy_http"][0].append(lat)
                        runs["proxy_http"] = (runs["proxy_http"][0], size)
                        fake.requests.clear()
                    for name, (lats, sizes) in runs.items():
                        results[name] = summary(lats, sizes)
                    results["upstream_bytes_turn_25_proxy_ws"] = results["proxy_http"]["bytes_turn_25"]
                    results["memory"] = await idle_memory(http, proxy_ws, child.pid, idle, fake)
            finally:
                child.stop()
    return results


async def idle_memory(http: aiohttp.ClientSession, url: str, pid: int, count: int,
                      fake: FakeUpstream) -> dict[str, float]:
    """Open ``count`` sockets, each run through a 25-turn conversation, and keep them open."""
    before = rss_kb(pid)
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    gate = asyncio.Semaphore(25)

    async def one(n: int) -> None:
        async with gate:
            _, _, ws = await ws_conversation(http, url, {}, f"idle-{n}")
            sockets.append(ws)
            if len(fake.requests) > 1000:
                fake.requests.clear()

    await asyncio.gather(*(one(n) for n in range(count)))
    after = rss_kb(pid)
    for ws in sockets:
        await ws.close()
    return {"connections": count, "rss_before_mb": round(before / 1024, 1), "rss_after_mb": round(after / 1024, 1),
            "kb_per_connection": round((after - before) / count, 1)}


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--conversations", type=int)
    parser.add_argument("--idle", type=int)
    args = parser.parse_args(argv)
    conversations = args.conversations or (2 if args.quick else 4)
    idle = args.idle or (100 if args.quick else 500)
    results = asyncio.run(main(conversations, idle))
    json.dump(results, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    cli()
