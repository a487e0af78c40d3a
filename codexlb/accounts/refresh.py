"""Token refresh (protocol.md §6.3): the request, which failures are permanent, and single flight.

:func:`refresh_stored` refreshes under :meth:`AccountStore.refresh_locked`, so processes sharing a
database refresh an account one at a time and a later one finds the fresh row instead of calling
the endpoint (refresh tokens are single-use: a second call would be refused as reused). The new
access and the rotated refresh token are written in that same transaction.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import httpx

from codexlb.accounts.claims import expires_at
from codexlb.accounts.oauth import error_fields
from codexlb.db.store import TokenSet
from codexlb.errors import CodexLBError
from codexlb.types import AccountStatus

if TYPE_CHECKING:
    from codexlb.db.store import AccountStore, StoredAccount
    from codexlb.settings import Settings

PERMANENT_CODES = frozenset({
    "refresh_token_expired", "refresh_token_reused", "refresh_token_invalidated", "invalid_grant",
    "token_invalidated", "token_expired", "app_session_terminated", "account_session_expired",
    "account_auth_invalidated", "account_deactivated", "account_suspended", "account_deleted",
})
"""Refusals that only a new login fixes (codex-lb's list; Codex also treats any 401 as permanent)."""
EXPIRY_MARGIN_SECONDS = 60.0
"""An access token this close to its ``exp`` counts as expired."""


class RefreshFailed(CodexLBError):
    """A refresh did not produce tokens. ``permanent``: the account needs a new login."""

    def __init__(self, reason: str, *, permanent: bool) -> None:
        super().__init__(reason)
        self.reason, self.permanent = reason, permanent


def token_expired(access_token: str | None, now: float | None = None) -> bool:
    """Whether the access token's ``exp`` has passed (tokens without a readable ``exp`` never expire here)."""
    exp = expires_at(access_token)
    return exp is not None and exp - EXPIRY_MARGIN_SECONDS <= (time.time() if now is None else now)


def refresh_due(settings: Settings, access_token: str | None, refreshed_at: float | None,
                now: float | None = None) -> bool:
    """Due when the token expired or the last refresh is older than ``TOKEN_REFRESH_INTERVAL_DAYS``."""
    now = time.time() if now is None else now
    if token_expired(access_token, now):
        return True
    return refreshed_at is not None and now - refreshed_at >= settings.token_refresh_interval_days * 86400


async def request_refresh(settings: Settings, refresh_token: str) -> TokenSet:
    """POST the refresh (JSON, protocol.md §6.3); raises :class:`RefreshFailed` (message without tokens)."""
    url = f"{settings.auth_base_url.rstrip('/')}/oauth/token"
    body = {"client_id": settings.oauth_client_id, "grant_type": "refresh_token",
            "refresh_token": refresh_token, "scope": settings.oauth_scope}
    timeout = settings.token_refresh_timeout_seconds
    try:
        async with httpx.AsyncClient(timeout=timeout) as http:
            response = await http.post(url, json=body, headers={"accept": "application/json"})
    except httpx.TimeoutException:
        raise RefreshFailed(f"timed out after {timeout:g} s", permanent=False) from None
    except httpx.HTTPError as exc:
        raise RefreshFailed(f"token endpoint unreachable ({type(exc).__name__})", permanent=False) from None
    if response.status_code == 200:
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("access_token"), str):
            raise RefreshFailed("the token endpoint answered 200 without an access token", permanent=False)
        return TokenSet(access_token=data["access_token"], refresh_token=data.get("refresh_token") or None,
                        id_token=data.get("id_token") or None)
    code, _ = error_fields(response)
    reason = f"{code} (HTTP {response.status_code})" if code else f"HTTP {response.status_code}"
    raise RefreshFailed(reason, permanent=code in PERMANENT_CODES or response.status_code == 401)


async def refresh_stored(store: AccountStore, settings: Settings, account_id: str, *,
                         stale_token: str | None, force: bool) -> StoredAccount:
    """Refresh one account under its row lock and return the current row.

    No call is made when another holder already replaced ``stale_token`` (forced refresh after a
    401) or when the stored tokens are not due (refresh before use).

    :raises RefreshFailed: the endpoint refused or failed; nothing was written.
    :raises KeyError: the account no longer exists.
    """
    async def refresh(row: StoredAccount) -> TokenSet | None:
        if stale_token is not None and row.access_token != stale_token:
            return None
        if not force and not refresh_due(settings, row.access_token, row.token_refreshed_at):
            return None
        if row.status is AccountStatus.REAUTH_REQUIRED:
            raise RefreshFailed(row.status_reason or "the account needs a new login", permanent=True)
        if not row.refresh_token:
            raise RefreshFailed("no refresh token stored", permanent=True)
        return await request_refresh(settings, row.refresh_token)

    return await store.refresh_locked(account_id, refresh)
