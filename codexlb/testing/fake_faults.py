"""Injectable faults for :class:`~codexlb.testing.fake_upstream.FakeUpstream`.

A :class:`Fault` is a frozen description; the fake interprets it when a request hits the endpoint it was
injected for. Constructors are class methods, e.g. ``Fault.usage_limit(resets_in_seconds=60)``.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

ENDPOINTS = ("responses", "usage", "models", "token", "authorize", "device", "accounts", "settings", "compact")

SERVER_ERROR_BODIES: dict[int, Any] = {
    500: {
        "error": {
            "message": "An error occurred while processing your request. Please try again.",
            "type": "server_error",
        }
    },
    503: {"error": {"code": "server_is_overloaded", "message": "Our servers are currently overloaded."}},
}

CLOUDFLARE_HTML = """<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title>
<meta http-equiv="Content-Type" content="text/html; charset=UTF-8"></head>
<body><div class="main-wrapper" role="main"><div class="main-content">
<h1>chatgpt.com</h1><h2>Checking if the site connection is secure</h2>
<noscript>Enable JavaScript and cookies to continue</noscript></div></div></body></html>
"""


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour. ``kind`` selects it; the other fields are its parameters."""

    kind: str
    http_status: int | None = None
    body: Any = None
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0
    after_events: int = 0
    size_bytes: int = 0
    resets_at: int | None = None
    resets_in_seconds: int | None = None
    plan_type: str | None = None
    code: str | None = None
    message: str | None = None
    extra: tuple[tuple[str, Any], ...] = field(default=())

    @property
    def default_endpoint(self) -> str:
        """Endpoint a fault applies to when ``inject`` is not given one."""
        if self.kind.startswith("refresh_token_"):
            return "token"
        if self.kind == "access_denied":
            return "authorize"
        return "responses"

    # -- HTTP answers ------------------------------------------------------------------------------

    @classmethod
    def usage_limit(
        cls, resets_at: int | None = None, resets_in_seconds: int | None = None, plan_type: str | None = None
    ) -> Fault:
        """429 ``usage_limit_reached``; unset reset fields are taken from the account's primary window."""
        return cls("usage_limit", http_status=429, resets_at=resets_at, resets_in_seconds=resets_in_seconds,
                   plan_type=plan_type)

    @classmethod
    def usage_not_included(cls) -> Fault:
        """429 ``usage_not_included`` (plan has no Codex access)."""
        return cls("usage_not_included", http_status=429)

    @classmethod
    def rate_limited(cls, message: str = "Rate limit reached. Please try again in 1.5s.") -> Fault:
        """A 429 that is not a usage limit (``rate_limit_exceeded``)."""
        return cls("rate_limited", http_status=429, message=message)

    @classmethod
    def token_expired(cls) -> Fault:
        """401 ``token_expired``."""
        return cls("token_expired", http_status=401)

    @classmethod
    def token_invalidated(cls) -> Fault:
        """401 ``token_invalidated``."""
        return cls("token_invalidated", http_status=401)

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        """5xx with the JSON body the backend uses for 500/503 (empty body for other codes)."""
        return cls("server_error", http_status=status, body=SERVER_ERROR_BODIES.get(status))

    @classmethod
    def cloudflare_403(cls) -> Fault:
        """403 ``text/html`` Cloudflare challenge page."""
        return cls("cloudflare_403", http_status=403)

    @classmethod
    def model_not_supported(cls, model: str | None = None) -> Fault:
        """400 "The '<model>' model is not supported when using Codex with a ChatGPT account."."""
        return cls("model_not_supported", http_status=400, extra=(("model", model),))

    @classmethod
    def refresh_refused(cls) -> Fault:
        """401 ``token_expired``, then the token endpoint refuses the refresh (``refresh_token_invalidated``).

        :meth:`FakeUpstream.inject` queues the two halves on their endpoints.
        """
        return cls("refresh_refused", http_status=401)

    @classmethod
    def status(cls, code: int, json_body: Any = None, headers: dict[str, str] | None = None) -> Fault:
        """Any status with a JSON body (``None``: empty body)."""
        return cls("status", http_status=code, body=json_body, headers=tuple((headers or {}).items()))

    # -- connection-level faults -------------------------------------------------------------------

    @classmethod
    def refuse(cls) -> Fault:
        """Reset the connection without answering."""
        return cls("refuse")

    @classmethod
    def hang(cls) -> Fault:
        """Accept the request and never answer (until the fake stops or the client gives up)."""
        return cls("hang")

    @classmethod
    def slow(cls, delay_s: float) -> Fault:
        """Answer normally after ``delay_s`` seconds."""
        return cls("slow", delay_s=delay_s)

    # -- stream faults (responses only) ------------------------------------------------------------

    @classmethod
    def drop_mid_stream(cls, after_events: int = 3) -> Fault:
        """Send the first ``after_events`` SSE frames (a leading ``codex.rate_limits`` counts), then reset."""
        return cls("drop_mid_stream", after_events=after_events)

    @classmethod
    def stall_mid_stream(cls, after_events: int = 1, delay_s: float = math.inf) -> Fault:
        """Send the first ``after_events`` SSE frames, go silent for ``delay_s`` seconds (forever: until the fake
        stops), then send the rest. ``after_events=0`` is a hang right after the 200 head."""
        return cls("stall_mid_stream", after_events=after_events, delay_s=delay_s)

    @classmethod
    def end_mid_stream(cls, after_events: int = 1) -> Fault:
        """Send the first ``after_events`` SSE frames, then end the body cleanly (no terminal event)."""
        return cls("end_mid_stream", after_events=after_events)

    @classmethod
    def slow_events(cls, delay_s: float) -> Fault:
        """Stream the answer one SSE frame at a time, ``delay_s`` seconds apart."""
        return cls("slow_events", delay_s=delay_s)

    @classmethod
    def oversized_event(cls, size_bytes: int = 4 * 1024 * 1024) -> Fault:
        """Make the first delta ``size_bytes`` long (the ``*.done`` events repeat the full text)."""
        return cls("oversized_event", size_bytes=size_bytes)

    @classmethod
    def response_failed(
        cls, code: str = "server_is_overloaded",
        message: str = "Our servers are currently overloaded. Please try again later.",
    ) -> Fault:
        """HTTP 200 stream: ``response.created`` then a terminal ``response.failed`` with ``code``."""
        return cls("response_failed", code=code, message=message)

    @classmethod
    def error_event(cls, code: str = "server_error", message: str = "An error occurred.") -> Fault:
        """HTTP 200 stream whose only event is a top-level ``error`` event."""
        return cls("error_event", code=code, message=message)

    # -- OAuth faults ------------------------------------------------------------------------------

    @classmethod
    def refresh_token_expired(cls) -> Fault:
        """401 ``{"error":{"code":"refresh_token_expired",...}}`` from the token endpoint."""
        return cls("refresh_token_expired", http_status=401)

    @classmethod
    def refresh_token_invalidated(cls) -> Fault:
        """401 ``{"error":{"code":"refresh_token_invalidated",...}}`` from the token endpoint."""
        return cls("refresh_token_invalidated", http_status=401)

    @classmethod
    def refresh_token_reused(cls) -> Fault:
        """401 ``{"error":"refresh_token_reused",...}`` even for a fresh refresh token."""
        return cls("refresh_token_reused", http_status=401)

    @classmethod
    def access_denied(cls, description: str = "missing_codex_entitlement") -> Fault:
        """``/oauth/authorize`` redirects back with ``error=access_denied``."""
        return cls("access_denied", message=description)

    def param(self, name: str, default: Any = None) -> Any:
        """Look up an entry of ``extra``."""
        return dict(self.extra).get(name, default)

    def describe(self) -> dict[str, Any]:
        """The fault's kind and the fields it sets (for listings such as ``GET /_fake/faults``)."""
        out: dict[str, Any] = {"fault": self.kind}
        for f in fields(self)[1:]:
            value = getattr(self, f.name)
            if value is not None and value != f.default and value != ():
                out[f.name] = dict(value) if isinstance(value, tuple) else value
        return out


STREAM_FAULTS = frozenset({"drop_mid_stream", "stall_mid_stream", "end_mid_stream", "slow_events",
                           "oversized_event", "response_failed", "error_event"})
FAULT_KINDS: dict[str, Callable[..., Fault]] = {
    "usage_limit": Fault.usage_limit, "usage_not_included": Fault.usage_not_included,
    "rate_limited": Fault.rate_limited, "token_expired": Fault.token_expired,
    "token_invalidated": Fault.token_invalidated, "refresh_refused": Fault.refresh_refused,
    "server_error": Fault.server_error, "cloudflare_403": Fault.cloudflare_403,
    "model_not_supported": Fault.model_not_supported, "status": Fault.status,
    "refuse": Fault.refuse, "hang": Fault.hang, "slow": Fault.slow, "drop_mid_stream": Fault.drop_mid_stream,
    "stall_mid_stream": Fault.stall_mid_stream, "end_mid_stream": Fault.end_mid_stream,
    "slow_events": Fault.slow_events,
    "oversized_event": Fault.oversized_event, "response_failed": Fault.response_failed,
    "error_event": Fault.error_event, "refresh_token_expired": Fault.refresh_token_expired,
    "refresh_token_invalidated": Fault.refresh_token_invalidated,
    "refresh_token_reused": Fault.refresh_token_reused, "access_denied": Fault.access_denied,
}
"""Every fault by its spec name (the constructor's name): one vocabulary for tests, benchmarks and users."""
SCOPE_KEYS = ("account", "times", "endpoint")
"""Keys of a spec that say where a fault applies rather than what it is."""


def fault_from_spec(kind: str, params: Mapping[str, Any]) -> Fault:
    """Build a fault from its name and parameters (``ValueError`` naming what is allowed)."""
    constructor = FAULT_KINDS.get(kind)
    if constructor is None:
        raise ValueError(f"unknown fault {kind!r}; known: {', '.join(sorted(FAULT_KINDS))}")
    allowed = inspect.signature(constructor).parameters
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        names = ", ".join(allowed) or "none"
        raise ValueError(f"fault {kind!r} has no parameter {', '.join(unknown)} (parameters: {names})")
    for name, value in params.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            raise ValueError(f"fault {kind!r}: {name} must not be negative")
    try:
        return constructor(**params)
    except TypeError as exc:
        raise ValueError(f"fault {kind!r}: {exc}") from None


def parse_fault_arg(text: str) -> dict[str, Any]:
    """A command-line fault, ``KIND[,name=value...]`` or a JSON object, as a spec mapping.

    Values are read as JSON when they parse (``60``, ``1.5``, ``null``), else as strings:
    ``usage_limit,resets_in_seconds=600,account=acct-1,times=-1``.
    """
    text = text.strip()
    if text.startswith("{"):
        try:
            loaded = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"fault {text!r} is not valid JSON: {exc}") from None
        if not isinstance(loaded, dict) or not isinstance(loaded.get("fault"), str):
            raise ValueError(f"fault {text!r}: expected a JSON object with a \"fault\" name")
        return loaded
    kind, *pairs = [part.strip() for part in text.split(",")]
    if not kind:
        raise ValueError("empty fault; expected KIND[,name=value...]")
    spec: dict[str, Any] = {"fault": kind}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"fault {text!r}: {pair!r} is not name=value")
        try:
            spec[name.strip()] = json.loads(raw)
        except ValueError:
            spec[name.strip()] = raw.strip()
    return spec


def split_spec(spec: Mapping[str, Any]) -> tuple[Fault, str | None, int, str | None]:
    """``(fault, account, times, endpoint)`` of one spec mapping (``ValueError`` if anything is wrong)."""
    if not isinstance(spec, Mapping) or not isinstance(spec.get("fault"), str):
        raise ValueError("a fault spec is an object with a \"fault\" name, e.g. {\"fault\": \"usage_limit\"}")
    params = {k: v for k, v in spec.items() if k != "fault" and k not in SCOPE_KEYS}
    fault = fault_from_spec(spec["fault"], params)
    account, times, endpoint = spec.get("account"), spec.get("times", 1), spec.get("endpoint")
    if account is not None and not isinstance(account, str):
        raise ValueError("account must be a chatgpt account id (a string) or null for every account")
    if not isinstance(times, int) or isinstance(times, bool) or times == 0 or times < -1:
        raise ValueError("times must be a positive whole number or -1 (forever)")
    if endpoint is not None and endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {', '.join(ENDPOINTS)}")
    return fault, account, times, endpoint


def error_json(kind: str, message: str, code: str | None = None, **more: Any) -> dict[str, Any]:
    """OpenAI-style error envelope."""
    err: dict[str, Any] = {"message": message, "type": kind}
    if code is not None:
        err["code"] = code
    err.update(more)
    return {"error": err}


TOKEN_EXPIRED_BODY = {
    "error": {
        "message": "Provided authentication token is expired. Please try signing in again.",
        "type": "invalid_request_error",
        "code": "token_expired",
        "param": None,
    }
}
TOKEN_INVALIDATED_BODY = error_json(
    "authentication_error",
    "Your authentication token has been invalidated. Please try signing in again.",
    "token_invalidated",
)
REFRESH_ERROR_BODIES: dict[str, Any] = {
    "refresh_token_expired": {
        "error": {"code": "refresh_token_expired",
                  "message": "Your refresh token has expired. Please try signing in again."}
    },
    "refresh_token_reused": {
        "error": "refresh_token_reused",
        "error_description": "Your refresh token has already been used to generate a new access token. "
        "Please try signing in again.",
    },
    "refresh_token_invalidated": {
        "error": {"code": "refresh_token_invalidated",
                  "message": "Your refresh token has been invalidated. Please try signing in again."}
    },
}
