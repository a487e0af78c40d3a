"""The engine floor: the thinnest pass-through on codexlb's stack (Quart, Hypercorn on uvloop, httpx over
the aiohttp transport), no plugins, no storage. design.md "Engine floor (measured)" measured this; running
it next to the proxy shows what the pipeline adds on this machine.

    BENCH_UPSTREAM=http://127.0.0.1:P/backend-api BENCH_PORT=N BENCH_ACCOUNTS=accounts.json \\
        python -m bench.floor_server

Like the proxy, it takes requests without credentials and adds an account's token (accounts in turn).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import httpx
from quart import Quart, Response, request  # noqa: TID251 - a web app, not a plugin

from bench.floor_run import run_floor

DROP_REQUEST = {"host", "content-length", "connection", "authorization", "chatgpt-account-id"}
DROP_RESPONSE = {"content-length", "transfer-encoding", "connection", "date", "server"}


def create_app(upstream: str, accounts: list[dict[str, Any]]) -> Quart:
    app = Quart("floor")
    turn = itertools.cycle(accounts)
    state: dict[str, httpx.AsyncClient] = {}

    @app.before_serving
    async def start() -> None:
        from httpx_aiohttp import AiohttpTransport

        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
        state["client"] = httpx.AsyncClient(transport=AiohttpTransport(limits=limits, trust_env=False),
                                            timeout=httpx.Timeout(30.0, read=None))

    @app.after_serving
    async def stop() -> None:
        await state["client"].aclose()

    @app.get("/healthz")
    async def healthz() -> str:
        return "ok"

    @app.post("/backend-api/codex/responses")
    async def responses() -> Response:
        client, account = state["client"], next(turn)
        body = await request.get_data()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in DROP_REQUEST}
        headers["authorization"] = f"Bearer {account['access_token']}"
        headers["chatgpt-account-id"] = account["chatgpt_account_id"]
        upstream_request = client.build_request("POST", upstream + "/codex/responses", headers=headers,
                                                content=body)
        answer = await client.send(upstream_request, stream=True)

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in answer.aiter_raw():
                    yield chunk
            finally:
                await answer.aclose()

        out_headers = [(k, v) for k, v in answer.headers.items() if k.lower() not in DROP_RESPONSE]
        response = Response(relay(), status=answer.status_code, headers=out_headers)
        response.timeout = None
        return response

    return app


def main() -> None:
    run_floor(create_app)


if __name__ == "__main__":
    main()
