"""The fake upstream's control endpoint: drive faults, usage and accounts of a running fake over HTTP.

Served on the fake's own port under ``/_fake/`` and answered only for loopback clients::

    POST   /_fake/faults     {"fault": "usage_limit", "resets_in_seconds": 600, "account": null, "times": 1}
                             (or a list of such objects; "endpoint" picks responses, compact, token, ...)
    GET    /_fake/faults     faults still queued
    DELETE /_fake/faults     drop every queued fault (``?account=ID``: only that account's)
    GET    /_fake/counters   requests per endpoint and account, faults fired per kind, refresh calls
    GET    /_fake/requests   requests in arrival order (``?since=N`` skips the first N)
    GET    /_fake/accounts   the accounts and their usage windows
    POST   /_fake/accounts   {"count": 2, "plan_type": "plus"}: new accounts, with their auth.json documents
    POST   /_fake/usage      {"account": null, "primary_used_percent": 95, "secondary_used_percent": 40}

Fault names and parameters are those of :data:`codexlb.testing.fake_faults.FAULT_KINDS`.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.typedefs import Handler

if TYPE_CHECKING:
    from codexlb.testing.fake_accounts import FakeAccount
    from codexlb.testing.fake_upstream import FakeUpstream

CONTROL_PREFIX = "/_fake/"


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"type": "invalid_request_error", "message": message}}, status=status)


def _is_loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class FakeControl:
    """Handlers of ``/_fake/*``; state lives on the owning :class:`FakeUpstream`."""

    def __init__(self, upstream: FakeUpstream) -> None:
        self.up = upstream

    def routes(self) -> list[web.RouteDef]:
        """Route table of the control endpoint."""
        return [
            web.post("/_fake/faults", self._add_faults), web.get("/_fake/faults", self._list_faults),
            web.delete("/_fake/faults", self._clear_faults), web.get("/_fake/counters", self._counters),
            web.get("/_fake/requests", self._requests), web.get("/_fake/accounts", self._accounts),
            web.post("/_fake/accounts", self._add_accounts), web.post("/_fake/usage", self._usage),
        ]

    async def handle(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Loopback check and JSON errors for unknown control routes (nothing is recorded)."""
        if not _is_loopback(request.remote):
            return _error(403, "the /_fake/ control endpoint answers loopback clients only")
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return _error(404, f"unknown control route {request.path}; see codexlb.testing.fake_control")
        except web.HTTPMethodNotAllowed:
            return _error(405, f"method {request.method} is not allowed on {request.path}")

    @staticmethod
    async def _json(request: web.Request) -> Any:
        try:
            return await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text='{"error":{"type":"invalid_request_error",'
                                          '"message":"body must be JSON"}}', content_type="application/json") from None

    def _account(self, ref: Any) -> FakeAccount | None:
        """An account by chatgpt id, email or 1-based position; ``None`` for null (every account)."""
        if ref is None:
            return None
        accounts = list(self.up.accounts.values())
        if isinstance(ref, int) and not isinstance(ref, bool) and 1 <= ref <= len(accounts):
            return accounts[ref - 1]
        found = next((a for a in accounts if ref in (a.chatgpt_account_id, a.email)), None)
        if found is None:
            raise ValueError(f"unknown account {ref!r}; accounts: "
                             f"{', '.join(self.up.accounts) or 'none'} (or their 1-based positions)")
        return found

    def resolve(self, spec: Any) -> Any:
        """``spec`` with its ``account`` given as a chatgpt account id (positions and emails resolved)."""
        if isinstance(spec, dict) and spec.get("account") is not None:
            account = self._account(spec["account"])
            assert account is not None
            return {**spec, "account": account.chatgpt_account_id}
        return spec

    async def _add_faults(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        specs = body if isinstance(body, list) else [body]
        try:
            queued = self.up.inject_specs([self.resolve(spec) for spec in specs])
        except ValueError as exc:
            return _error(400, f"{exc}; nothing was queued")
        return web.json_response({"queued": queued, "pending": self.up.pending_faults()}, status=201)

    async def _list_faults(self, request: web.Request) -> web.Response:
        return web.json_response({"pending": self.up.pending_faults()})

    async def _clear_faults(self, request: web.Request) -> web.Response:
        try:
            account = self._account(request.query.get("account"))
        except ValueError as exc:
            return _error(400, str(exc))
        self.up.clear_faults(account.chatgpt_account_id if account else None)
        return web.json_response({"pending": self.up.pending_faults()})

    async def _counters(self, request: web.Request) -> web.Response:
        per_endpoint: dict[str, Counter[str]] = {}
        for record in self.up.requests:
            per_endpoint.setdefault(record.endpoint, Counter())[record.account_id or "-"] += 1
        return web.json_response({
            "requests": {endpoint: dict(counts) for endpoint, counts in per_endpoint.items()},
            "faults_fired": dict(self.up.faults_fired), "refresh_calls": self.up.refresh_calls,
            "pending_faults": len(self.up.pending_faults()),
        })

    async def _requests(self, request: web.Request) -> web.Response:
        try:
            since = max(0, int(request.query.get("since", "0")))
        except ValueError:
            return _error(400, "since must be a whole number")
        return web.json_response([
            {"n": n, "endpoint": r.endpoint, "path": r.path, "account_id": r.account_id, "fault": r.fault}
            for n, r in enumerate(self.up.requests[since:], since)])

    def _account_json(self, account: FakeAccount, *, auth: bool = False) -> dict[str, Any]:
        primary, secondary = account.windows()
        out: dict[str, Any] = {
            "chatgpt_account_id": account.chatgpt_account_id, "email": account.email,
            "plan_type": account.plan_type, "responses_served": account.responses_served,
            "primary_used_percent": primary.used_percent if primary else None,
            "secondary_used_percent": secondary.used_percent if secondary else None,
        }
        if auth:
            out["auth_json"] = account.auth_json()
        return out

    async def _accounts(self, request: web.Request) -> web.Response:
        return web.json_response([self._account_json(a) for a in self.up.accounts.values()])

    async def _add_accounts(self, request: web.Request) -> web.Response:
        body = await self._json(request) if request.can_read_body else {}
        if not isinstance(body, dict):
            return _error(400, 'expected {"count": N, "plan_type": "plus"}')
        count, plan = body.get("count", 1), body.get("plan_type", "plus")
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 1000:
            return _error(400, "count must be a whole number from 1 to 1000")
        if not isinstance(plan, str) or not plan:
            return _error(400, "plan_type must be a string such as plus, pro or team")
        made = [self.up.add_account(plan_type=plan) for _ in range(count)]
        return web.json_response([self._account_json(a, auth=True) for a in made], status=201)

    async def _usage(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if not isinstance(body, dict):
            return _error(400, 'expected {"account": ID or null, "primary_used_percent": N, '
                               '"secondary_used_percent": N}')
        values: dict[str, float | None] = {}
        for key in ("primary_used_percent", "secondary_used_percent"):
            value = body.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                      or not 0 <= value <= 100):
                return _error(400, f"{key} must be a number from 0 to 100")
            values[key] = value
        unknown = set(body) - {"account", *values}
        if unknown:
            return _error(400, f"unknown field(s) {', '.join(sorted(unknown))}")
        try:
            one = self._account(body.get("account"))
        except ValueError as exc:
            return _error(400, str(exc))
        targets = [one] if one is not None else list(self.up.accounts.values())
        for account in targets:
            account.set_usage(values["primary_used_percent"], values["secondary_used_percent"])
        return web.json_response([self._account_json(a) for a in targets])
