"""OAuth side of the fake (auth.openai.com, protocol.md §6): authorize, token, revoke, device code."""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from aiohttp import web

from codexlb.testing.fake_accounts import CLIENT_ID, FakeAccount
from codexlb.testing.fake_faults import REFRESH_ERROR_BODIES
from codexlb.testing.fake_records import recorded
from codexlb.testing.jwt import pkce_challenge

if TYPE_CHECKING:
    from codexlb.testing.fake_upstream import FakeUpstream

REAL_DEVICE_REDIRECT = "https://auth.openai.com/deviceauth/callback"
DEVICE_TTL = 15 * 60


@dataclass
class AuthCode:
    """An issued authorization code."""

    account: FakeAccount
    challenge: str
    redirect_uris: tuple[str, ...]
    used: bool = False


@dataclass
class DeviceCode:
    """A device-code login in progress."""

    device_auth_id: str
    user_code: str
    expires_at: float
    verifier: str
    account: FakeAccount | None = None
    denied: bool = False
    authorization_code: str | None = None


def oauth_error(status: int, error: str, description: str) -> web.Response:
    """``{"error": ..., "error_description": ...}`` with ``status``."""
    return web.json_response({"error": error, "error_description": description}, status=status)


def _redirect_allowed(uri: str) -> bool:
    parts = urlsplit(uri)
    local = parts.hostname in ("localhost", "127.0.0.1")
    return parts.scheme == "http" and local and parts.path == "/auth/callback"


class FakeOAuth:
    """Holds codes and device logins; its handlers are mounted by :class:`FakeUpstream`."""

    def __init__(self, upstream: FakeUpstream, *, device_interval: int = 5) -> None:
        self.up = upstream
        self.device_interval = device_interval
        self.codes: dict[str, AuthCode] = {}
        self.devices: dict[str, DeviceCode] = {}
        self.allowed_redirect_uris: set[str] | None = None

    def routes(self) -> list[web.RouteDef]:
        """Route table for the auth endpoints."""
        return [
            web.get("/oauth/authorize", self.authorize),
            web.post("/oauth/token", self.token),
            web.post("/oauth/revoke", self.revoke),
            web.post("/api/accounts/deviceauth/usercode", self.device_usercode),
            web.post("/api/accounts/deviceauth/token", self.device_token),
            web.get("/codex/device", self.device_page),
        ]

    # -- authorization code ------------------------------------------------------------------------

    def _login_account(self) -> FakeAccount:
        account = self.up.next_login or self.up.add_account()
        self.up.next_login = None
        return account

    def _issue_code(self, account: FakeAccount, challenge: str, redirect_uris: tuple[str, ...]) -> str:
        code = self.up.ids.make("ac_", 40)
        self.codes[code] = AuthCode(account, challenge, redirect_uris)
        return code

    async def authorize(self, request: web.Request) -> web.StreamResponse:
        """Validate the authorize query and redirect back with ``code`` and ``state``."""
        q = request.query
        redirect_uri = q.get("redirect_uri", "")
        allowed = self.allowed_redirect_uris
        if q.get("client_id") != CLIENT_ID:
            return oauth_error(400, "invalid_client", "Unknown client_id")
        if not (redirect_uri in allowed if allowed is not None else _redirect_allowed(redirect_uri)):
            return oauth_error(400, "invalid_request", "redirect_uri is not allowed for this client")
        if q.get("response_type") != "code":
            return oauth_error(400, "unsupported_response_type", "response_type must be 'code'")
        if not q.get("code_challenge") or q.get("code_challenge_method") != "S256":
            return oauth_error(400, "invalid_request", "PKCE with code_challenge_method=S256 is required")
        if not q.get("state"):
            return oauth_error(400, "invalid_request", "state is required")
        pending = self.up.next_login
        fault = self.up.take_fault(pending.chatgpt_account_id if pending else None, "authorize")
        sep = "&" if "?" in redirect_uri else "?"
        if fault is not None and fault.kind == "access_denied":
            query = {"error": "access_denied", "error_description": fault.message or "", "state": q["state"]}
            raise web.HTTPFound(redirect_uri + sep + urlencode(query))
        if fault is not None and (answer := await self.up.backend.generic_fault(request, fault)) is not None:
            return answer
        account = self._login_account()
        recorded(request).account_id = account.chatgpt_account_id
        code = self._issue_code(account, q["code_challenge"], (redirect_uri,))
        raise web.HTTPFound(redirect_uri + sep + urlencode({"code": code, "state": q["state"]}))

    # -- token endpoint ----------------------------------------------------------------------------

    @staticmethod
    def _form(request: web.Request) -> dict[str, Any]:
        """Form-encoded or JSON body (JSON when declared so or when it looks like an object)."""
        raw = recorded(request).body
        if "json" in request.content_type or raw.lstrip().startswith(b"{"):
            data = recorded(request).json
            return data if isinstance(data, dict) else {}
        return dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))

    def _account_for_refresh(self, token: str) -> tuple[FakeAccount | None, str]:
        for account in self.up.accounts.values():
            if token in account.revoked_tokens:
                return account, "revoked"
            if token == account.refresh_token:
                return account, "current"
            if token in account.old_refresh_tokens:
                return account, "old"
        return None, "unknown"

    async def token(self, request: web.Request) -> web.StreamResponse:
        """``grant_type=authorization_code`` (PKCE) or ``refresh_token`` (single-use, rotating)."""
        data = self._form(request)
        grant = data.get("grant_type")
        account: FakeAccount | None = None
        state = "unknown"
        if grant == "refresh_token":
            account, state = self._account_for_refresh(str(data.get("refresh_token", "")))
            self.up.refresh_calls += 1
            if account is not None:
                account.refresh_calls += 1
        elif grant == "authorization_code" and (entry := self.codes.get(str(data.get("code", "")))):
            account = entry.account
        account_id = account.chatgpt_account_id if account else None
        recorded(request).account_id = account_id
        fault = self.up.take_fault(account_id, "token")
        if fault is not None:
            if fault.kind in REFRESH_ERROR_BODIES:
                return web.json_response(REFRESH_ERROR_BODIES[fault.kind], status=fault.http_status or 401)
            if (answer := await self.up.backend.generic_fault(request, fault)) is not None:
                return answer
        if grant not in ("authorization_code", "refresh_token"):
            return oauth_error(400, "unsupported_grant_type", f"Unsupported grant_type: {grant}")
        if data.get("client_id") != CLIENT_ID:
            return oauth_error(401, "invalid_client", "Unknown or missing client_id")
        if grant == "authorization_code":
            return self._exchange_code(data)
        if account is None:
            return oauth_error(400, "invalid_grant", "Invalid refresh token")
        if state == "revoked":
            return web.json_response(REFRESH_ERROR_BODIES["refresh_token_invalidated"], status=401)
        if state == "old":
            return web.json_response(REFRESH_ERROR_BODIES["refresh_token_reused"], status=401)
        account.mint_tokens()
        return web.json_response(account.token_response())

    def _exchange_code(self, data: dict[str, Any]) -> web.Response:
        entry = self.codes.get(str(data.get("code", "")))
        if entry is None:
            return oauth_error(400, "invalid_grant", "Invalid authorization code")
        if entry.used:
            return oauth_error(400, "invalid_grant", "Authorization code has already been used")
        if data.get("redirect_uri") not in entry.redirect_uris:
            return oauth_error(400, "invalid_grant", "redirect_uri does not match the authorization request")
        verifier = str(data.get("code_verifier", ""))
        if not verifier or pkce_challenge(verifier) != entry.challenge:
            return oauth_error(400, "invalid_grant", "Invalid code_verifier")
        entry.used = True
        entry.account.mint_tokens()
        return web.json_response(entry.account.token_response())

    async def revoke(self, request: web.Request) -> web.StreamResponse:
        """Revoke a refresh or access token (later use: ``*_invalidated``)."""
        token = str(self._form(request).get("token", ""))
        for account in self.up.accounts.values():
            if token in (account.refresh_token, account.access_token):
                account.revoked_tokens.add(token)
                recorded(request).account_id = account.chatgpt_account_id
        return web.json_response({})

    # -- device code -------------------------------------------------------------------------------

    def _user_code(self) -> str:
        """A fresh ``ABCD-EFGH`` code."""
        while True:
            digest = self.up.ids.make("", 16)
            chars = "".join(string.ascii_uppercase[int(digest[i:i + 2], 16) % 26] for i in range(0, 16, 2))
            code = f"{chars[:4]}-{chars[4:]}"
            if code not in self.devices:
                return code

    async def device_usercode(self, request: web.Request) -> web.StreamResponse:
        """Start a device login: ``{"device_auth_id","user_code","interval"}`` (interval is a string)."""
        if self._form(request).get("client_id") != CLIENT_ID:
            return oauth_error(400, "invalid_client", "Unknown or missing client_id")
        fault = self.up.take_fault(None, "device")
        if fault is not None and (answer := await self.up.backend.generic_fault(request, fault)) is not None:
            return answer
        device = DeviceCode(
            device_auth_id=self.up.ids.make("deviceauth_", 32), user_code=self._user_code(),
            expires_at=self.up.clock() + DEVICE_TTL, verifier=self.up.ids.make("", 86),
        )
        self.devices[device.user_code] = device
        return web.json_response({"device_auth_id": device.device_auth_id, "user_code": device.user_code,
                                  "interval": str(self.device_interval), "expires_in": DEVICE_TTL})

    def find_device(self, user_code: str) -> DeviceCode:
        """The pending device login for ``user_code``; ``KeyError`` if unknown."""
        key = user_code.strip().upper()
        if key not in self.devices:
            raise KeyError(f"unknown user code {user_code!r}")
        return self.devices[key]

    def approve(self, user_code: str, account: FakeAccount | None = None) -> FakeAccount:
        """Approve a device login for ``account`` (else ``next_login`` or a new account)."""
        device = self.find_device(user_code)
        device.account = account or self._login_account()
        return device.account

    async def device_token(self, request: web.Request) -> web.StreamResponse:
        """Poll: 403 while pending, then ``{"authorization_code","code_challenge","code_verifier"}``."""
        data = self._form(request)
        user_code = str(data.get("user_code") or data.get("usercode") or "").upper()
        device = self.devices.get(user_code)
        fault = self.up.take_fault(None, "device")
        if fault is not None and (answer := await self.up.backend.generic_fault(request, fault)) is not None:
            return answer
        if device is None or device.device_auth_id != data.get("device_auth_id"):
            return web.json_response({"error": {"code": "invalid_request", "message": "Unknown device code"}},
                                     status=400)
        if self.up.clock() > device.expires_at:
            return web.json_response({"error": {"code": "expired_token", "message": "Device code expired"}},
                                     status=400)
        if device.denied:
            return web.json_response({"error": {"code": "access_denied", "message": "Login was denied"}},
                                     status=400)
        if device.account is None:
            return web.json_response(
                {"error": {"code": "deviceauth_authorization_pending", "message": "Authorization pending"},
                 "status": "pending"}, status=403)
        recorded(request).account_id = device.account.chatgpt_account_id
        challenge = pkce_challenge(device.verifier)
        if device.authorization_code is None:
            redirects = (f"{self.up.auth_base_url}/deviceauth/callback", REAL_DEVICE_REDIRECT)
            device.authorization_code = self._issue_code(device.account, challenge, redirects)
        return web.json_response({"authorization_code": device.authorization_code,
                                  "code_challenge": challenge, "code_verifier": device.verifier})

    async def device_page(self, request: web.Request) -> web.StreamResponse:
        """The page a user would open to type the code."""
        page = "<html><body><h1>Enter code</h1><form><input name=code></form></body></html>"
        return web.Response(text=page, content_type="text/html")
