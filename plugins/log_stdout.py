"""Log one access line per request and, when asked, the request's shape or its redacted payload.

Hooks: ``configure``, ``transform_request`` (``tryfirst``: sees the client's payload before
other plugins change it; only does work when a flag below is on), ``flow_done`` (off the hot path).

- Access line, always, logger ``codexlb.access`` at INFO: method, path, status, account label,
  route, model, tokens, time to first byte, duration, attempts, error code, client address.
  No content. The same fields are attached as ``record.access`` (a dict) for JSON formatters.
- ``LOG_PROXY_REQUEST_SHAPE``: one line per request, logger ``codexlb.request_shape``: model,
  endpoint, stream, body size, input item types and counts, content part types, message roles,
  tool count and types, and the prompt cache key as a 12-character SHA-256 prefix (raw with
  ``LOG_PROXY_REQUEST_SHAPE_RAW_CACHE_KEY``). No content.
- ``LOG_PROXY_REQUEST_PAYLOAD``: the whole payload, logger ``codexlb.request_payload``, with
  credentials removed: values of keys like authorization, api_key, token, secret, password,
  refresh_token, access_token, id_token, cookie become ``[REDACTED]``; strings that look like
  bearer tokens, JWTs or ``sk-`` keys are masked; ``data:`` URLs are cut to their head. This
  logs prompt content: for debugging only.

Settings table ``[plugins.log_stdout]``: none. Core settings used: the three flags above.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from codexlb import Flow, hookimpl
from codexlb.options import PluginOptions

if TYPE_CHECKING:
    from codexlb.settings import Settings

access_log = logging.getLogger("codexlb.access")
shape_log = logging.getLogger("codexlb.request_shape")
payload_log = logging.getLogger("codexlb.request_payload")

REDACTED = "[REDACTED]"
SECRET_KEY_ENDINGS = ("token", "secret", "password", "passwd", "apikey", "authorization", "cookie", "credential",
                      "credentials", "privatekey", "accesskey", "signature")
SECRET_KEYS = frozenset({"auth", "key", "pass", "pwd", "jwt", "bearer", "session"})
SECRET_VALUE = re.compile(
    r"(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,}"  # Authorization values
    r"|eyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]*"  # JWTs
    r"|\bsk-[A-Za-z0-9_-]{16,}"  # OpenAI-style API keys
    r"|\brt_[A-Za-z0-9_-]{20,}")  # refresh tokens
DATA_URL_HEAD = 48
MAX_DEPTH = 64
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean(value: object, limit: int = 120) -> str:
    """A client-supplied value made safe for a one-line log (no control characters, bounded)."""
    text = _CONTROL.sub("?", str(value))
    return text if len(text) <= limit else text[:limit] + "..."


def cache_key_label(key: object, raw: bool) -> str | None:
    if not isinstance(key, str) or not key:
        return None
    return clean(key) if raw else hashlib.sha256(key.encode()).hexdigest()[:12]


def secret_key(key: object) -> bool:
    """Whether a JSON key names a credential (``api_key``, ``X-Api-Key``, ``refreshToken``, ...)."""
    if not isinstance(key, str):
        return False
    name = key.lower().replace("_", "").replace("-", "")
    return name in SECRET_KEYS or name.endswith(SECRET_KEY_ENDINGS)


def redact(value: Any, depth: int = 0) -> Any:
    """A copy of a JSON value with credentials removed and ``data:`` URLs shortened."""
    if depth > MAX_DEPTH:
        return "[nested too deep]"
    if isinstance(value, dict):
        return {k: REDACTED if secret_key(k) and v not in (None, "") else redact(v, depth + 1)
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, depth + 1) for v in value]
    if isinstance(value, str):
        if value.startswith("data:") and len(value) > DATA_URL_HEAD:
            return f"{value[:DATA_URL_HEAD]}...[{len(value)} chars]"
        return SECRET_VALUE.sub(REDACTED, value)
    return value


def request_shape(flow: Flow, raw_cache_key: bool) -> dict[str, Any]:
    """Counts and types of a request: nothing a user wrote."""
    payload = flow.request.payload or {}
    shape: dict[str, Any] = {
        "flow": flow.id, "endpoint": flow.request.endpoint, "model": clean(flow.model or "-", 80),
        "stream": payload.get("stream") is True, "body_bytes": len(flow.request.body or b""),
    }
    items, parts, roles = Counter[str](), Counter[str](), Counter[str]()
    source = payload.get("input")
    if isinstance(source, str):
        items["text"] += 1
    for entries in (source, payload.get("messages")):
        for item in entries if isinstance(entries, list) else ():
            if not isinstance(item, dict):
                items["?"] += 1
                continue
            items[clean(item.get("type") or ("message" if "role" in item else "?"), 40)] += 1
            if isinstance(item.get("role"), str):
                roles[clean(item["role"], 40)] += 1
            content = item.get("content")
            if isinstance(content, str):
                parts["text"] += 1
            for part in content if isinstance(content, list) else ():
                parts[clean(part.get("type", "?") if isinstance(part, dict) else "?", 40)] += 1
    tools: list[Any] = payload.get("tools") or [] if isinstance(payload.get("tools"), list) else []
    shape.update(input_items=dict(items), content_parts=dict(parts), roles=dict(roles), tool_count=len(tools),
                 tool_types=dict(Counter(clean(t.get("type", "?"), 40) for t in tools if isinstance(t, dict))),
                 instructions_chars=len(payload["instructions"]) if isinstance(payload.get("instructions"), str)
                 else 0,
                 prompt_cache_key=cache_key_label(payload.get("prompt_cache_key"), raw_cache_key))
    return shape


def access_fields(flow: Flow) -> dict[str, Any]:
    started, usage = flow.started_at, flow.usage
    return {
        "flow": flow.id, "method": flow.request.method, "path": clean(flow.request.path),
        "status": flow.status, "account": flow.account.label if flow.account else None,
        "route": str(flow.route) if flow.route is not None else None,
        "model": clean(flow.model, 80) if flow.model else None,
        "tokens": None if usage is None else {"input": usage.input, "cached": usage.cached,
                                              "output": usage.output, "reasoning": usage.reasoning},
        "ttfb_ms": round((flow.first_byte_at - started) * 1000, 1) if flow.first_byte_at else None,
        "duration_ms": round((flow.finished_at - started) * 1000, 1) if flow.finished_at else None,
        "attempts": len(flow.attempts), "error": flow.error_code, "client": flow.request.client_ip,
    }


def access_line(f: Mapping[str, Any]) -> str:
    tokens = f["tokens"]
    token_text = "-" if tokens is None else \
        f"in:{tokens['input']},cached:{tokens['cached']},out:{tokens['output']},reasoning:{tokens['reasoning']}"

    def show(value: object) -> str:
        return "-" if value is None else str(value)

    return (f"{f['method']} {f['path']} {show(f['status'])} account={show(f['account'])} route={show(f['route'])} "
            f"model={show(f['model'])} tokens={token_text} ttfb_ms={show(f['ttfb_ms'])} "
            f"duration_ms={show(f['duration_ms'])} attempts={f['attempts']} error={show(f['error'])} "
            f"client={f['client']} flow={f['flow']}")


class LogStdout:
    """Access log lines, plus optional request shape and redacted payload lines."""

    def __init__(self) -> None:
        self.shape = self.raw_cache_key = self.payload = False

    @hookimpl
    def configure(self, config: Mapping[str, Any], settings: Settings) -> None:
        PluginOptions("log_stdout", config, hint="use CODEX_LB_LOG_PROXY_REQUEST_SHAPE / _PAYLOAD")
        self.shape = settings.log_proxy_request_shape
        self.raw_cache_key = settings.log_proxy_request_shape_raw_cache_key
        self.payload = settings.log_proxy_request_payload

    @hookimpl(tryfirst=True)
    async def transform_request(self, flow: Flow) -> None:
        if not (self.shape or self.payload) or flow.request.payload is None:
            return
        if self.shape and shape_log.isEnabledFor(logging.INFO):
            shape = request_shape(flow, self.raw_cache_key)
            shape_log.info("request shape %s", json.dumps(shape, separators=(",", ":")), extra={"shape": shape})
        if self.payload and payload_log.isEnabledFor(logging.INFO):
            text = json.dumps(redact(flow.request.payload), ensure_ascii=False, separators=(",", ":"))
            payload_log.info("request payload flow=%s %s", flow.id, text)

    @hookimpl
    async def flow_done(self, flow: Flow) -> None:
        if access_log.isEnabledFor(logging.INFO):
            fields = access_fields(flow)
            access_log.info("%s", access_line(fields), extra={"access": fields})
