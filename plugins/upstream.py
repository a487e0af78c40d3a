"""Send flows to the ChatGPT backend as the chosen account and stream the answer back.

Hooks: ``startup``/``shutdown`` (one shared ``aiohttp.ClientSession``), ``send_upstream``.
It talks aiohttp directly: the httpx layer over the aiohttp transport measured ~0.37 ms CPU per
streamed request inside the full pipeline (``bench/RESULTS.md``), above design.md's 0.15 ms bar.
Only the client headers the backend uses pass through (:data:`FORWARD_REQUEST` and the
``x-codex-*`` / ``x-openai-*`` families: what the captured Codex requests send); everything else
(the client's credentials, cookies, forwarding headers, SDK fingerprints, unknown headers) stays
here. ``authorization`` is the attempt's token (the core hands it in) and ``chatgpt-account-id``
the account's id. The answer goes back as received; the core applies its rate-limit headers and
classifies failed answers. Transport failures are reported with the constructors of
:mod:`codexlb.upstream_errors`, so the core can fail over.

Settings table ``[plugins.upstream]``:
- ``max_connections`` (int, default 1000): connection pool size towards the upstream.
- ``error_body_bytes`` (int, default 65536): how much of an error answer is read.
Core settings used: ``UPSTREAM_BASE_URL``, ``UPSTREAM_CONNECT_TIMEOUT_SECONDS``, and
``STREAM_IDLE_TIMEOUT_SECONDS`` as the longest wait for the response head and for each read of a
non-streamed body (the core bounds streamed answers).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import aiohttp

from codexlb import Flow, ProxyResponse, hookimpl
from codexlb.memo import Learnt
from codexlb.options import PluginOptions
from codexlb.streaming import Watch
from codexlb.upstream_errors import body_broken, body_stalled, stream_broken, unreachable, upstream_timeout

if TYPE_CHECKING:
    from codexlb.settings import Settings
    from codexlb.types import Account, AppView

FORWARD_REQUEST = frozenset({
    "accept", "user-agent", "originator", "version", "openai-beta",
    "session-id", "thread-id", "session_id", "conversation_id", "x-client-request-id",
})
"""Client headers sent upstream (besides the prefixes below); older Codex spells the ids with ``_``."""
FORWARD_PREFIXES = ("x-codex-", "x-openai-")
LARGE_BODY_BYTES = 1 << 20
"""Request bodies above this are sent from a ``BytesIO`` in chunks (aiohttp warns about larger bytes)."""
DROP_RESPONSE = frozenset({
    "connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "set-cookie",
    "date", "server", "alt-svc", "proxy-authenticate", "trailer", "upgrade",
})


_PASSES: Learnt[str, bool] = Learnt(lambda name: name.lower() not in DROP_RESPONSE)
"""Whether an answer header passes, by its name as received."""


def forward_headers(headers: Mapping[str, str], token: str, chatgpt_account_id: str | None) -> dict[str, str]:
    """Request headers for the upstream: the allowlisted ones of the client's, with our credentials.

    :param headers: the client's headers, names lower-cased.
    """
    out = {k: v for k, v in headers.items() if k in FORWARD_REQUEST or k.startswith(FORWARD_PREFIXES)}
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
    async def startup(self, app: AppView) -> None:
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
    async def send_upstream(self, flow: Flow, account: Account, token: str, app: AppView) -> ProxyResponse:
        assert self.session is not None, "upstream plugin not started"
        url = app.settings.upstream_base_url.rstrip("/") + flow.upstream_path
        headers = forward_headers(flow.request.headers, token, account.chatgpt_account_id)
        content: bytes | io.BytesIO | None = None
        if flow.upstream_method == "GET":
            query = flow.request.query or f"client_version={app.settings.model_registry_client_version}"
            url = f"{url}?{query}"
        else:
            content = flow.request.forward_body()
            if len(content) > LARGE_BODY_BYTES:  # aiohttp writes bytes in one go: stream large ones
                content = io.BytesIO(content)
            headers["content-type"] = "application/json"
        watch = Watch()  # one timer, cheaper than an asyncio.timeout scope
        watch.arm(watch.loop.time() + app.settings.stream_idle_timeout_seconds)
        try:
            response = await self.session.request(flow.upstream_method, url, headers=headers, data=content,
                                                  allow_redirects=False)
        except asyncio.CancelledError:
            if watch.expired():
                raise upstream_timeout() from None
            raise
        except TimeoutError:  # aiohttp's connect timeout
            raise upstream_timeout() from None
        except aiohttp.ClientError as exc:
            raise unreachable(type(exc).__name__) from None
        finally:
            watch.close()
        passes = _PASSES
        out_headers = [(k, v) for k, v in response.headers.items() if passes[k]]
        if response.status != 200:
            return ProxyResponse(response.status, out_headers, await self._read_bounded(response))
        if "text/event-stream" not in response.headers.get("content-type", ""):
            return ProxyResponse(200, out_headers, await self._read_bounded(response, 64 << 20, whole=True))
        return ProxyResponse(200, out_headers, StreamedBody(response))

    async def _read_bounded(self, response: aiohttp.ClientResponse, limit: int | None = None, *,
                            whole: bool = False) -> bytes:
        """Up to ``limit`` bytes of a body, each wait bounded by the idle timeout.

        ``whole``: the body is the answer, so a broken or silent one is an error (nothing has
        reached the client, so the core may fail over); otherwise what arrived is returned.
        """
        limit = limit or self.error_body_bytes
        idle = self.settings.stream_idle_timeout_seconds
        chunks: list[bytes] = []
        size = 0
        try:
            while size < limit:
                async with asyncio.timeout(idle):
                    chunk = await response.content.read(limit - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        except TimeoutError:
            if whole:
                raise body_stalled(idle) from None
        except aiohttp.ClientError as exc:
            if whole:
                raise body_broken(type(exc).__name__) from None
        finally:
            response.close()
        return b"".join(chunks)


class StreamedBody:
    """A streamed answer's body: each read is one ``readany`` (an iterator object, not a generator).

    At the end the connection goes back to the pool; closed before the end (the client went
    away, or an error), the connection is dropped instead of reading the rest.
    """

    __slots__ = ("response", "closed")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.closed = False

    def __aiter__(self) -> StreamedBody:
        return self

    async def __anext__(self) -> bytes:
        if self.closed:
            raise StopAsyncIteration
        try:
            chunk = await self.response.content.readany()
        except aiohttp.ClientError as exc:
            self.aclose_now()
            raise stream_broken(type(exc).__name__) from None
        except BaseException:
            self.aclose_now()
            raise
        if not chunk:
            self.aclose_now()
            raise StopAsyncIteration
        return chunk

    def aclose_now(self) -> None:
        if not self.closed:
            self.closed = True
            if self.response.content.at_eof():
                self.response.release()
            else:  # the client went away: drop the connection instead of reading the rest
                self.response.close()

    async def aclose(self) -> None:
        self.aclose_now()
