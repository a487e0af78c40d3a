"""OAuth with auth.openai.com (protocol.md §6): PKCE, the authorize URL, callbacks, the code exchange.

Every failure is a :class:`LoginError` whose message says what happened and what to do; no message
ever contains a token, a code or a verifier.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx

from codexlb.errors import CodexLBError

if TYPE_CHECKING:
    from codexlb.settings import Settings

ORIGINATOR = "codex_cli_rs"
ENTITLEMENT_HINT = "missing_codex_entitlement"


class LoginError(CodexLBError):
    """A login failed; ``code`` is stable (``port_in_use``, ``state_mismatch``, ``provider_error``,
    ``timeout``, ``exchange_failed``, ``bad_callback``, ``device_*``), the message is for people."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message, self.code = message, code


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True, repr=False)
class Pkce:
    """PKCE verifier and challenge (S256) plus the ``state`` of one login."""

    verifier: str
    challenge: str
    state: str

    @classmethod
    def new(cls) -> Pkce:
        """64 random bytes for the verifier (86 chars) and 32 for the state, as Codex does."""
        verifier = b64url(secrets.token_bytes(64))
        return cls(verifier, b64url(hashlib.sha256(verifier.encode("ascii")).digest()),
                   b64url(secrets.token_bytes(32)))

    def __repr__(self) -> str:
        return "Pkce(***)"


@dataclass(frozen=True, slots=True)
class OAuthTokens:
    """The token triple from the token endpoint."""

    access_token: str
    refresh_token: str | None
    id_token: str | None

    def __repr__(self) -> str:
        return "OAuthTokens(***)"


def authorize_url(settings: Settings, pkce: Pkce, redirect_uri: str) -> str:
    """``{AUTH_BASE_URL}/oauth/authorize?...`` with the parameters of protocol.md §6.1."""
    params = {
        "response_type": "code", "client_id": settings.oauth_client_id, "redirect_uri": redirect_uri,
        "scope": settings.oauth_scope, "code_challenge": pkce.challenge, "code_challenge_method": "S256",
        "id_token_add_organizations": "true", "codex_cli_simplified_flow": "true", "state": pkce.state,
        "originator": ORIGINATOR,
    }
    return f"{settings.auth_base_url.rstrip('/')}/oauth/authorize?{urlencode(params)}"


def parse_callback(text: str) -> dict[str, str]:
    """The query of a pasted callback: a whole URL, ``?code=..&state=..`` or ``code=..&state=..``."""
    text = text.strip()
    if "://" in text:
        parts = urlsplit(text)
        query = parts.query or parts.fragment
    else:
        query = text.split("?", 1)[1] if "?" in text else text
    return dict(parse_qsl(query, keep_blank_values=True))


def check_callback(query: dict[str, str], state: str) -> str:
    """The authorization code of a callback query; raises :class:`LoginError` for anything else."""
    if not secrets.compare_digest(query.get("state", "").encode(), state.encode()):
        raise LoginError("login failed: the callback's state does not match this login (an old or foreign "
                         "browser tab, or a pasted URL from another attempt); nothing was stored. Start the "
                         "login again.", "state_mismatch")
    if query.get("error"):
        description = query.get("error_description", "")[:300]
        message = f"login failed: the provider answered error {query['error']!r}"
        message += f" ({description})" if description else ""
        if ENTITLEMENT_HINT in description:
            message += ": this ChatGPT workspace has no Codex access"
        raise LoginError(message + "; nothing was stored.", "provider_error")
    code = query.get("code", "")
    if not code:
        raise LoginError("login failed: the callback has neither a code nor an error; paste the whole URL "
                         "the browser was redirected to.", "bad_callback")
    return code


def error_fields(response: httpx.Response) -> tuple[str | None, str | None]:
    """``(code, description)`` of a token-endpoint error body (``error`` as string or object, or ``code``)."""
    try:
        body: Any = response.json()
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    error, code, description = body.get("error"), None, body.get("error_description")
    if isinstance(error, dict):
        code, description = error.get("code") or error.get("type"), description or error.get("message")
    elif isinstance(error, str):
        code = error
    code = code or body.get("code")
    return (str(code) if code else None,
            str(description)[:300] if isinstance(description, str) and description else None)


def describe_http_error(response: httpx.Response) -> str:
    """``HTTP 400 invalid_grant: Invalid code_verifier`` (never the body as a whole)."""
    code, description = error_fields(response)
    text = f"HTTP {response.status_code}"
    text += f" {code}" if code else ""
    return text + (f": {description}" if description else "")


def read_tokens(response: httpx.Response, what: str) -> OAuthTokens:
    """The token triple of a 200 answer; raises :class:`LoginError` when the access token is missing."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
        raise LoginError(f"{what} failed: the token endpoint answered without an access token.",
                         "exchange_failed")
    return OAuthTokens(body["access_token"], body.get("refresh_token") or None, body.get("id_token") or None)


async def post_token(settings: Settings, what: str, *, data: dict[str, str] | None = None,
                     json: dict[str, str] | None = None, timeout: float | None = None) -> httpx.Response:
    """POST to ``{AUTH_BASE_URL}/oauth/token``; transport failures become :class:`LoginError`."""
    url = f"{settings.auth_base_url.rstrip('/')}/oauth/token"
    timeout = settings.oauth_timeout_seconds if timeout is None else timeout
    try:
        async with httpx.AsyncClient(timeout=timeout) as http:
            return await http.post(url, data=data, json=json, headers={"accept": "application/json"})
    except httpx.TimeoutException:
        raise LoginError(f"{what} failed: the token endpoint {url} did not answer within {timeout:g} s "
                         "(CODEX_LB_OAUTH_TIMEOUT_SECONDS); nothing was stored.", "timeout") from None
    except httpx.HTTPError as exc:
        raise LoginError(f"{what} failed: could not reach the token endpoint {url} "
                         f"({type(exc).__name__}); nothing was stored.", "exchange_failed") from None


async def exchange_code(settings: Settings, code: str, verifier: str, redirect_uri: str) -> OAuthTokens:
    """Exchange an authorization code (form-encoded, protocol.md §6.2)."""
    response = await post_token(settings, "login", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
        "client_id": settings.oauth_client_id, "code_verifier": verifier})
    if response.status_code != 200:
        raise LoginError(f"login failed: the token endpoint refused the code ({describe_http_error(response)}); "
                         "nothing was stored. Start the login again.", "exchange_failed")
    return read_tokens(response, "login")
