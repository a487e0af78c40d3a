"""GET requests to the upstream on behalf of an account, with a hard timeout and retries with back-off.

Retried: transport errors, timeouts and the statuses :data:`RETRY_STATUSES` (as codex-lb does for
``/wham/usage``, protocol.md §3.1). Every other answer is returned to the caller to interpret.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_BODY_BYTES = 16 << 20


class FetchError(Exception):
    """The request failed after every attempt (message says how; never contains secrets)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A non-retried answer."""

    status: int
    headers: httpx.Headers
    body: bytes
    attempts: int

    def json(self) -> Any:
        """The decoded body (``ValueError`` when it is not JSON)."""
        return json.loads(self.body)

    def error_code(self) -> str:
        """``error.code``/``error.type``/``detail`` of an error body, lower-cased ('' when absent)."""
        try:
            data = self.json()
        except (ValueError, UnicodeDecodeError):
            return ""
        if not isinstance(data, dict):
            return ""
        err = data.get("error")
        if isinstance(err, dict):
            return str(err.get("code") or err.get("type") or "").lower()
        if isinstance(err, str):
            return err.lower()
        return str(data.get("detail") or "").lower()

    def message(self) -> str:
        """A short description of an error body for status reasons."""
        try:
            data = self.json()
        except (ValueError, UnicodeDecodeError):
            return ""
        if isinstance(data, dict):
            err = data.get("error")
            if isinstance(err, dict):
                return str(err.get("message") or err.get("code") or "")[:200]
            return str(data.get("detail") or err or "")[:200]
        return ""


def account_headers(token: str, chatgpt_account_id: str | None) -> dict[str, str]:
    """``Authorization`` + ``chatgpt-account-id`` (omitted when unknown) + ``Accept``."""
    headers = {"authorization": f"Bearer {token}", "accept": "application/json"}
    if chatgpt_account_id:
        headers["chatgpt-account-id"] = chatgpt_account_id
    return headers


async def get_with_retries(
    client: httpx.AsyncClient, url: str, *, headers: Mapping[str, str], params: Mapping[str, str] | None = None,
    timeout: float, retries: int, backoff: float = 0.5, backoff_max: float = 2.0,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> Answer:
    """GET ``url``; retry up to ``retries`` times, waiting ``backoff * 2**n`` (at most ``backoff_max``).

    Each attempt is bounded by ``timeout`` seconds in total (connect, send, read).

    :raises FetchError: every attempt failed with a retryable problem.
    """
    problem = "no attempt"
    for attempt in range(retries + 1):
        if attempt:
            await sleep(min(backoff * 2 ** (attempt - 1), backoff_max))
        try:
            async with asyncio.timeout(timeout):
                response = await client.get(url, headers=dict(headers), params=params,
                                            timeout=httpx.Timeout(timeout))
                body = await _read(response)
        except (TimeoutError, httpx.TimeoutException):
            problem = f"timed out after {timeout:g}s"
            continue
        except httpx.HTTPError as exc:
            problem = f"unreachable ({type(exc).__name__})"
            continue
        if response.status_code in RETRY_STATUSES:
            problem = f"HTTP {response.status_code}"
            continue
        return Answer(response.status_code, response.headers, body, attempt + 1)
    raise FetchError(f"{problem} (after {retries + 1} attempt{'s' if retries else ''})")


async def _read(response: httpx.Response) -> bytes:
    body = response.content
    if len(body) > MAX_BODY_BYTES:
        raise httpx.DecodingError("answer too large")
    return body
