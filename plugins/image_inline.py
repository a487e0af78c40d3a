"""Fetch images that requests reference by http(s) URL and inline them as ``data:`` URLs.

Hooks: ``configure``, ``shutdown``, ``transform_request``.

When ``IMAGE_INLINE_FETCH_ENABLED``, image parts with an http(s) URL are fetched and replaced:
Responses ``{"type": "input_image", "image_url": "https://..."}`` and chat
``{"type": "image_url", "image_url": {"url": "https://..."}}`` parts anywhere under ``input``
or ``messages`` (the chat translation runs later, so both shapes are handled here). The
payload is re-serialised only when something was inlined.

Guards (each hop of a redirect chain is checked again):
- scheme http or https; host in ``IMAGE_INLINE_ALLOWED_HOSTS`` when that is set (exact name,
  or ``*.example.com`` for its subdomains);
- SSRF: the name is resolved once and refused if any address is loopback, private,
  link-local (169.254.169.254), shared/CGNAT, multicast, reserved, unspecified, or an IPv6
  form embedding one (IPv4-mapped/compatible/translated, NAT64, 6to4); the connection goes to
  the checked address (TLS SNI and Host stay the name). IP literals are checked directly.
  Proxy environment variables, cookies and response compression are not used;
- answer: status 200, ``Content-Type: image/*``, at most ``max_bytes``, within ``timeout_seconds``.
A refused image is 400 ``image_fetch_refused``, a failed one 400 ``image_fetch_failed``; the
message names the host and the reason, never the full URL (it may carry tokens).

Settings table ``[plugins.image_inline]``:
- ``max_bytes`` (int, default 10485760): largest image.
- ``timeout_seconds`` (float, default 10): limit for one image, redirects included.
- ``max_redirects`` (int, default 3): redirects followed per image.
- ``max_images`` (int, default 16): http(s) images per request; more is refused.
Core settings used: ``IMAGE_INLINE_FETCH_ENABLED``, ``IMAGE_INLINE_ALLOWED_HOSTS``.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
import yarl

from codexlb import BadRequest, Flow, hookimpl
from codexlb.options import PluginOptions
from plugins._ssrf import (
    AddressPolicy,
    FetchRefused,
    GuardedResolver,
    Lookup,
    check_literal,
    refusal_reason,
    system_lookup,
)

if TYPE_CHECKING:
    from codexlb.settings import Settings

log = logging.getLogger("codexlb.plugins.image_inline")
NUMERIC_HOST = re.compile(r"(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}\.?", re.IGNORECASE)
"""``inet_aton`` forms (``2130706433``, ``127.1``, ``0x7f.0.0.1``, ``0177.0.0.1``) that name IPs."""
REDIRECTS = frozenset({301, 302, 303, 307, 308})
OPTIONS: dict[str, tuple[type, float, float | None]] = {
    "max_bytes": (int, 1, None), "timeout_seconds": (float, 0.001, None),
    "max_redirects": (int, 0, 20), "max_images": (int, 1, 1000),
}


class FetchFailed(Exception):
    """The image could not be fetched (network, HTTP status, timeout)."""


Ref = tuple[dict[str, Any], str]
"""Where a URL lives: the dict and its key (``image_url`` or ``url``)."""


def image_refs(payload: Mapping[str, Any]) -> list[tuple[Ref, str]]:
    """Every http(s) image URL under ``input``/``messages`` with the place to write its replacement."""
    found: list[tuple[Ref, str]] = []
    stack: list[Any] = [payload.get("messages"), payload.get("input")]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(reversed(node))
        elif isinstance(node, dict):
            kind = node.get("type")
            if kind in ("input_image", "image_url"):
                value = node.get("image_url")
                ref: Ref | None = None
                if isinstance(value, str):
                    ref = (node, "image_url")
                elif isinstance(value, dict) and isinstance(value.get("url"), str):
                    ref = (value, "url")
                if ref is not None and ref[0][ref[1]][:8].lower().startswith(("http://", "https://")):
                    found.append((ref, ref[0][ref[1]]))
            else:
                stack.extend(v for v in node.values() if isinstance(v, list | dict))
    return found


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    for entry in allowed:
        if host == entry or (entry.startswith("*.") and host.endswith(entry[1:])):
            return True
    return False


class ImageInline:
    """Inlines remote images; ``policy`` and ``lookup`` may be replaced (tests serve images on loopback)."""

    name = "image_inline"

    def __init__(self, *, policy: AddressPolicy = refusal_reason, lookup: Lookup = system_lookup) -> None:
        self.policy, self.lookup = policy, lookup
        self.enabled = True
        self.allowed_hosts: tuple[str, ...] = ()
        self.max_bytes, self.timeout, self.max_redirects, self.max_images = 10 << 20, 10.0, 3, 16
        self.session: aiohttp.ClientSession | None = None

    @hookimpl
    def configure(self, config: Mapping[str, Any], settings: Settings) -> None:
        options = PluginOptions("image_inline", config, OPTIONS)
        for key, (kind, low, high) in OPTIONS.items():
            default = {"max_bytes": self.max_bytes, "timeout_seconds": self.timeout,
                       "max_redirects": self.max_redirects, "max_images": self.max_images}[key]
            value = options.number(key, default, low=low, high=high, integer=kind is int)
            setattr(self, {"timeout_seconds": "timeout"}.get(key, key), value)
        self.enabled = settings.image_inline_fetch_enabled
        self.allowed_hosts = tuple(h.strip().lower().rstrip(".") for h in settings.image_inline_allowed_hosts
                                   if h.strip())

    @hookimpl
    async def shutdown(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    @hookimpl
    async def transform_request(self, flow: Flow) -> None:
        payload, body = flow.request.payload, flow.request.body
        if not self.enabled or not payload or (body is not None and b"image_url" not in body):
            return
        refs = image_refs(payload)
        if not refs:
            return
        urls = list(dict.fromkeys(url for _, url in refs))
        if len(urls) > self.max_images:
            raise BadRequest(f"too many image URLs to fetch ({len(urls)} > {self.max_images}); "
                             "send images as data: URLs", code="image_fetch_refused")
        inlined = await self._fetch_all(urls)
        for (container, key), url in refs:
            container[key] = inlined[url]
        flow.request.payload_modified = True

    async def _fetch_all(self, urls: list[str]) -> dict[str, str]:
        """Fetch concurrently; the first failure cancels the others and is raised."""
        if len(urls) == 1:
            return {urls[0]: await self._fetch_reported(1, urls[0])}
        try:
            async with asyncio.TaskGroup() as group:
                tasks = {url: group.create_task(self._fetch_reported(n, url)) for n, url in enumerate(urls, 1)}
        except* BadRequest as failures:
            raise failures.exceptions[0] from None
        return {url: task.result() for url, task in tasks.items()}

    async def _fetch_reported(self, n: int, url: str) -> str:
        host = _host_of(url)
        try:
            return await self.fetch(url)
        except FetchRefused as exc:
            log.info("image %d from %s refused: %s", n, host, exc)
            raise BadRequest(f"image {n} (host {host}) refused: {exc}", code="image_fetch_refused") from None
        except (FetchFailed, aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            reason = str(exc) if isinstance(exc, FetchFailed) else _describe(exc)
            log.info("image %d from %s failed: %s", n, host, reason)
            raise BadRequest(f"image {n} (host {host}) could not be fetched: {reason}",
                             code="image_fetch_failed") from None

    def _client(self) -> aiohttp.ClientSession:
        if self.session is None or self.session.closed:
            connector = aiohttp.TCPConnector(resolver=GuardedResolver(self.policy, self.lookup), use_dns_cache=False,
                                             limit=64)
            self.session = aiohttp.ClientSession(
                connector=connector, trust_env=False, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
                headers={"Accept": "image/*", "Accept-Encoding": "identity", "User-Agent": "codexlb-image-inline"})
        return self.session

    async def fetch(self, url: str) -> str:
        """The image at ``url`` as a ``data:`` URL; raises :class:`FetchRefused` or :class:`FetchFailed`."""
        async with asyncio.timeout(self.timeout):
            current = yarl.URL(url)
            for _ in range(self.max_redirects + 1):
                self._check(current)
                async with self._client().get(current, allow_redirects=False) as response:
                    if response.status in REDIRECTS:
                        location = response.headers.get("location")
                        if not location:
                            raise FetchFailed(f"HTTP {response.status} without a Location")
                        current = current.join(yarl.URL(location))
                        continue
                    return await self._read(response)
            raise FetchRefused(f"more than {self.max_redirects} redirects")

    def _check(self, url: yarl.URL) -> None:
        if url.scheme not in ("http", "https") or not url.raw_host:
            raise FetchRefused(f"only http(s) URLs with a host are fetched, not {url.scheme or 'no'} scheme")
        host = url.raw_host
        if self.allowed_hosts and not (host_allowed(host, self.allowed_hosts)
                                       or host_allowed(url.host or "", self.allowed_hosts)):
            raise FetchRefused(f"host {host} is not in IMAGE_INLINE_ALLOWED_HOSTS")
        if NUMERIC_HOST.fullmatch(host):
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise FetchRefused(f"host {host} is a non-canonical IP address") from None
        check_literal(host, self.policy)

    async def _read(self, response: aiohttp.ClientResponse) -> str:
        if response.status != 200:
            raise FetchFailed(f"HTTP {response.status}")
        ctype = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if not ctype.startswith("image/") or not ctype[6:]:
            raise FetchRefused(f"content type {ctype or 'none'!r} is not image/*")
        if response.headers.get("content-encoding", "identity").lower() not in ("identity", ""):
            raise FetchRefused("compressed image answers are not accepted")
        if response.content_length is not None and response.content_length > self.max_bytes:
            raise FetchRefused(f"image is larger than {self.max_bytes} bytes")
        data = bytearray()
        async for chunk in response.content.iter_chunked(64 * 1024):
            data += chunk
            if len(data) > self.max_bytes:
                raise FetchRefused(f"image is larger than {self.max_bytes} bytes")
        return f"data:{ctype};base64,{base64.b64encode(data).decode()}"


def _host_of(url: str) -> str:
    try:
        return yarl.URL(url).raw_host or "?"
    except ValueError:
        return "?"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "cannot resolve the host"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error.strerror or type(exc.os_error).__name__})"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return "the server closed the connection early"
    return type(exc).__name__
