"""The fake upstream with a fast ``/codex/responses`` for overhead runs (own process).

Answers come from a per-account cache built once with the fake's own event scripts (the same
headers and 20-delta SSE body the normal handler sends), so the fake costs little per request and
the proxy, not the fake, is what the benchmark measures. Usage is not counted (no 429 however long
the run). A request header ``x-codex-bench-hold: <seconds>`` (an ``x-codex-`` name, so the proxy
forwards it) spreads the events over that time instead of sending them at once (held streams).
Other routes are the normal fake's.

    python -m bench.fastfake --port 0 --accounts 4 --info accounts.json   # prints "READY <port>"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from codexlb.testing.fake_sse import build_events, frame, sample_request
from codexlb.testing.fake_upstream import FakeAccount, FakeUpstream

RESPONSES = "/backend-api/codex/responses"
HOLD_HEADER = "x-codex-bench-hold"


class FastFake(FakeUpstream):
    """:class:`FakeUpstream` whose streamed responses are replayed from a cache."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._by_token: dict[str, FakeAccount] = {}
        self._answers: dict[str, tuple[dict[str, str], list[bytes], bytes]] = {}

    def add_account(self, *args: Any, **kwargs: Any) -> FakeAccount:
        account = super().add_account(*args, **kwargs)
        self._by_token[account.access_token] = account
        body = sample_request()
        plan = self.backend._plan(account, body, len(json.dumps(body)))
        frames = [frame(account.rate_limits_event())] if self.rate_limits_event else []
        frames += [frame(event) for event in build_events(plan)]
        request_id = self.ids.make("req_", 24)
        headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "x-request-id": request_id,
                   "x-oai-request-id": request_id, "openai-model": plan.model,
                   "x-codex-turn-state": self.ids.make("ts_", 24), **dict(account.rate_limit_headers())}
        self._answers[account.access_token] = (headers, frames, b"".join(frames))
        return account

    async def start(self) -> None:
        app = web.Application(middlewares=[self._bench_middleware], client_max_size=64 * 1024 * 1024)
        others = [r for r in self.backend.routes() if not (r.method == "POST" and r.path == RESPONSES)]
        app.add_routes([web.post(RESPONSES, self._fast_responses), *others, *self.oauth.routes()])
        self.closing = asyncio.Event()
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0,
                                     auto_decompress=False, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, backlog=1024).start()
        self.port = self._runner.addresses[0][1]

    @web.middleware
    async def _bench_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == RESPONSES:
            return await handler(request)  # type: ignore[no-any-return]
        answer: web.StreamResponse = await self._middleware(request, handler)
        self.requests.clear()  # do not grow over a long run
        return answer

    async def _fast_responses(self, request: web.Request) -> web.StreamResponse:
        token = request.headers.get("Authorization", "")[7:]
        cached = self._answers.get(token)
        if cached is None:
            return web.json_response({"detail": "Unauthorized"}, status=401)
        await request.read()
        headers, frames, body = cached
        response = web.StreamResponse(status=200, headers=headers)
        await response.prepare(request)
        hold = request.headers.get(HOLD_HEADER)
        if hold:
            pause = float(hold) / len(frames)
            for chunk in frames:
                await response.write(chunk)
                await asyncio.sleep(pause)
        else:
            await response.write(body)
        await response.write_eof()
        return response


def account_info(account: FakeAccount) -> dict[str, Any]:
    """What the bench needs to import an account and to call the fake directly as it."""
    return {"chatgpt_account_id": account.chatgpt_account_id, "email": account.email,
            "plan_type": account.plan_type, "access_token": account.access_token,
            "refresh_token": account.refresh_token, "id_token": account.id_token}


async def serve(port: int, accounts: int, info: Path, events: int) -> None:
    fake = FastFake(port=port, events=events, primary_step=0.0, secondary_step=0.0)
    async with fake:
        for _ in range(accounts):
            fake.add_account()
        info.write_text(json.dumps([account_info(a) for a in fake.accounts.values()]))
        print(f"READY {fake.port}", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--accounts", type=int, default=4)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--info", type=Path, required=True, help="write the accounts (with tokens) here")
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(serve(args.port, args.accounts, args.info, args.events))
    else:
        try:
            uvloop.run(serve(args.port, args.accounts, args.info, args.events))
        except KeyboardInterrupt:
            sys.exit(0)


if __name__ == "__main__":
    main()
