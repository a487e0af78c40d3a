"""Per-account state of the fake upstream: tokens, usage windows, credits and counters.

One :class:`FakeAccount` drives every view of the account (protocol.md §3.3): the ``x-codex-*``
headers, the ``codex.rate_limits`` event, ``/wham/usage`` and the 429 ``usage_limit_reached`` body.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from codexlb.testing.jwt import codex_claims, make_jwt
from codexlb.testing.secrets import register_secret

CLIENT_ID = "app_EMoamEEZ73f0CkXaXp7hrann"


def fmt_percent(value: float) -> str:
    """Header form of a percentage: ``"37.4"``, ``"100"``."""
    value = round(value, 2)
    return str(int(value)) if value == int(value) else str(value)


def json_percent(value: float) -> float | int:
    """JSON form of a percentage (int when whole)."""
    value = round(value, 2)
    return int(value) if value == int(value) else value


@dataclass
class Window:
    """One rate-limit window (primary = short, secondary = weekly)."""

    used_percent: float
    window_minutes: int
    reset_at: int

    def roll(self, now: float) -> None:
        """Start a fresh window once ``reset_at`` has passed."""
        if now >= self.reset_at:
            periods = int((now - self.reset_at) // (self.window_minutes * 60)) + 1
            self.reset_at += periods * self.window_minutes * 60
            self.used_percent = 0.0

    def header_items(self, prefix: str, now: float) -> list[tuple[str, str]]:
        """``<prefix>-used-percent`` / ``-window-minutes`` / ``-reset-after-seconds`` / ``-reset-at``."""
        return [
            (f"{prefix}-used-percent", fmt_percent(self.used_percent)),
            (f"{prefix}-window-minutes", str(self.window_minutes)),
            (f"{prefix}-reset-after-seconds", str(max(0, self.reset_at - int(now)))),
            (f"{prefix}-reset-at", str(self.reset_at)),
        ]

    def usage_json(self, now: float) -> dict[str, Any]:
        """The window as ``/wham/usage`` shows it."""
        return {
            "used_percent": json_percent(self.used_percent),
            "limit_window_seconds": self.window_minutes * 60,
            "reset_after_seconds": max(0, self.reset_at - int(now)),
            "reset_at": self.reset_at,
        }

    def event_json(self, now: float) -> dict[str, Any]:
        """The window as the ``codex.rate_limits`` event shows it."""
        return {
            "used_percent": json_percent(self.used_percent),
            "window_minutes": self.window_minutes,
            "reset_after_seconds": max(0, self.reset_at - int(now)),
            "reset_at": self.reset_at,
        }


@dataclass
class FakeAccount:
    """A ChatGPT account known to the fake. Mutate its fields freely from tests."""

    chatgpt_account_id: str
    email: str
    plan_type: str
    user_id: str
    clock: Callable[[], float]
    access_token_ttl: int = 10 * 24 * 3600
    primary: Window | None = None
    secondary: Window | None = None
    credits_has_credits: bool = False
    credits_unlimited: bool = False
    credits_balance: str = "0"
    primary_step: float = 0.1
    secondary_step: float = 0.01
    access_token: str = ""
    refresh_token: str = ""
    id_token: str = ""
    access_token_exp: int = 0
    last_refresh: float = 0.0
    responses_served: int = 0
    refresh_calls: int = 0
    token_generation: int = 0
    old_access_tokens: set[str] = field(default_factory=set)
    old_refresh_tokens: set[str] = field(default_factory=set)
    revoked_tokens: set[str] = field(default_factory=set)
    prompt_cache: dict[str, int] = field(default_factory=dict)

    # -- tokens ------------------------------------------------------------------------------------

    def mint_tokens(self, *, access_exp: int | None = None) -> None:
        """Issue a fresh token triple; the previous access/refresh tokens become stale."""
        now = int(self.clock())
        if self.access_token:
            self.old_access_tokens.add(self.access_token)
        if self.refresh_token:
            self.old_refresh_tokens.add(self.refresh_token)
        self.token_generation += 1
        gen = self.token_generation
        self.access_token_exp = access_exp if access_exp is not None else now + self.access_token_ttl
        common: dict[str, Any] = {
            "chatgpt_account_id": self.chatgpt_account_id, "email": self.email,
            "plan_type": self.plan_type, "user_id": self.user_id, "iat": now,
        }
        self.id_token = make_jwt(codex_claims(**common, exp=now + 3600, kind="id"))
        self.access_token = make_jwt(
            codex_claims(**common, exp=self.access_token_exp, kind="access", jti=f"{self.user_id}-{gen}")
        )
        digest = hashlib.sha256(f"{self.chatgpt_account_id}:{gen}".encode()).hexdigest()
        self.refresh_token = f"rt_{digest[:40]}"
        self.last_refresh = self.clock()
        register_secret(self.access_token, self.refresh_token, self.id_token)  # must never appear in logs

    def expire_access_token(self) -> None:
        """Re-mint the access token with an ``exp`` in the past (the refresh token stays valid)."""
        refresh = self.refresh_token
        self.mint_tokens(access_exp=int(self.clock()) - 60)
        self.old_refresh_tokens.discard(refresh)
        self.refresh_token = refresh

    def headers(self) -> dict[str, str]:
        """``Authorization`` + ``chatgpt-account-id`` for calling the backend as this account."""
        return {"Authorization": f"Bearer {self.access_token}", "chatgpt-account-id": self.chatgpt_account_id}

    def token_response(self) -> dict[str, Any]:
        """Body of a successful ``/oauth/token`` answer."""
        return {
            "id_token": self.id_token,
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "expires_in": max(0, self.access_token_exp - int(self.clock())),
            "token_type": "Bearer",
            "scope": "openid profile email offline_access",
        }

    def auth_json(self) -> dict[str, Any]:
        """A Codex ``~/.codex/auth.json`` document for this account (protocol.md §7)."""
        stamp = datetime.fromtimestamp(self.last_refresh or self.clock(), UTC)
        return {
            "auth_mode": "chatgpt",
            "OPENAI_API_KEY": None,
            "tokens": {
                "id_token": self.id_token,
                "access_token": self.access_token,
                "refresh_token": self.refresh_token,
                "account_id": self.chatgpt_account_id,
            },
            "last_refresh": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }

    # -- usage -------------------------------------------------------------------------------------

    def windows(self) -> tuple[Window | None, Window | None]:
        """Both windows, rolled forward to the current time."""
        now = self.clock()
        for window in (self.primary, self.secondary):
            if window is not None:
                window.roll(now)
        return self.primary, self.secondary

    def limit_reached(self) -> Window | None:
        """The exhausted window that binds, if any."""
        for window in self.windows():
            if window is not None and window.used_percent >= 100:
                return window
        return None

    def record_response(self) -> None:
        """Count one served response and add the per-response usage."""
        self.responses_served += 1
        primary, secondary = self.windows()
        if primary is not None:
            primary.used_percent = min(100.0, round(primary.used_percent + self.primary_step, 4))
        if secondary is not None:
            secondary.used_percent = min(100.0, round(secondary.used_percent + self.secondary_step, 4))

    def set_usage(self, primary: float | None = None, secondary: float | None = None) -> None:
        """Set used percentages (after rolling the windows)."""
        p, s = self.windows()
        if primary is not None and p is not None:
            p.used_percent = primary
        if secondary is not None and s is not None:
            s.used_percent = secondary

    def rate_limit_headers(self) -> list[tuple[str, str]]:
        """The ``x-codex-*`` family for a response (protocol.md §2.1)."""
        now = self.clock()
        primary, secondary = self.windows()
        items = [("x-codex-active-limit", "codex"), ("x-codex-plan-type", self.plan_type)]
        if primary is not None:
            items += primary.header_items("x-codex-primary", now)
        if secondary is not None:
            items += secondary.header_items("x-codex-secondary", now)
        items += [
            ("x-codex-primary-over-secondary-limit-percent", "0"),
            ("x-codex-credits-has-credits", str(self.credits_has_credits).lower()),
            ("x-codex-credits-unlimited", str(self.credits_unlimited).lower()),
            ("x-codex-credits-balance", self.credits_balance),
        ]
        return items

    def credits_json(self) -> dict[str, Any]:
        """``{"has_credits", "unlimited", "balance"}``."""
        return {"has_credits": self.credits_has_credits, "unlimited": self.credits_unlimited,
                "balance": self.credits_balance}

    def rate_limit_json(self) -> dict[str, Any]:
        """``rate_limit`` object of ``/wham/usage``."""
        now = self.clock()
        primary, secondary = self.windows()
        reached = self.limit_reached() is not None
        return {
            "allowed": not reached,
            "limit_reached": reached,
            "primary_window": primary.usage_json(now) if primary else None,
            "secondary_window": secondary.usage_json(now) if secondary else None,
        }

    def rate_limits_event(self) -> dict[str, Any]:
        """The ``codex.rate_limits`` SSE event (protocol.md §2.3)."""
        now = self.clock()
        primary, secondary = self.windows()
        reached = self.limit_reached() is not None
        return {
            "type": "codex.rate_limits",
            "plan_type": self.plan_type,
            "rate_limits": {
                "allowed": not reached,
                "limit_reached": reached,
                "primary": primary.event_json(now) if primary else None,
                "secondary": secondary.event_json(now) if secondary else None,
            },
            "code_review_rate_limits": None,
            "additional_rate_limits": None,
            "credits": self.credits_json(),
            "promo": None,
        }

    def usage_json(self) -> dict[str, Any]:
        """Body of ``GET /backend-api/wham/usage`` (protocol.md §3.2)."""
        return {
            "user_id": self.user_id,
            "account_id": self.user_id,
            "email": self.email,
            "plan_type": self.plan_type,
            "rate_limit": self.rate_limit_json(),
            "code_review_rate_limit": None,
            "additional_rate_limits": [],
            "credits": {**self.credits_json(), "overage_limit_reached": False,
                        "approx_local_messages": None, "approx_cloud_messages": None},
            "spend_control": {"reached": False, "individual_limit": None},
            "rate_limit_reached_type": None,
            "rate_limit_reset_credits": {"available_count": 0},
            "promo": None,
            "referral_beacon": None,
        }

    def usage_limit_body(
        self, resets_at: int | None = None, resets_in_seconds: int | None = None, plan_type: str | None = None
    ) -> dict[str, Any]:
        """The 429 ``usage_limit_reached`` body.

        With neither reset given both come from the binding (or primary) window; otherwise only the
        given ones appear, so clients' fallbacks (``resets_at`` -> ``resets_in_seconds``) can be tested.
        """
        error: dict[str, Any] = {"type": "usage_limit_reached", "message": "The usage limit has been reached",
                                 "plan_type": plan_type or self.plan_type}
        if resets_at is None and resets_in_seconds is None:
            window = self.limit_reached() or self.primary or self.secondary
            if window is not None:
                resets_at = window.reset_at
                resets_in_seconds = max(0, resets_at - int(self.clock()))
        if resets_at is not None:
            error["resets_at"] = resets_at
        if resets_in_seconds is not None:
            error["resets_in_seconds"] = resets_in_seconds
        return {"error": error}

    def check_json(self) -> dict[str, Any]:
        """One entry of ``/wham/accounts/check``."""
        return {
            "id": self.chatgpt_account_id,
            "account_id": self.chatgpt_account_id,
            "name": None,
            "structure": "personal",
            "plan_type": self.plan_type,
            "is_default": True,
            "profile_picture_url": None,
        }

    # -- prompt cache ------------------------------------------------------------------------------

    def cached_tokens(self, prompt_cache_key: str | None, input_tokens: int) -> int:
        """Tokens served from the prompt cache; remembers this prompt for the next call."""
        if not prompt_cache_key:
            return 0
        previous = self.prompt_cache.get(prompt_cache_key)
        self.prompt_cache[prompt_cache_key] = input_tokens
        return 0 if previous is None else min(previous, input_tokens)
