"""Injectable faults for :class:`~codexlb.testing.fake_upstream.FakeUpstream`.

A :class:`Fault` is a frozen description; the fake interprets it when a request hits the endpoint it was
injected for. Constructors are class methods, e.g. ``Fault.usage_limit(resets_in_seconds=60)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
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
        stops), then send the rest."""
        return cls("stall_mid_stream", after_events=after_events, delay_s=delay_s)

    @classmethod
    def end_mid_stream(cls, after_events: int = 1) -> Fault:
        """Send the first ``after_events`` SSE frames, then end the body cleanly (no terminal event)."""
        return cls("end_mid_stream", after_events=after_events)

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
