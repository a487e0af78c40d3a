"""Claims a proxy reads from OpenAI tokens (protocol.md §6.5); payloads are decoded, not verified."""

from __future__ import annotations

import base64
import functools
import json
from dataclasses import dataclass
from typing import Any

AUTH_CLAIM = "https://api.openai.com/auth"
PROFILE_CLAIM = "https://api.openai.com/profile"


def decode_payload(token: str | None) -> dict[str, Any]:
    """The JWT payload of ``token``; ``{}`` when it is missing or not a JWT."""
    if not token:
        return {}
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeDecodeError):
        return {}
    return payload if isinstance(payload, dict) else {}


@functools.lru_cache(maxsize=4096)
def expires_at(token: str | None) -> float | None:
    """The ``exp`` claim as unix time (``None`` when absent or unreadable); cached per token."""
    exp = decode_payload(token).get("exp")
    if isinstance(exp, bool):
        return None
    if isinstance(exp, int | float):
        return float(exp)
    if isinstance(exp, str) and exp.isdigit():
        return float(exp)
    return None


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a token set belongs to."""

    email: str | None
    chatgpt_account_id: str | None
    plan_type: str | None


def identity(id_token: str | None, access_token: str | None = None) -> Identity:
    """Email, ChatGPT account id and plan from the id token, falling back to the access token."""
    email = account_id = plan = None
    for claims in (decode_payload(id_token), decode_payload(access_token)):
        auth: dict[str, Any] = claims.get(AUTH_CLAIM) or {} if isinstance(claims.get(AUTH_CLAIM), dict) else {}
        profile: dict[str, Any] = (claims.get(PROFILE_CLAIM) or {}
                                   if isinstance(claims.get(PROFILE_CLAIM), dict) else {})
        email = email or _text(claims.get("email")) or _text(profile.get("email"))
        account_id = (account_id or _text(auth.get("chatgpt_account_id"))
                      or _text(claims.get("chatgpt_account_id")))
        plan = plan or _text(auth.get("chatgpt_plan_type")) or _text(claims.get("chatgpt_plan_type"))
    return Identity(email, account_id, plan)
