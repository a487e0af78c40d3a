"""The pipeline: fixed stage order, short-circuits, failover and the error policy.

Request phase (admit → read body → decode → parse → transform) runs the plugins until one
answers. Routing asks the strategies for an account and sends each try as an
:class:`~codexlb.attempt.UpstreamAttempt` (the ``send_upstream`` hook inside the core's token,
rate-limit and classification policy), failing over to the next account only before the first
byte reaches the client; a failed try cools its account down here. On streamed routes each
attempt must start answering within ``UPSTREAM_FIRST_BYTE_TIMEOUT_SECONDS`` and the request
within ``UPSTREAM_FIRST_BYTE_TOTAL_SECONDS``. Plugins filter the attempt's stream (in its one
loop) and wrap it, then the endpoint's adapter shapes it for the client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from typing import TYPE_CHECKING

from codexlb.answer_stream import AnswerStream
from codexlb.attempt import UpstreamAttempt
from codexlb.endpoints import Adapter, adapter_for
from codexlb.errors import (
    BadRequest,
    FlowError,
    NoAccountAvailable,
    PoolExhausted,
    UnsupportedEncoding,
    UpstreamError,
)
from codexlb.flow import RETRY_AFTER_401, Attempt, Flow, ProxyResponse, fallback_reason
from codexlb.pool import LIMITED
from codexlb.streaming import Deadline, guard
from codexlb.types import Account, AccountStatus

if TYPE_CHECKING:
    from codexlb.hooks import Hooks
    from codexlb.types import AppView

log = logging.getLogger("codexlb.pipeline")


def _no_constant(name: str) -> float:
    """``json.loads`` hook: NaN and Infinity are not JSON."""
    raise ValueError(f"{name} is not a valid JSON value")


def _finite_float(text: str) -> float:
    """``json.loads`` hook: a number too large for a float (``1e999``) would be sent on as Infinity."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)
"""What ``json.loads`` with these hooks would build for every body (built once here)."""


class Pipeline:
    """Runs one flow through the stages; never raises for a client or upstream problem."""

    def __init__(self, app: AppView, hooks: Hooks) -> None:
        self.app = app
        self.hooks = hooks
        self.max_attempts = app.settings.proxy_max_attempts

    async def admit(self, flow: Flow) -> ProxyResponse | None:
        """The stage before the body is read; an exception refuses the request (fail closed)."""
        try:
            await self.hooks.admit_request(flow)
        except FlowError as exc:
            return self._fail(flow, exc)
        except Exception:
            log.exception("admit_request failed; refusing the request")
            return self._fail(flow, FlowError("request refused: admission check failed", status=403,
                                              code="admission_failed"))
        return flow.response

    async def run(self, flow: Flow) -> ProxyResponse:
        """Everything after admission: the body is in ``flow.request.body``."""
        try:
            return await self._run(flow)
        except FlowError as exc:
            return self._fail(flow, exc)
        except Exception:
            log.exception("internal error on %s", flow.request.path)
            return self._fail(flow, FlowError("internal error", status=500, code="internal_error"))

    def _fail(self, flow: Flow, exc: FlowError) -> ProxyResponse:
        flow.error, flow.error_code = exc, exc.code
        flow.response = ProxyResponse.from_error(exc)
        return flow.response

    async def _run(self, flow: Flow) -> ProxyResponse:
        for stage in (self.hooks.decode_request, self._parse, self.hooks.transform_request):
            await stage(flow)
            if flow.response is not None:
                return flow.response
        adapter = adapter_for(flow)
        flow.upstream_method, flow.upstream_path = adapter.method, adapter.upstream_path
        adapter.prepare(flow)
        response = await self._route(flow, adapter)
        if response.status != 200:
            return response
        body = response.body
        stream = None
        if not isinstance(body, bytes):
            if isinstance(body, AnswerStream):
                body.filters = self.hooks.filter_response_stream(flow)
            stream = self.hooks.wrap_response_stream(flow, body)
        result = await adapter.respond(flow, response, stream)
        if not isinstance(result.body, bytes):
            if result.body is body and isinstance(body, AnswerStream):
                body.guard(adapter.terminal_error)  # nothing wraps the loop: it guards itself
            else:
                result.body = guard(flow, result.body, adapter.terminal_error)
        return result

    async def _parse(self, flow: Flow) -> None:
        req = flow.request
        if req.method != "POST":
            return
        ctype = req.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if ctype and ctype != "application/json" and not ctype.endswith("+json"):
            raise BadRequest(f"Content-Type must be application/json, not {ctype!r}", status=415,
                             code="unsupported_media_type")
        encoding = req.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise UnsupportedEncoding(f"Content-Encoding {encoding!r} is not supported; send zstd, gzip, deflate "
                                      "or br with the decompress plugin enabled, or an uncompressed body",
                                      code="unsupported_content_encoding")
        if not req.body:
            raise BadRequest("request body is empty; expected a JSON object", code="invalid_json")
        try:
            payload = _DECODER.decode(req.body.decode(json.detect_encoding(req.body), "surrogatepass"))
        except UnicodeDecodeError:
            raise BadRequest("request body is not valid UTF-8", code="invalid_json") from None
        except ValueError as exc:
            raise BadRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from None
        except RecursionError:
            raise BadRequest("request body is nested too deeply", code="invalid_json") from None
        if not isinstance(payload, dict):
            raise BadRequest("request body must be a JSON object", code="invalid_json")
        req.payload = payload

    # -- routing -------------------------------------------------------------------------

    async def _route(self, flow: Flow, adapter: Adapter) -> ProxyResponse:
        pool, tokens, settings = self.app.pool, self.app.tokens, self.app.settings
        refreshed: set[str] = set()
        last_error: UpstreamError | None = None
        retry: str | None = None  # the core's route reason once the flow is retried
        loop = asyncio.get_running_loop()
        overall = None
        if adapter.streams_upstream:
            total = settings.upstream_first_byte_total_seconds
            overall = Deadline(loop.time() + total, total, "CODEX_LB_UPSTREAM_FIRST_BYTE_TOTAL_SECONDS")
        while len(flow.attempts) < self.max_attempts:
            deadline = None
            if overall is not None:
                now = loop.time()
                if now >= overall.at:
                    last_error = last_error or overall.error()
                    break
                deadline = self._deadline(overall, now)
            candidates = pool.usable(exclude=[a.account_id for a in flow.attempts])
            if flow.account_scope is not None:
                candidates = [a for a in candidates if a.id in flow.account_scope]
                if not candidates and last_error is None:
                    raise NoAccountAvailable("none of the accounts this API key may use is available now")
            if not candidates:
                break
            account = await self.hooks.select_account(flow, candidates)
            if account is None:
                break
            if retry is not None:
                self._retry_route(flow, retry, keep_detail=True)
            flow.account = account
            attempt = UpstreamAttempt(self.app, flow, account)
            try:
                response = await attempt.send(self.hooks.send_upstream, deadline)
            except UpstreamError as exc:
                if exc.upstream_status == 401 and account.id not in refreshed:
                    refreshed.add(account.id)
                    if await tokens.refresh(account, force=True, failed=attempt.token):
                        retry = RETRY_AFTER_401
                        self._retry_route(flow, retry)
                        continue
                flow.attempts.append(Attempt(account.id, exc, exc.upstream_status))
                self._penalise(account, exc)
                await self.hooks.account_failed(flow, account, exc)
                last_error = exc
                if not exc.retryable:
                    raise
                retry = fallback_reason(exc.upstream_status or exc.code)
                self._retry_route(flow, retry)
                continue
            flow.attempts.append(Attempt(account.id, None, response.status))
            pool.touch(account)
            return response
        raise self._no_account(last_error)

    @staticmethod
    def _retry_route(flow: Flow, reason: str, *, keep_detail: bool = False) -> None:
        """The route with the core's reason for a retry, in place of the strategy's own."""
        route = flow.route
        strategy = route.strategy if route is not None else "route"
        flow.set_route(strategy, reason, route.detail if route is not None and keep_detail else "")

    def _deadline(self, overall: Deadline, now: float) -> Deadline:
        """This attempt's first-byte deadline: its own limit, or the request's if that comes first."""
        seconds = self.app.settings.upstream_first_byte_timeout_seconds
        if now + seconds < overall.at:
            return Deadline(now + seconds, seconds, "CODEX_LB_UPSTREAM_FIRST_BYTE_TIMEOUT_SECONDS")
        return overall

    def _penalise(self, account: Account, exc: UpstreamError) -> None:
        pool, now = self.app.pool, time.time()
        if exc.reset_at is not None:
            pool.cool_down(account, exc.reset_at, status=AccountStatus.RATE_LIMITED, reason=exc.code)
        elif exc.code == "account_deactivated":
            pool.set_status(account, AccountStatus.DEACTIVATED, exc.message[:200])
        elif exc.upstream_status == 401:
            pool.cool_down(account, now + 60)
        elif exc.cooldown_seconds:
            pool.cool_down(account, now + exc.cooldown_seconds)

    def _no_account(self, last_error: UpstreamError | None) -> FlowError:
        pool = self.app.pool
        report = self.app.migration_report
        if report is not None and report.error:
            return FlowError("the database is not ready (a migration failed); see /readyz and the server log",
                             status=503, code="database_not_ready")
        if not pool.accounts:
            return NoAccountAvailable(
                "no accounts are configured; add one with `codexlb accounts login` or "
                "`codexlb accounts import ~/.codex/auth.json`")
        if last_error is not None and last_error.code != "usage_limit_reached":
            return last_error
        available_at = pool.next_available_at()
        if available_at is None:
            return NoAccountAvailable("no account is usable (all paused, deactivated or need re-login); "
                                      "see `codexlb accounts list`")
        limited = sum(1 for a in pool.all() if a.status in LIMITED)
        wait = max(1, math.ceil(available_at - time.time()))
        if not limited:
            return FlowError("every account is cooling down after upstream errors; try again shortly",
                             status=503, code="accounts_cooling_down", headers={"retry-after": str(wait)})
        waiting = sum(1 for a in pool.all() if a.status in (AccountStatus.ACTIVE, *LIMITED))
        message = "The usage limit has been reached on every pooled account" if limited == waiting else (
            f"The usage limit has been reached on {limited} of {waiting} pooled accounts; "
            "the others are cooling down after upstream errors")
        return PoolExhausted(
            message, code="usage_limit_reached",
            extra={"resets_at": int(available_at), "resets_in_seconds": wait},
            headers={"retry-after": str(wait), "x-should-retry": "false"})

