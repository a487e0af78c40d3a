"""The bare pass-through without Quart: a raw ASGI app on Hypercorn (uvloop) relaying through aiohttp.

What ``bench.bare_floor`` does, served the way codexlb serves its proxied POST routes
(``codexlb/web/fast_path.py``): the body read from ``receive``, the credentials swapped for an
account's (accounts in turn), the upstream body sent chunk by chunk, one task listening for the
client going away. ``bench.overhead --asgi`` measures it beside ``bare``: the difference between
the two is Quart's own work, and the proxy minus this is the pipeline's own cost.

    BENCH_UPSTREAM=http://127.0.0.1:P/backend-api BENCH_PORT=N BENCH_ACCOUNTS=accounts.json \\
        python -m bench.asgi_floor
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import aiohttp

from bench.floor_run import run_floor

FORWARD = frozenset({"accept", "user-agent", "originator", "version", "openai-beta", "session-id"})
DROP_RESPONSE = frozenset({"content-length", "transfer-encoding", "connection", "date", "server"})
Send = Any
Receive = Any


def create_app(upstream: str, accounts: list[dict[str, Any]]) -> Any:
    turn = itertools.cycle(accounts)
    url = upstream + "/codex/responses"
    state: dict[str, aiohttp.ClientSession] = {}

    async def lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                state["session"] = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=1000), auto_decompress=False, trust_env=False,
                    timeout=aiohttp.ClientTimeout(total=None), skip_auto_headers=("User-Agent", "Accept"))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await state["session"].close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def relay(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        account = next(turn)
        parts = []
        while True:
            message = await receive()
            parts.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = {}
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1")
            if name in FORWARD or name.startswith("x-codex-"):
                headers[name] = raw_value.decode("latin-1")
        headers["authorization"] = f"Bearer {account['access_token']}"
        headers["chatgpt-account-id"] = account["chatgpt_account_id"]
        headers["content-type"] = "application/json"
        task = asyncio.current_task()
        assert task is not None
        finished = False

        def heard(done: asyncio.Future[Any]) -> None:
            if not (finished or done.cancelled() or done.exception()) and done.result()["type"] == "http.disconnect":
                task.cancel()

        listener = asyncio.ensure_future(receive())
        listener.add_done_callback(heard)
        try:
            answer = await state["session"].post(url, headers=headers, data=b"".join(parts))
            out = [(k.lower().encode(), v.encode()) for k, v in answer.headers.items()
                   if k.lower() not in DROP_RESPONSE]
            await send({"type": "http.response.start", "status": answer.status, "headers": out})
            try:
                async for chunk in answer.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            finally:
                answer.release()
            finished = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            finished = True
            listener.cancel()

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
        elif scope["path"] == "/healthz":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"ok"})
        else:
            await relay(scope, receive, send)

    return app


def main() -> None:
    run_floor(create_app)


if __name__ == "__main__":
    main()
