"""Minimal JWT helpers for tests: mint HS256 tokens and read payloads without verifying.

Codex and codex-lb decode token payloads without checking the signature, so a dummy key is enough.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

DUMMY_KEY = b"codexlb-fake-upstream-signing-key"


def b64url_encode(data: bytes) -> str:
    """Base64url without padding, as JWTs and PKCE use it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Inverse of :func:`b64url_encode`; tolerates missing padding."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_jwt(claims: dict[str, Any], *, key: bytes = DUMMY_KEY, header: dict[str, Any] | None = None) -> str:
    """Return ``header.payload.signature`` for ``claims``, signed HS256 with ``key``."""
    head = {"alg": "HS256", "typ": "JWT", **(header or {})}
    signing_input = ".".join(
        b64url_encode(json.dumps(part, separators=(",", ":")).encode()) for part in (head, claims)
    )
    signature = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url_encode(signature)}"


def decode_jwt(token: str) -> dict[str, Any]:
    """Return the payload of ``token`` without verifying it; raises ``ValueError`` if malformed."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a JWT")
    try:
        payload = json.loads(b64url_decode(parts[1]))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("JWT payload is not base64url JSON") from exc
    if not isinstance(payload, dict):
        raise ValueError("JWT payload is not an object")
    return payload


def verify_jwt(token: str, *, key: bytes = DUMMY_KEY) -> bool:
    """True if ``token`` carries a valid HS256 signature for ``key``."""
    head, _, rest = token.partition(".")
    payload, _, signature = rest.partition(".")
    expected = hmac.new(key, f"{head}.{payload}".encode("ascii"), hashlib.sha256).digest()
    try:
        return hmac.compare_digest(expected, b64url_decode(signature))
    except ValueError:
        return False


def pkce_challenge(verifier: str) -> str:
    """S256 code challenge for a PKCE ``verifier``."""
    return b64url_encode(hashlib.sha256(verifier.encode()).digest())


def codex_claims(
    *,
    chatgpt_account_id: str,
    email: str,
    plan_type: str = "plus",
    user_id: str = "user-fake",
    iat: int,
    exp: int,
    kind: str = "id",
    client_id: str = "app_EMoamEEZ73f0CkXaXp7hrann",
    jti: str | None = None,
) -> dict[str, Any]:
    """Claims as auth.openai.com puts them in an id token (``kind="id"``) or access token (``"access"``)."""
    auth: dict[str, Any] = {
        "chatgpt_account_id": chatgpt_account_id,
        "chatgpt_plan_type": plan_type,
        "chatgpt_user_id": user_id,
        "user_id": user_id,
    }
    profile = {"email": email, "email_verified": True}
    claims: dict[str, Any] = {
        "iss": "https://auth.openai.com",
        "sub": f"auth0|{user_id}",
        "iat": iat,
        "exp": exp,
        "https://api.openai.com/auth": auth,
        "https://api.openai.com/profile": profile,
    }
    if kind == "id":
        org = f"org-{chatgpt_account_id[:8]}"
        claims.update(aud=[client_id], email=email, email_verified=True, auth_time=iat)
        auth.update(
            organization_id=org,
            organizations=[{"id": org, "is_default": True, "role": "owner", "title": "Personal"}],
            completed_platform_onboarding=False,
            is_org_owner=True,
        )
    else:
        claims.update(
            aud=["https://api.openai.com/v1"],
            client_id=client_id,
            scp=["openid", "profile", "email", "offline_access"],
        )
    if jti is not None:
        claims["jti"] = jti
    return claims
