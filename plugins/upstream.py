"""Send flows to the ChatGPT backend as the chosen account and stream the answer back.

Hooks: ``startup``/``shutdown`` (one shared ``httpx.AsyncClient`` over the aiohttp transport),
``send_upstream``. The client's ``Authorization`` is replaced by the account's token and
``chatgpt-account-id`` is set; Codex's own headers (``session-id``, ``originator``,
``x-codex-*``, ...) pass through; hop-by-hop headers are dropped. Failures are classified by
:mod:`codexlb.upstream_errors` so the core can fail over.

Settings table ``[plugins.upstream]``:
- ``max_connections`` (int, default 1000): connection pool size towards the upstream.
- ``error_body_bytes`` (int, default 65536): how much of an error answer is read.
Core settings used: ``UPSTREAM_BASE_URL``, ``UPSTREAM_CONNECT_TIMEOUT_SECONDS``, and
``STREAM_IDLE_TIMEOUT_SECONDS`` as the longest wait for the response head.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from codexlb import ConfigError, Flow, ProxyResponse, UpstreamError, hookimpl, ratelimits
from codexlb.upstream_errors import TRANSIENT_COOLDOWN_SECONDS, classify

if TYPE_CHECKING:
    from codexlb.app import CodexLB
    from codexlb.settings import Settings
    from codexlb.types import Account

DROP_REQUEST = frozenset({
    "host", "connection", "keep-alive", "proxy-authorization", "proxy-connection", "te", "trailer",
    "transfer-encoding", "upgrade", "content-length", "content-encoding", "authorization",
    "chatgpt-account-id", "accept-encoding", "cookie", "forwarded", "x-forwarded-for",
    "x-forwarded-proto", "x-forwarded-host", "x-real-ip", "expect",
})
DROP_RESPONSE = frozenset({
    "connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "set-cookie",
    "date", "server", "alt-svc", "proxy-authenticate", "trailer", "upgrade",
})


def forward_headers(headers: Mapping[str, str], token: str, chatgpt_account_id: str | None) -> dict[str, str]:
    """Request headers for the upstream: the client's minus hop-by-hop ones, with our credentials."""
    out = {k: v for k, v in headers.items() if k not in DROP_REQUEST}
    out["authorization"] = f"Bearer {token}"
    if chatgpt_account_id:
        out["chatgpt-account-id"] = chatgpt_account_id
    out["accept-encoding"] = "identity"
    return out


class Upstream:
    """The built-in upstream client."""

    def __init__(self, client: httpx.AsyncClient | None = None) -> None:
        self.client = client
        self._own_client = client is None
        self.max_connections = 1000
        self.error_body_bytes = 65536

    @hookimpl
    def configure(self, config: Mapping[str, Any], settings: Settings) -> None:
        self.settings = settings
        try:
            self.max_connections = int(config.get("max_connections", self.max_connections))
            self.error_body_bytes = int(config.get("error_body_bytes", self.error_body_bytes))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"[plugins.upstream]: {exc}") from None
        if self.max_connections < 1 or self.error_body_bytes < 1:
            raise ConfigError("[plugins.upstream]: max_connections and error_body_bytes must be >= 1")

    @hookimpl
    async def startup(self, app: CodexLB) -> None:
        if self.client is None:
            from httpx_aiohttp import AiohttpTransport

            limits = httpx.Limits(max_connections=self.max_connections,
                                  max_keepalive_connections=self.max_connections)
            timeout = httpx.Timeout(connect=self.settings.upstream_connect_timeout_seconds,
                                    read=None, write=60.0, pool=self.settings.upstream_connect_timeout_seconds)
            self.client = httpx.AsyncClient(transport=AiohttpTransport(limits=limits, trust_env=False),
                                            timeout=timeout)

    @hookimpl
    async def shutdown(self) -> None:
        if self.client is not None and self._own_client:
            await self.client.aclose()
            self.client = None

    @hookimpl
    async def send_upstream(self, flow: Flow, account: Account, app: CodexLB) -> ProxyResponse:
        assert self.client is not None, "upstream plugin not started"
        token = await app.tokens.access_token(account)
        url = app.settings.upstream_base_url.rstrip("/") + flow.upstream_path
        params = None
        if flow.upstream_method == "GET":
            params = flow.request.query or {"client_version": app.settings.model_registry_client_version}
        headers = forward_headers(flow.request.headers, token, account.chatgpt_account_id)
        content = flow.request.forward_body() if flow.upstream_method == "POST" else None
        if content is not None:
            headers["content-type"] = "application/json"
        request = self.client.build_request(flow.upstream_method, url, params=params, headers=headers,
                                            content=content)
        try:
            async with asyncio.timeout(app.settings.stream_idle_timeout_seconds):
                response = await self.client.send(request, stream=True)
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise UpstreamError(f"upstream timed out ({type(exc).__name__})", status=504,
                                code="upstream_timeout", cooldown_seconds=TRANSIENT_COOLDOWN_SECONDS) from None
        except httpx.TransportError as exc:
            raise UpstreamError(f"upstream unreachable ({type(exc).__name__})", code="upstream_unreachable",
                                cooldown_seconds=TRANSIENT_COOLDOWN_SECONDS) from None
        lowered = {k.lower(): v for k, v in response.headers.items()}
        if ratelimits.apply_headers(account, lowered):
            app.pool.mark_dirty(account)
        out_headers = [(k, v) for k, v in response.headers.items() if k.lower() not in DROP_RESPONSE]
        if response.status_code != 200:
            body = await self._read_bounded(response)
            error = classify(response.status_code, lowered, body)
            if error is not None:
                raise error
            return ProxyResponse(response.status_code, out_headers, body)
        if "text/event-stream" not in lowered.get("content-type", ""):
            return ProxyResponse(200, out_headers, await self._read_bounded(response, 64 << 20))
        return ProxyResponse(200, out_headers, self._stream(response))

    async def _read_bounded(self, response: httpx.Response, limit: int | None = None) -> bytes:
        limit = limit or self.error_body_bytes
        parts, size = [], 0
        try:
            async for chunk in response.aiter_raw():
                parts.append(chunk)
                size += len(chunk)
                if size >= limit:
                    break
        except httpx.HTTPError:
            pass
        finally:
            await response.aclose()
        return b"".join(parts)[:limit]

    async def _stream(self, response: httpx.Response) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            raise UpstreamError(f"upstream stream broke ({type(exc).__name__})", code="upstream_stream_error",
                                phase="stream", retryable=False) from None
        finally:
            await response.aclose()
