"""A fake ChatGPT/Codex backend and auth.openai.com on one loopback port (aiohttp), for tests and benchmarks.

Follows the upstream protocol notes (protocol.md): ``/backend-api/codex/responses`` SSE with
``x-codex-*`` headers and a leading ``codex.rate_limits`` event, ``/wham/usage``, ``/codex/models``
(ETag/304), OAuth with PKCE, rotating single-use refresh tokens and the device-code flow::

    async with FakeUpstream(events=5) as fake:
        account = fake.add_account("acct-1")
        fake.inject("acct-1", Fault.usage_limit(resets_in_seconds=60))
        # UPSTREAM_BASE_URL=fake.base_url, AUTH_BASE_URL=fake.auth_base_url; account.headers() authenticates

Usage grows by ``primary_step``/``secondary_step`` percent per completed response; at 100 % the
account answers 429 ``usage_limit_reached`` until its window resets (per ``clock``). A request with
function tools gets a function call instead of text when ``tool_choice`` is ``"required"`` or names a
function, or when the last input item is a user message containing "call tool" (see ``fake_sse.pick_tool``).
The same path speaks Codex's WebSocket transport (``codexlb.testing.fake_ws``; ``websocket=False``: 426).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from codexlb.testing.fake_accounts import FakeAccount, Window
from codexlb.testing.fake_backend import FakeBackend
from codexlb.testing.fake_control import CONTROL_PREFIX, FakeControl
from codexlb.testing.fake_faults import ENDPOINTS, Fault, split_spec
from codexlb.testing.fake_oauth import FakeOAuth
from codexlb.testing.fake_records import RECORDED, Headers, RecordedRequest, decode_body, parse_json
from codexlb.testing.fake_sse import IdMaker

__all__ = ["FakeAccount", "FakeUpstream", "Fault", "Headers", "RecordedRequest", "write_auth_files"]

_ENDPOINT_BY_PATH = {
    "/backend-api/codex/responses": "responses", "/backend-api/codex/responses/compact": "compact",
    "/backend-api/codex/models": "models", "/backend-api/wham/usage": "usage", "/api/codex/usage": "usage",
    "/backend-api/wham/accounts/check": "accounts", "/backend-api/wham/settings/user": "settings",
    "/oauth/authorize": "authorize", "/oauth/token": "token", "/oauth/revoke": "revoke",
    "/api/accounts/deviceauth/usercode": "device", "/api/accounts/deviceauth/token": "device",
}


class FakeUpstream:
    """The fake server. Use ``async with FakeUpstream() as fake`` or ``start()``/``stop()``."""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, events: int = 20, reply_text: str | None = None,
        reasoning: bool = False, rate_limits_event: bool = True, populate_output: bool = False,
        event_delay: float = 0.0, first_event_delay: float = 0.0, strict_models: bool = False,
        require_account_header: bool = True, invalidate_rotated_access_tokens: bool = True,
        device_interval: int = 5, primary_step: float = 0.1, secondary_step: float = 0.01,
        clock: Callable[[], float] = time.time, seed: str = "fake", websocket: bool = True,
    ) -> None:
        self.host, self.port = host, port
        self.events, self.reply_text, self.reasoning = events, reply_text, reasoning
        self.rate_limits_event, self.populate_output = rate_limits_event, populate_output
        self.event_delay, self.first_event_delay = event_delay, first_event_delay
        self.strict_models, self.require_account_header = strict_models, require_account_header
        self.invalidate_rotated_access_tokens = invalidate_rotated_access_tokens
        self.clock, self.seed = clock, seed
        self.websocket = websocket
        """Serve the WebSocket transport on ``GET /codex/responses`` (else 426, HTTP only)."""
        self.primary_step, self.secondary_step = primary_step, secondary_step
        self.ids = IdMaker(seed)
        self.accounts: dict[str, FakeAccount] = {}
        self.requests: list[RecordedRequest] = []
        self.refresh_calls = 0
        self.next_login: FakeAccount | None = None
        self.oauth = FakeOAuth(self, device_interval=device_interval)
        self.backend = FakeBackend(self)
        self._faults: dict[tuple[str | None, str], list[list[Any]]] = {}
        self.faults_fired: Counter[str] = Counter()
        self.control = FakeControl(self)
        self._runner: web.AppRunner | None = None
        self._arrived = asyncio.Event()
        self.closing = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def auth_base_url(self) -> str:
        """``http://host:port`` (OAuth and device endpoints)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://host:port/backend-api``."""
        return f"{self.auth_base_url}/backend-api"

    async def start(self) -> None:
        """Bind and serve; ``port`` is updated when it was 0."""
        app = web.Application(middlewares=[self._middleware], client_max_size=512 * 1024 * 1024)
        app.add_routes([*self.backend.routes(), *self.oauth.routes(), *self.control.routes()])
        self.closing = asyncio.Event()
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0,
                                     auto_decompress=False, handler_cancellation=True, max_field_size=65536)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Release hanging requests and close the server."""
        self.closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeUpstream:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- accounts ----------------------------------------------------------------------------------

    def add_account(
        self, chatgpt_account_id: str | None = None, *, email: str | None = None, plan_type: str = "plus",
        user_id: str | None = None, primary_used_percent: float = 0.0, secondary_used_percent: float = 0.0,
        primary_window_minutes: int | None = 300, secondary_window_minutes: int | None = 10080,
        primary_reset_in: int | None = None, secondary_reset_in: int | None = None,
        credits_has_credits: bool = False, credits_unlimited: bool = False, credits_balance: str = "0",
        primary_step: float | None = None, secondary_step: float | None = None,
        access_token_ttl: int = 10 * 24 * 3600,
    ) -> FakeAccount:
        """Register an account and mint its tokens. ``*_reset_in`` default to a whole window from now."""
        n = len(self.accounts) + 1
        digest = hashlib.sha256(f"{self.seed}:account:{n}".encode()).hexdigest()
        uuid_like = f"{digest[:8]}-{digest[8:12]}-4{digest[13:16]}-8{digest[17:20]}-{digest[20:32]}"
        account_id = chatgpt_account_id or uuid_like
        if account_id in self.accounts:
            raise ValueError(f"account {account_id!r} already exists")
        now = int(self.clock())

        def window(used: float, minutes: int | None, reset_in: int | None) -> Window | None:
            """A window ending ``reset_in`` seconds from now (a whole window by default); ``None`` if absent."""
            if minutes is None:
                return None
            return Window(used, minutes, now + (reset_in if reset_in is not None else minutes * 60))

        account = FakeAccount(
            chatgpt_account_id=account_id, email=email or f"fake{n}@example.com", plan_type=plan_type,
            user_id=user_id or f"user-{digest[32:56]}", clock=self.clock, access_token_ttl=access_token_ttl,
            primary=window(primary_used_percent, primary_window_minutes, primary_reset_in),
            secondary=window(secondary_used_percent, secondary_window_minutes, secondary_reset_in),
            credits_has_credits=credits_has_credits, credits_unlimited=credits_unlimited,
            credits_balance=credits_balance,
            primary_step=self.primary_step if primary_step is None else primary_step,
            secondary_step=self.secondary_step if secondary_step is None else secondary_step,
        )
        account.mint_tokens()
        self.accounts[account_id] = account
        return account

    def approve_device(self, user_code: str, account: FakeAccount | None = None) -> FakeAccount:
        """Approve a pending device login (for ``account``, else ``next_login`` or a new account)."""
        return self.oauth.approve(user_code, account)

    def deny_device(self, user_code: str) -> None:
        """Deny a pending device login; polls then answer 400 ``access_denied``."""
        self.oauth.find_device(user_code).denied = True

    # -- faults ------------------------------------------------------------------------------------

    def inject(self, chatgpt_account_id: str | None, fault: Fault, *, times: int = 1,
               endpoint: str | None = None) -> None:
        """Queue ``fault`` for the next ``times`` requests (-1: forever) of ``endpoint`` for that account.

        ``chatgpt_account_id=None`` applies to any account (and to endpoints without one, e.g. authorize).
        ``endpoint`` is one of responses, usage, models, token, authorize, device, accounts, compact.
        ``Fault.refresh_refused()`` queues ``token_expired`` on ``endpoint`` and a refused refresh on token.
        """
        endpoint = endpoint or fault.default_endpoint
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {ENDPOINTS}")
        if times == 0 or times < -1:
            raise ValueError("times must be positive or -1")
        if fault.kind == "refresh_refused":
            self.inject(chatgpt_account_id, Fault.token_expired(), times=times, endpoint=endpoint)
            self.inject(chatgpt_account_id, Fault.refresh_token_invalidated(), times=times, endpoint="token")
            return
        self._faults.setdefault((chatgpt_account_id, endpoint), []).append([fault, times])

    def inject_specs(self, specs: Iterable[Mapping[str, Any]]) -> int:
        """Queue faults given as specs (``{"fault": kind, "account", "times", "endpoint", <parameters>}``).

        Every spec is checked before any is queued; returns how many were queued.
        """
        parsed = [split_spec(spec) for spec in specs]
        for fault, account, times, endpoint in parsed:
            if account is not None and account not in self.accounts:
                raise ValueError(f"unknown account {account!r}; accounts: {', '.join(self.accounts) or 'none'}")
            self.inject(account, fault, times=times, endpoint=endpoint)
        return len(parsed)

    def pending_faults(self) -> list[dict[str, Any]]:
        """Queued faults as specs, in the order they would fire per account and endpoint."""
        return [{**fault.describe(), "account": account, "endpoint": endpoint, "times": times}
                for (account, endpoint), queue in self._faults.items() for fault, times in queue]

    def clear_faults(self, chatgpt_account_id: str | None = None) -> None:
        """Drop queued faults of one account, or all faults when ``None``."""
        if chatgpt_account_id is None:
            self._faults.clear()
        else:
            for key in [k for k in self._faults if k[0] == chatgpt_account_id]:
                del self._faults[key]

    def take_fault(self, account_id: str | None, endpoint: str) -> Fault | None:
        """Consume the next fault for this account (account-specific first, then global)."""
        if not self._faults:
            return None
        for key in ((account_id, endpoint), (None, endpoint)) if account_id else ((None, endpoint),):
            queue = self._faults.get(key)
            if queue:
                entry = queue[0]
                if entry[1] > 0:
                    entry[1] -= 1
                    if entry[1] == 0:
                        queue.pop(0)
                fault: Fault = entry[0]
                self.faults_fired[fault.kind] += 1
                return fault
        return None

    def requests_for(
        self, endpoint: str | None = None, account_id: str | None = None
    ) -> list[RecordedRequest]:
        """Recorded requests filtered by endpoint name and/or account."""
        return [r for r in self.requests if (endpoint is None or r.endpoint == endpoint)
                and (account_id is None or r.account_id == account_id)]

    async def wait_for_request(
        self, predicate: Callable[[RecordedRequest], bool] | None = None, *, timeout: float = 5.0
    ) -> RecordedRequest:
        """Wait until a recorded request matches ``predicate`` (any request if ``None``) and return it."""
        async with asyncio.timeout(timeout):
            while True:
                found = next((r for r in self.requests if predicate is None or predicate(r)), None)
                if found is not None:
                    return found
                self._arrived.clear()
                await self._arrived.wait()

    # -- plumbing ----------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):
            return await self.control.handle(request, handler)
        raw = await request.read()
        raw_headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers)
        record = RecordedRequest(
            method=request.method, path=request.path, query=dict(request.query),
            query_string=request.query_string, headers=Headers(raw_headers), body=raw, raw_body=raw,
            json=None,
            endpoint=_ENDPOINT_BY_PATH.get(request.path, "other"), time=self.clock(),
        )
        self.requests.append(record)
        self._arrived.set()
        request[RECORDED] = record
        try:
            record.body = decode_body(raw, request.headers.get("Content-Encoding"))
        except ValueError as exc:
            return web.json_response({"detail": str(exc)}, status=400)
        record.json = parse_json(record.body)
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return web.json_response({"detail": "Not Found"}, status=404)
        except web.HTTPMethodNotAllowed:
            return web.json_response({"detail": "Method Not Allowed"}, status=405)


def write_auth_files(fake: FakeUpstream, auth_dir: str | os.PathLike[str]) -> list[Path]:
    """Write ``<auth_dir>/<account_id>/auth.json`` (mode 0600) for every account; returns the paths."""
    paths = []
    for account in fake.accounts.values():
        path = Path(auth_dir) / account.chatgpt_account_id / "auth.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(account.auth_json(), indent=2) + "\n")
        path.chmod(0o600)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    """``python -m codexlb.testing.fake_upstream``: the same options as ``codexlb fake-upstream``."""
    import argparse

    from codexlb.testing.fake_cli import add_arguments, run

    parser = argparse.ArgumentParser(description="Run the codexlb fake upstream.")
    add_arguments(parser, port=8765)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
