"""Send flows to the ChatGPT backend as the chosen account and stream the answer back.

Hooks: ``startup``/``shutdown`` (one shared ``aiohttp.ClientSession``), ``send_upstream``.
It talks aiohttp directly: the httpx layer over the aiohttp transport measured ~0.37 ms CPU per
streamed request inside the full pipeline (``bench/RESULTS.md``), above design.md's 0.15 ms bar.
The client's ``Authorization`` is replaced by the account's token and
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

import aiohttp

from codexlb import Flow, ProxyResponse, UpstreamError, hookimpl, ratelimits
from codexlb.options import PluginOptions
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

    def __init__(self, session: aiohttp.ClientSession | None = None) -> None:
        self.session = session
        self._own_session = session is None
        self.max_connections = 1000
        self.error_body_bytes = 65536

    @hookimpl
    def configure(self, config: Mapping[str, Any], settings: Settings) -> None:
        self.settings = settings
        options = PluginOptions("upstream", config, ("max_connections", "error_body_bytes"))
        self.max_connections = options.number("max_connections", self.max_connections, low=1, integer=True)
        self.error_body_bytes = options.number("error_body_bytes", self.error_body_bytes, low=1, integer=True)

    @hookimpl
    async def startup(self, app: CodexLB) -> None:
        if self.session is None:
            connector = aiohttp.TCPConnector(limit=self.max_connections, ttl_dns_cache=300,
                                             enable_cleanup_closed=True)
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.settings.upstream_connect_timeout_seconds)
            self.session = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False,
                                                 trust_env=False, skip_auto_headers=("User-Agent", "Accept"))

    @hookimpl
    async def shutdown(self) -> None:
        if self.session is not None and self._own_session:
            await self.session.close()
            self.session = None

    @hookimpl
    async def send_upstream(self, flow: Flow, account: Account, app: CodexLB) -> ProxyResponse:
        assert self.session is not None, "upstream plugin not started"
        token = await app.tokens.access_token(account)
        url = app.settings.upstream_base_url.rstrip("/") + flow.upstream_path
        headers = forward_headers(flow.request.headers, token, account.chatgpt_account_id)
        content = None
        if flow.upstream_method == "GET":
            query = flow.request.query or f"client_version={app.settings.model_registry_client_version}"
            url = f"{url}?{query}"
        else:
            content = flow.request.forward_body()
            headers["content-type"] = "application/json"
        try:
            async with asyncio.timeout(app.settings.stream_idle_timeout_seconds):
                response = await self.session.request(flow.upstream_method, url, headers=headers, data=content,
                                                      allow_redirects=False)
        except TimeoutError:
            raise UpstreamError("upstream timed out before answering", status=504, code="upstream_timeout",
                                cooldown_seconds=TRANSIENT_COOLDOWN_SECONDS) from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"upstream unreachable ({type(exc).__name__})", code="upstream_unreachable",
                                cooldown_seconds=TRANSIENT_COOLDOWN_SECONDS) from None
        lowered = response.headers  # case-insensitive already: no copy on the hot path
        if ratelimits.apply_headers(account, lowered):
            app.pool.mark_dirty(account)
        out_headers = [(k, v) for k, v in response.headers.items() if k.lower() not in DROP_RESPONSE]
        if response.status != 200:
            body = await self._read_bounded(response)
            error = classify(response.status, lowered, body)
            if error is not None:
                raise error
            return ProxyResponse(response.status, out_headers, body)
        if "text/event-stream" not in lowered.get("content-type", ""):
            return ProxyResponse(200, out_headers, await self._read_bounded(response, 64 << 20))
        return ProxyResponse(200, out_headers, self._stream(response))

    async def _read_bounded(self, response: aiohttp.ClientResponse, limit: int | None = None) -> bytes:
        limit = limit or self.error_body_bytes
        try:
            body = await response.content.read(limit)
        except aiohttp.ClientError:
            body = b""
        finally:
            response.close()
        return body

    async def _stream(self, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.content.iter_any():
                yield chunk
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"upstream stream broke ({type(exc).__name__})", code="upstream_stream_error",
                                phase="stream", retryable=False) from None
        finally:
            if response.content.at_eof():
                response.release()
            else:  # the client went away: drop the connection instead of reading the rest
                response.close()
