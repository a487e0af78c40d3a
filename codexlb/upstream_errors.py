"""Classify upstream failures: which ones fail over, cool an account down, or go to the client.

Facts from ``protocol.md`` §1.7-1.8: 429 ``usage_limit_reached`` (by ``error.type``) carries
``resets_at``/``resets_in_seconds``; 401 is an expired token; Cloudflare answers 403 HTML; 5xx
and transport errors are transient; 400 goes back to the client unless the model is not
supported for this account.

The core applies :func:`classify` to every answer of the ``send_upstream`` hook; an upstream
plugin reports its transport's failures with the constructors below (:func:`unreachable`,
:func:`upstream_timeout`, ...), so their codes and cooldowns are the core's, whatever the client.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any

from codexlb.errors import UpstreamError
from codexlb.ratelimits import reset_time

SHORT_COOLDOWN_SECONDS = 30.0
TRANSIENT_COOLDOWN_SECONDS = 5.0
RETRYABLE_EVENT_CODES = {
    "usage_limit_reached", "rate_limit_exceeded", "server_is_overloaded", "slow_down",
    "server_error", "internal_server_error", "insufficient_quota", "quota_exceeded",
}
_TRY_AGAIN = re.compile(r"try again in\s*([\d.]+)\s*(ms|s|seconds|m|min|minutes|h)\b", re.I)
_MODEL_NOT_SUPPORTED = re.compile(r"model.*not supported|not supported.*model|does not have access to model",
                                  re.I)


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _error_obj(data: Mapping[str, Any]) -> dict[str, Any]:
    err = data.get("error")
    if isinstance(err, dict):
        return err
    if isinstance(data.get("detail"), str):
        return {"message": data["detail"]}
    return {}


def retry_after(message: str) -> float | None:
    """Seconds from a "try again in 20m" / "11.054s" style message."""
    match = _TRY_AGAIN.search(message or "")
    if not match:
        return None
    value, unit = float(match.group(1)), match.group(2).lower()
    scale = {"ms": 0.001, "m": 60, "min": 60, "minutes": 60, "h": 3600}.get(unit, 1.0)
    return value * scale


def classify(status: int, headers: Mapping[str, str], body: bytes,
             now: float | None = None) -> UpstreamError | None:
    """An :class:`UpstreamError` for a failed answer, or ``None`` when it goes to the client as is.

    :param headers: lower-cased response headers.
    """
    now = time.time() if now is None else now
    data = _json(body)
    err = _error_obj(data)
    message = str(err.get("message") or "")
    code = str(err.get("code") or err.get("type") or "")
    if status == 429:
        if err.get("type") == "usage_limit_reached" or code == "usage_limit_reached":
            reset_at = reset_time(err, headers, now) or now + SHORT_COOLDOWN_SECONDS * 10
            return UpstreamError(message or "usage limit reached", status=429, code="usage_limit_reached",
                                 phase="headers", reset_at=reset_at, upstream_status=429)
        if err.get("type") == "usage_not_included":
            return UpstreamError(message or "plan does not include Codex", status=403,
                                 code="usage_not_included", phase="headers", upstream_status=429,
                                 cooldown_seconds=3600.0)
        wait = retry_after(message) or SHORT_COOLDOWN_SECONDS
        return UpstreamError(message or "rate limited", status=429, code="rate_limited", phase="headers",
                             cooldown_seconds=wait, upstream_status=429)
    if status == 401:
        # Never 401 to the client: Codex would refresh its own ChatGPT token in response.
        return UpstreamError(message or "upstream rejected the account's token", status=502,
                             code=code or "token_expired", phase="headers", upstream_status=401)
    if status == 403 and ("text/html" in headers.get("content-type", "") or headers.get("cf-mitigated")):
        return UpstreamError("upstream blocked the request (Cloudflare challenge)", status=502,
                             code="upstream_blocked", phase="headers", upstream_status=403,
                             cooldown_seconds=SHORT_COOLDOWN_SECONDS)
    if status >= 500:
        return UpstreamError(message or f"upstream answered {status}", status=502,
                             code=code or "upstream_error", phase="headers", upstream_status=status,
                             cooldown_seconds=TRANSIENT_COOLDOWN_SECONDS)
    if status in (400, 404) and _MODEL_NOT_SUPPORTED.search(message or str(data)):
        return UpstreamError(message, status=status, code="model_not_supported", phase="headers",
                             upstream_status=status)
    if status in (402,) or code in ("account_deactivated", "deactivated_workspace"):
        return UpstreamError(message or "account deactivated", status=502, code="account_deactivated",
                             phase="headers", upstream_status=status, cooldown_seconds=3600.0)
    return None


def classify_event(payload: Mapping[str, Any], now: float | None = None) -> UpstreamError | None:
    """An error for a stream that *starts* with ``response.failed``/``error`` we can fail over from."""
    now = time.time() if now is None else now
    kind = payload.get("type")
    if kind == "response.failed":
        err = (payload.get("response") or {}).get("error") or {}
    elif kind == "error":
        err = payload.get("error") if isinstance(payload.get("error"), dict) else payload
    else:
        return None
    code = str(err.get("code") or err.get("type") or "")
    if code not in RETRYABLE_EVENT_CODES and err.get("type") not in RETRYABLE_EVENT_CODES:
        return None
    message = str(err.get("message") or code)
    if "usage_limit_reached" in (code, err.get("type")) or code in ("insufficient_quota", "quota_exceeded"):
        reset_at = reset_time(err, {}, now) or now + SHORT_COOLDOWN_SECONDS * 10
        return UpstreamError(message, status=429, code="usage_limit_reached", phase="first_event",
                             reset_at=reset_at, upstream_status=200)
    wait = retry_after(message) or TRANSIENT_COOLDOWN_SECONDS
    return UpstreamError(message, status=502, code=code, phase="first_event", cooldown_seconds=wait,
                         upstream_status=200)


def first_byte_timeout(seconds: float, setting: str) -> UpstreamError:
    """The upstream showed no answer event in time (nothing reached the client: fail over)."""
    return UpstreamError(f"upstream did not start answering within {seconds:g} s ({setting})", status=504,
                         code="upstream_first_byte_timeout", phase="first_event",
                         cooldown_seconds=SHORT_COOLDOWN_SECONDS)


def silent_before_first_event(seconds: float) -> UpstreamError:
    """The stream went silent before its first output event (nothing reached the client: fail over)."""
    return UpstreamError(f"upstream sent nothing for {seconds:g} s before its first output event "
                         "(CODEX_LB_STREAM_IDLE_TIMEOUT_SECONDS)", status=504, code="stream_idle_timeout",
                         phase="first_event", cooldown_seconds=SHORT_COOLDOWN_SECONDS)


def broken_before_first_event(reason: str) -> UpstreamError:
    """The stream broke or ended before its first output event (nothing reached the client: fail over)."""
    return UpstreamError(f"upstream stream {reason} before the first output event", code="upstream_stream_error",
                         phase="first_event", cooldown_seconds=TRANSIENT_COOLDOWN_SECONDS)


def upstream_timeout() -> UpstreamError:
    """No response head within the wait the plugin allows (nothing reached the client: fail over)."""
    return UpstreamError("upstream timed out before answering", status=504, code="upstream_timeout",
                         cooldown_seconds=TRANSIENT_COOLDOWN_SECONDS)


def unreachable(reason: str) -> UpstreamError:
    """The connection failed before a response head (``reason``: the transport's error class)."""
    return UpstreamError(f"upstream unreachable ({reason})", code="upstream_unreachable",
                         cooldown_seconds=TRANSIENT_COOLDOWN_SECONDS)


def body_stalled(seconds: float) -> UpstreamError:
    """A whole (not streamed) answer went silent before its end (nothing reached the client yet)."""
    return UpstreamError(f"upstream body stalled for {seconds:g} s (CODEX_LB_STREAM_IDLE_TIMEOUT_SECONDS)",
                         status=504, code="stream_idle_timeout", cooldown_seconds=TRANSIENT_COOLDOWN_SECONDS)


def body_broken(reason: str) -> UpstreamError:
    """A whole (not streamed) answer broke off before its end (nothing reached the client yet)."""
    return UpstreamError(f"upstream body broke off ({reason})", code="upstream_stream_error",
                         cooldown_seconds=TRANSIENT_COOLDOWN_SECONDS)


def stream_broken(reason: str) -> UpstreamError:
    """A streamed answer broke while being read (after the peek: ends the stream, no failover)."""
    return UpstreamError(f"upstream stream broke ({reason})", code="upstream_stream_error", phase="stream",
                         retryable=False)


def stream_incomplete() -> UpstreamError:
    """A streamed answer ended without a terminal event."""
    return UpstreamError("stream closed before response.completed", code="stream_incomplete", phase="stream",
                         retryable=False)
