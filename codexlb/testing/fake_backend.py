"""ChatGPT backend side of the fake (protocol.md §1-§4): auth checks, faults and the /backend-api handlers."""

from __future__ import annotations

import asyncio
import hashlib
import math
import socket
import struct
from typing import TYPE_CHECKING, Any

from aiohttp import web

from codexlb.testing.fake_accounts import FakeAccount
from codexlb.testing.fake_faults import (
    CLOUDFLARE_HTML,
    STREAM_FAULTS,
    TOKEN_EXPIRED_BODY,
    TOKEN_INVALIDATED_BODY,
    Fault,
    error_json,
)
from codexlb.testing.fake_models import catalog_etag, catalog_for, supported_slugs
from codexlb.testing.fake_records import recorded
from codexlb.testing.fake_sse import (
    TurnPlan,
    build_events,
    failed_events,
    frame,
    pick_tool,
    sample_arguments,
    split_evenly,
    text_deltas,
    usage_block,
)
from codexlb.testing.jwt import decode_jwt

if TYPE_CHECKING:
    from codexlb.testing.fake_upstream import FakeUpstream

UNSUPPORTED_FIELDS = ("max_output_tokens", "metadata", "prompt_cache_retention", "safety_identifier",
                      "temperature", "top_p", "truncation", "user")
STREAM_FAULT: web.RequestKey[Fault | None] = web.RequestKey("codexlb_fake_stream_fault", object)  # type: ignore[arg-type]


class FakeBackend:
    """Request handlers for ``/backend-api``; state lives on the owning :class:`FakeUpstream`."""

    def __init__(self, upstream: FakeUpstream) -> None:
        self.up = upstream
        self._etags: dict[tuple[str, str | None], tuple[list[dict[str, Any]], str]] = {}

    def routes(self) -> list[web.RouteDef]:
        """Route table for the backend endpoints."""
        return [
            web.post("/backend-api/codex/responses", self._responses),
            web.get("/backend-api/codex/responses", self._websocket),
            web.post("/backend-api/codex/responses/compact", self._compact),
            web.get("/backend-api/codex/models", self._models),
            web.get("/backend-api/wham/usage", self._usage),
            web.get("/api/codex/usage", self._usage),
            web.get("/backend-api/wham/accounts/check", self._accounts_check),
            web.get("/backend-api/wham/settings/user", self._settings),
        ]

    # -- faults ------------------------------------------------------------------------------------

    async def reset(self, request: web.Request) -> web.StreamResponse:
        """Abort the connection with a TCP reset; the handler is then cancelled."""
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        await asyncio.Event().wait()  # cancelled by connection_lost (handler_cancellation)
        raise AssertionError("unreachable")

    async def generic_fault(self, request: web.Request, fault: Fault,
                            account: FakeAccount | None = None) -> web.StreamResponse | None:
        """Answer for a non-stream fault; ``None`` means "carry on normally" (e.g. after ``slow``)."""
        kind, headers = fault.kind, dict(fault.headers)
        if kind in ("refuse", "drop_mid_stream"):
            return await self.reset(request)
        if kind == "hang":
            await self.up.closing.wait()
            return await self.reset(request)
        if kind == "slow":
            await asyncio.sleep(fault.delay_s)
            return None
        if kind in ("status", "server_error"):
            if fault.body is None:
                return web.Response(status=fault.http_status or 500, headers=headers)
            return web.json_response(fault.body, status=fault.http_status or 500, headers=headers)
        if kind == "cloudflare_403":
            return web.Response(status=403, text=CLOUDFLARE_HTML, content_type="text/html", headers={
                "cf-mitigated": "challenge", "server": "cloudflare",
                "cf-ray": self.up.ids.make("", 16) + "-SJC",
                "set-cookie": "__cf_bm=fake; path=/; HttpOnly"})
        if kind == "token_expired":
            return web.json_response(TOKEN_EXPIRED_BODY, status=401)
        if kind == "token_invalidated":
            return web.json_response(TOKEN_INVALIDATED_BODY, status=401)
        if kind == "rate_limited":
            return web.json_response(error_json("requests", fault.message or "", "rate_limit_exceeded"),
                                     status=429, headers={"x-request-id": self.up.ids.make("req_", 24)})
        if kind == "usage_limit":
            return self._usage_limit(account, fault.resets_at, fault.resets_in_seconds, fault.plan_type)
        if kind == "usage_not_included":
            return web.json_response({"error": {"type": "usage_not_included",
                                                "message": "Your plan does not include Codex."}}, status=429)
        if kind == "model_not_supported":
            model = fault.param("model") or (recorded(request).json or {}).get("model", "unknown")
            return self._model_not_supported(model)
        return None

    def _usage_limit(self, account: FakeAccount | None, resets_at: int | None = None,
                     resets_in: int | None = None, plan_type: str | None = None) -> web.Response:
        if account is None:
            account = FakeAccount("unknown", "", plan_type or "plus", "", self.up.clock)
        body = account.usage_limit_body(resets_at, resets_in, plan_type)
        err, now = body["error"], int(self.up.clock())
        reset_at = err.get("resets_at", now + err.get("resets_in_seconds", 0))
        headers = dict(account.rate_limit_headers())
        headers.update({
            "x-codex-primary-used-percent": "100", "x-codex-primary-reset-at": str(reset_at),
            "x-codex-primary-reset-after-seconds": str(max(0, reset_at - now)),
            "x-codex-plan-type": err["plan_type"],
        })
        return web.json_response(body, status=429, headers=headers)

    @staticmethod
    def _model_not_supported(model: str) -> web.Response:
        message = f"The '{model}' model is not supported when using Codex with a ChatGPT account."
        return web.json_response({"error": {"type": "invalid_request_error", "message": message}}, status=400)

    # -- authentication ----------------------------------------------------------------------------

    def _lookup(self, request: web.Request) -> FakeAccount | None:
        """The account a request claims (header first, then token owner), before authentication."""
        header_id = request.headers.get("chatgpt-account-id")
        if header_id and header_id in self.up.accounts:
            return self.up.accounts[header_id]
        token = self._bearer(request)
        return self._token_owner(token) if token else None

    @staticmethod
    def _bearer(request: web.Request) -> str:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""

    def _token_owner(self, token: str) -> FakeAccount | None:
        for account in self.up.accounts.values():
            if token == account.access_token or token in account.old_access_tokens:
                return account
        return None

    def _authenticate(self, request: web.Request) -> FakeAccount | web.Response:
        token = self._bearer(request)
        header_id = request.headers.get("chatgpt-account-id")
        if not token:
            return web.json_response({"detail": "Unauthorized"}, status=401)
        claimed = self.up.accounts.get(header_id) if header_id else None
        owner = claimed if claimed is not None and claimed.access_token == token else self._token_owner(token)
        if owner is None:
            return web.json_response(
                error_json("invalid_request_error", "Could not validate your authentication token. "
                           "Please try signing in again.", "token_invalid"), status=401)
        if token in owner.revoked_tokens or (
                token != owner.access_token and self.up.invalidate_rotated_access_tokens):
            return web.json_response(TOKEN_INVALIDATED_BODY, status=401)
        exp = owner.access_token_exp if token == owner.access_token else decode_jwt(token).get("exp", 0)
        if exp <= self.up.clock():
            return web.json_response(TOKEN_EXPIRED_BODY, status=401)
        if header_id is None and self.up.require_account_header:
            message = "Missing chatgpt-account-id header"
            return web.json_response(
                error_json("invalid_request_error", message, "missing_account_id"), status=401)
        if header_id is not None and header_id != owner.chatgpt_account_id:
            message = "chatgpt-account-id does not match the authentication token"
            return web.json_response(
                error_json("invalid_request_error", message, "account_mismatch"), status=401)
        return owner

    async def guard(self, request: web.Request, endpoint: str) -> FakeAccount | web.StreamResponse:
        """Apply a queued fault, then authenticate: the account, or the answer to send instead."""
        claimed = self._lookup(request)
        record = recorded(request)
        header_id = request.headers.get("chatgpt-account-id")
        record.account_id = claimed.chatgpt_account_id if claimed else header_id
        fault = self.up.take_fault(record.account_id, endpoint)
        if fault is not None:
            record.fault = fault.kind
            request[STREAM_FAULT] = fault if fault.kind in STREAM_FAULTS else None
            if fault.kind not in STREAM_FAULTS or endpoint != "responses":
                answer = await self.generic_fault(request, fault, claimed)
                if answer is not None:
                    return answer
        return self._authenticate(request)

    def _catalog(self, plan_type: str, client_version: str | None) -> tuple[list[dict[str, Any]], str]:
        key = (plan_type, client_version)
        if key not in self._etags:
            models = catalog_for(plan_type, client_version)
            self._etags[key] = (models, catalog_etag(models))
        return self._etags[key]

    # -- backend endpoints -------------------------------------------------------------------------

    def _validate(self, account: FakeAccount, body: Any) -> web.Response | None:
        if not isinstance(body, dict):
            return web.json_response({"detail": "Request body must be a JSON object"}, status=400)
        if body.get("store", True) is not False:
            return web.json_response({"detail": "Store must be set to false"}, status=400)
        if body.get("stream", False) is not True:
            return web.json_response({"detail": "Stream must be set to true"}, status=400)
        for name in UNSUPPORTED_FIELDS:
            if name in body:
                return web.json_response({"detail": f"Unsupported parameter: {name}"}, status=400)
        if not isinstance(body.get("model"), str) or not body["model"]:
            return web.json_response({"detail": "Model is required"}, status=400)
        if not isinstance(body.get("input", []), list | str):
            return web.json_response({"detail": "Input must be a string or a list"}, status=400)
        if self.up.strict_models and body["model"] not in supported_slugs(account.plan_type):
            return self._model_not_supported(body["model"])
        return None

    def _plan(self, account: FakeAccount, body: dict[str, Any], size: int) -> TurnPlan:
        ids = self.up.ids
        input_tokens = max(1, size // 4)
        cached = account.cached_tokens(body.get("prompt_cache_key"), input_tokens)
        plan = TurnPlan(ids.make("resp_", 48), int(self.up.clock()), body["model"], body,
                        populate_output=self.up.populate_output)
        items = body.get("input")
        last = items[-1] if isinstance(items, list) and items and isinstance(items[-1], dict) else {}
        tool = pick_tool(body)
        if last.get("type") == "compaction_trigger":
            plan.kind, plan.item_id = "compaction", ids.make("cmp_")
        elif tool is not None:
            plan.kind, plan.item_id = "function_call", ids.make("fc_")
            plan.call_id, plan.tool_name = ids.make("call_", 24), tool["name"]
            plan.deltas = split_evenly(sample_arguments(tool), self.up.events)
        else:
            plan.item_id, plan.deltas = ids.make("msg_"), text_deltas(self.up.events, self.up.reply_text)
        reasoning_tokens = 64 if body.get("reasoning") else 0
        if self.up.reasoning and body.get("reasoning"):
            plan.reasoning_id, plan.reasoning_deltas = ids.make("rs_"), ["**Planning**", " the", " answer"]
        plan.usage = usage_block(input_tokens, cached, len(plan.deltas) + reasoning_tokens, reasoning_tokens)
        return plan

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        """``POST /backend-api/codex/responses``: SSE answer (text, tool call or compaction)."""
        account = await self.guard(request, "responses")
        if not isinstance(account, FakeAccount):
            return account
        body = recorded(request).json
        if (invalid := self._validate(account, body)) is not None:
            return invalid
        if account.limit_reached() is not None:
            return self._usage_limit(account)
        fault = request.get(STREAM_FAULT)
        plan = self._plan(account, body, len(recorded(request).body))
        if fault is not None and fault.kind == "oversized_event":
            plan.deltas[0] = "x" * fault.size_bytes
        if fault is not None and fault.kind == "response_failed":
            events = failed_events(plan, fault.code or "server_error", fault.message or "")
        elif fault is not None and fault.kind == "error_event":
            events = [{"type": "error", "sequence_number": 0, "code": fault.code, "message": fault.message,
                       "param": None}]
        else:
            events = build_events(plan)
        frames = [frame(account.rate_limits_event())] if self.up.rate_limits_event else []
        frames += [frame(event) for event in events]
        _, etag = self._catalog(account.plan_type, None)
        request_id = self.up.ids.make("req_", 24)
        headers = {
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache", "x-request-id": request_id,
            "x-oai-request-id": request_id, "openai-model": plan.model, "x-models-etag": etag,
            "x-codex-turn-state": request.headers.get("x-codex-turn-state") or self.up.ids.make("ts_", 24),
            **dict(account.rate_limit_headers()),
        }
        if self.up.first_event_delay:
            await asyncio.sleep(self.up.first_event_delay)
        response = web.StreamResponse(status=200, headers=headers)
        await response.prepare(request)
        if fault is not None and fault.kind == "drop_mid_stream":
            await response.write(b"".join(frames[: fault.after_events]))
            return await self.reset(request)
        if fault is not None and fault.kind in ("stall_mid_stream", "end_mid_stream"):
            await response.write(b"".join(frames[: fault.after_events]))
            if fault.kind == "end_mid_stream":
                await response.write_eof()
                return response
            if math.isinf(fault.delay_s):
                await self.up.closing.wait()
                return await self.reset(request)
            await asyncio.sleep(fault.delay_s)
            frames = frames[fault.after_events:]
        delay = fault.delay_s if fault is not None and fault.kind == "slow_events" else self.up.event_delay
        if delay:
            for chunk in frames:
                await response.write(chunk)
                await asyncio.sleep(delay)
        else:
            await response.write(b"".join(frames))
        if events[-1]["type"] == "response.completed":
            account.record_response()
        await response.write_eof()
        return response

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        """The WebSocket transport (:mod:`codexlb.testing.fake_ws`); 426 for a plain GET or when off."""
        from codexlb.testing.fake_ws import serve_websocket

        return await serve_websocket(self, request)

    async def _compact(self, request: web.Request) -> web.StreamResponse:
        """``POST /codex/responses/compact``: keep user messages, append one compaction item."""
        account = await self.guard(request, "compact")
        if not isinstance(account, FakeAccount):
            return account
        data = recorded(request).json
        body = data if isinstance(data, dict) else {}
        items: list[Any] = body.get("input") or [] if isinstance(body.get("input"), list) else []
        kept = [i for i in items if isinstance(i, dict) and i.get("type", "message") == "message"
                and i.get("role") == "user"]
        cid = self.up.ids.make("cmp_")
        item = {"type": "compaction", "id": cid, "status": "completed",
                "encrypted_content": "gAAAAA" + hashlib.sha256(cid.encode()).hexdigest()}
        return web.json_response({"output": [*kept, item]},
                                 headers={"x-codex-turn-state": self.up.ids.make("ts_", 24)})

    async def _models(self, request: web.Request) -> web.StreamResponse:
        """``GET /codex/models?client_version=``: plan-filtered catalog with ETag / 304."""
        account = await self.guard(request, "models")
        if not isinstance(account, FakeAccount):
            return account
        models, etag = self._catalog(account.plan_type, request.query.get("client_version"))
        if etag in [t.strip() for t in request.headers.get("If-None-Match", "").split(",")]:
            return web.Response(status=304, headers={"ETag": etag})
        return web.json_response({"models": models}, headers={"ETag": etag})

    async def _usage(self, request: web.Request) -> web.StreamResponse:
        """``GET /wham/usage`` for the authenticated account."""
        account = await self.guard(request, "usage")
        if not isinstance(account, FakeAccount):
            return account
        return web.json_response(account.usage_json())

    async def _accounts_check(self, request: web.Request) -> web.StreamResponse:
        """``GET /wham/accounts/check``: the authenticated account as a one-entry list."""
        account = await self.guard(request, "accounts")
        if not isinstance(account, FakeAccount):
            return account
        return web.json_response({"accounts": [account.check_json()],
                                  "account_ordering": [account.chatgpt_account_id]})

    async def _settings(self, request: web.Request) -> web.StreamResponse:
        """``GET /wham/settings/user``: ``{}``."""
        account = await self.guard(request, "settings")
        return account if not isinstance(account, FakeAccount) else web.json_response({})
