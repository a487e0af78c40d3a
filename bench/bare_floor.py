"""The bare pass-through floor: Quart on Hypercorn (uvloop) relaying through aiohttp directly.

No pipeline, no storage, no httpx: the request body is read, the credentials swapped for an
account's (accounts in turn), the upstream body streamed back chunk by chunk as aiohttp delivers
it. This is the engine the proxy runs on with nothing of the proxy's own; ``bench.overhead``
measures it in the same run as the proxy and the httpx floor (``bench.floor_server``).

    BENCH_UPSTREAM=http://127.0.0.1:P/backend-api BENCH_PORT=N BENCH_ACCOUNTS=accounts.json \\
        python -m bench.bare_floor
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from quart import Quart, Response, request  # noqa: TID251 - a web app, not a plugin
from werkzeug.datastructures import Headers

from bench.floor_run import run_floor

FORWARD = frozenset({"accept", "user-agent", "originator", "version", "openai-beta", "session-id"})
DROP_RESPONSE = frozenset({"content-length", "transfer-encoding", "connection", "date", "server"})


def create_app(upstream: str, accounts: list[dict[str, Any]]) -> Quart:
    app = Quart("bare-floor")
    turn = itertools.cycle(accounts)
    url = upstream + "/codex/responses"
    state: dict[str, aiohttp.ClientSession] = {}

    @app.before_serving
    async def start() -> None:
        connector = aiohttp.TCPConnector(limit=1000)
        state["session"] = aiohttp.ClientSession(connector=connector, auto_decompress=False, trust_env=False,
                                                 timeout=aiohttp.ClientTimeout(total=None),
                                                 skip_auto_headers=("User-Agent", "Accept"))

    @app.after_serving
    async def stop() -> None:
        await state["session"].close()

    @app.get("/healthz")
    async def healthz() -> str:
        return "ok"

    @app.post("/backend-api/codex/responses")
    async def responses() -> Response:
        account = next(turn)
        body = await request.get_data()
        headers = {k: v for k, v in request.headers.items()
                   if (name := k.lower()) in FORWARD or name.startswith("x-codex-")}
        headers["authorization"] = f"Bearer {account['access_token']}"
        headers["chatgpt-account-id"] = account["chatgpt_account_id"]
        headers["content-type"] = "application/json"
        answer = await state["session"].post(url, headers=headers, data=body)

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in answer.content.iter_any():
                    yield chunk
            finally:
                answer.release()

        out_headers = [(k, v) for k, v in answer.headers.items() if k.lower() not in DROP_RESPONSE]
        response = Response(relay(), status=answer.status, headers=Headers(out_headers))
        response.timeout = None
        return response

    return app


def main() -> None:
    run_floor(create_app)


if __name__ == "__main__":
    main()
