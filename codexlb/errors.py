"""Errors of codexlb. Few and shallow, and they carry data.

    CodexLBError
    ├── ConfigError          bad settings or plugin options; start-up stops (exit status 2)
    ├── PluginError          unknown plugin name, spec mismatch, async hook used as a wrapper
    └── FlowError            becomes an HTTP response in OpenAI's {"error": {...}} shape
        ├── BadRequest               400 invalid_request_error
        ├── PayloadTooLarge          413 payload_too_large
        ├── UnsupportedEncoding      415 unsupported_content_encoding
        ├── NoAccountAvailable       503 no_account_available
        ├── PoolExhausted            429 usage_limit_reached
        └── UpstreamError            502/504; phase and retryable
"""

from __future__ import annotations

from typing import Any


class CodexLBError(Exception):
    """Root of every codexlb error."""


class ConfigError(CodexLBError):
    """Invalid configuration; ``problems`` holds one line per problem."""

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class PluginError(CodexLBError):
    """A plugin cannot be loaded or does not match the hook specs."""


class FlowError(CodexLBError):
    """An error that ends a request with an HTTP status and a stable code."""

    status = 500
    code = "internal_error"
    type = "server_error"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 extra: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.extra = extra or {}
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The OpenAI-shaped error body."""
        return {"error": {"message": self.message, "type": self.type, "code": self.code, **self.extra}}


class BadRequest(FlowError):
    status, code, type = 400, "bad_request", "invalid_request_error"


class PayloadTooLarge(FlowError):
    status, code, type = 413, "payload_too_large", "invalid_request_error"


class UnsupportedEncoding(FlowError):
    status, code, type = 415, "unsupported_content_encoding", "invalid_request_error"


class NoAccountAvailable(FlowError):
    status, code, type = 503, "no_account_available", "server_error"


class PoolExhausted(FlowError):
    status, code, type = 429, "usage_limit_reached", "usage_limit_reached"


class UpstreamError(FlowError):
    """The upstream failed. ``phase`` is connect, headers or stream; ``retryable`` allows failover."""

    status, code, type = 502, "upstream_error", "server_error"

    def __init__(self, message: str, *, phase: str = "connect", retryable: bool = True,
                 cooldown_seconds: float | None = None, reset_at: float | None = None,
                 upstream_status: int | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.phase = phase
        self.retryable = retryable
        self.cooldown_seconds = cooldown_seconds
        self.reset_at = reset_at
        self.upstream_status = upstream_status


class StreamIdleTimeout(FlowError, TimeoutError):
    """A streamed answer went silent for ``STREAM_IDLE_TIMEOUT_SECONDS`` after its first byte."""

    status, code, type = 504, "stream_idle_timeout", "server_error"
