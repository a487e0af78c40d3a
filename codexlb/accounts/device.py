"""Device-code login (protocol.md §6.4): for servers without a browser or a reachable callback port."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from codexlb.accounts.oauth import LoginError, OAuthTokens, describe_http_error, error_fields, exchange_code

if TYPE_CHECKING:
    from codexlb.settings import Settings

DEFAULT_INTERVAL = 5.0
DEFAULT_TTL = 900.0
PENDING_CODES = {"authorization_pending", "deviceauth_authorization_pending", "slow_down", "pending"}
MAX_TRANSIENT_ERRORS = 5


@dataclass(frozen=True, slots=True)
class DeviceLogin:
    """A started device login: show ``user_code`` and ``verification_url`` to the user."""

    device_auth_id: str = field(repr=False)
    user_code: str
    interval: float
    expires_at: float
    verification_url: str


def _number(value: Any, default: float) -> float:
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return default


def _base(settings: Settings) -> str:
    return settings.auth_base_url.rstrip("/")


async def start_device(settings: Settings, *, clock: Callable[[], float] = time.time) -> DeviceLogin:
    """Ask for a user code; :class:`LoginError` when device login is unavailable or fails."""
    url = f"{_base(settings)}/api/accounts/deviceauth/usercode"
    try:
        async with httpx.AsyncClient(timeout=settings.oauth_timeout_seconds) as http:
            response = await http.post(url, json={"client_id": settings.oauth_client_id})
    except httpx.HTTPError as exc:
        raise LoginError(f"device login failed: could not reach {url} ({type(exc).__name__}).",
                         "device_failed") from None
    if response.status_code == 404:
        raise LoginError("device login is not enabled for this client (HTTP 404); use `codexlb accounts login` "
                         "(browser) or `codexlb accounts login --manual`.", "device_unavailable")
    body: Any = None
    if response.status_code == 200:
        try:
            body = response.json()
        except ValueError:
            body = None
    user_code = (body.get("user_code") or body.get("usercode")) if isinstance(body, dict) else None
    if not isinstance(body, dict) or not body.get("device_auth_id") or not user_code:
        detail = describe_http_error(response) if response.status_code != 200 else "an incomplete answer"
        raise LoginError(f"device login failed: the auth server sent {detail}.", "device_failed")
    now = clock()
    expires_at = _number(body.get("expires_at"), 0.0) or now + _number(body.get("expires_in"), DEFAULT_TTL)
    return DeviceLogin(str(body["device_auth_id"]), str(user_code), _number(body.get("interval"), DEFAULT_INTERVAL),
                       expires_at, f"{_base(settings)}/codex/device")


async def poll_device(settings: Settings, device: DeviceLogin, *,
                      sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                      clock: Callable[[], float] = time.time) -> OAuthTokens:
    """Poll every ``device.interval`` seconds until approved, then exchange the code for tokens."""
    url = f"{_base(settings)}/api/accounts/deviceauth/token"
    interval, transient = device.interval, 0
    async with httpx.AsyncClient(timeout=settings.oauth_timeout_seconds) as http:
        while True:
            if clock() >= device.expires_at:
                raise LoginError("device login expired before the code was approved; nothing was stored. "
                                 "Run `codexlb accounts login --device` again.", "device_expired")
            try:
                response = await http.post(url, json={"device_auth_id": device.device_auth_id,
                                                      "user_code": device.user_code})
            except httpx.HTTPError as exc:
                response, transient = None, transient + 1
                if transient > MAX_TRANSIENT_ERRORS:
                    raise LoginError(f"device login failed: could not reach {url} ({type(exc).__name__}).",
                                     "device_failed") from None
            if response is not None:
                result = _poll_result(response)
                if isinstance(result, dict):
                    return await _exchange(settings, result)
                if result == "slow_down":
                    interval += 5
                transient = transient + 1 if result == "transient" else 0
                if transient > MAX_TRANSIENT_ERRORS:
                    raise LoginError(f"device login failed: the auth server keeps failing "
                                     f"({describe_http_error(response)}).", "device_failed")
            await sleep(interval)


def _poll_result(response: httpx.Response) -> dict[str, Any] | str:
    """The approval body, or ``pending`` / ``slow_down`` / ``transient``; raises for a final refusal."""
    if response.status_code == 200:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("authorization_code") and body.get("code_verifier"):
            return body
        raise LoginError("device login failed: the approval answer lacks the authorization code.", "device_failed")
    code, _ = error_fields(response)
    if code == "slow_down":
        return "slow_down"
    if response.status_code in (403, 404) or code in PENDING_CODES or _pending_status(response):
        return "pending"
    if response.status_code >= 500 or response.status_code == 429:
        return "transient"
    if code in ("access_denied", "authorization_declined"):
        raise LoginError("device login was denied in the browser; nothing was stored.", "device_denied")
    if code in ("expired_token", "device_code_expired"):
        raise LoginError("device login expired before the code was approved; nothing was stored. "
                         "Run `codexlb accounts login --device` again.", "device_expired")
    raise LoginError(f"device login failed: {describe_http_error(response)}; nothing was stored.", "device_failed")


def _pending_status(response: httpx.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("status") == "pending"


async def _exchange(settings: Settings, approval: dict[str, Any]) -> OAuthTokens:
    redirect = f"{_base(settings)}/deviceauth/callback"
    return await exchange_code(settings, str(approval["authorization_code"]), str(approval["code_verifier"]),
                               redirect)
