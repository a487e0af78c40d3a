"""Answers to the start-up calls Codex CLI makes with ChatGPT-style auth, on behalf of the pool.

- ``GET /backend-api/wham/accounts/check``: one account (the pool) so Codex accepts the login;
  its id is the ``chatgpt-account-id`` the client sent.
- ``GET /backend-api/wham/settings/user``: ``{}``, as the backend answers for default settings.
- ``GET /backend-api/wham/usage``: the pool's combined usage: used percent is the share of the
  pool's quota spent (over active accounts), ``reset_at`` the earliest reset.
- ``GET /backend-api/codex/responses`` without a WebSocket handshake (HTTP/2, or a client that
  checks first): 426, so a client falls back to HTTP streaming. The handshake itself is served
  by :mod:`codexlb.web.websocket`.

Like every client route, these are admitted first (:mod:`codexlb.web.admission`).
"""

from __future__ import annotations

import time
from typing import Any

from quart import Blueprint, current_app, jsonify, request

from codexlb.app import lb_of
from codexlb.types import Account, AccountStatus
from codexlb.web import json_error

blueprint = Blueprint("compat", __name__)


@blueprint.get("/backend-api/wham/accounts/check")
async def wham_accounts_check() -> Any:
    account_id = request.headers.get("chatgpt-account-id") or "codexlb-pool"
    lb = lb_of(current_app)
    plan = next((a.plan_type for a in lb.pool.all() if a.plan_type), "plus")
    entry = {"account": {"account_id": account_id, "account_user_role": "account-owner", "plan_type": plan,
                         "structure": "personal", "is_default": True, "name": "codexlb pool"},
             "features": [], "entitlement": {"has_active_subscription": True}}
    return jsonify({"accounts": {account_id: entry}, "account_ordering": [account_id]})


@blueprint.get("/backend-api/wham/settings/user")
async def wham_settings_user() -> Any:
    return jsonify({})


def _window(accounts: list[Account], which: str, now: float) -> dict[str, Any] | None:
    windows = [getattr(a, which) for a in accounts]
    windows = [w for w in windows if w.window_minutes or w.used_percent]
    if not windows:
        return None
    used = sum(w.used_percent for w in windows) / len(windows)
    resets = [w.resets_at for w in windows if w.resets_at]
    reset_at = int(min(resets)) if resets else None
    minutes = max(w.window_minutes or 0 for w in windows) or None
    return {"used_percent": round(used, 1), "limit_window_seconds": minutes * 60 if minutes else None,
            "reset_after_seconds": max(0, int(reset_at - now)) if reset_at else None, "reset_at": reset_at}


@blueprint.get("/backend-api/wham/usage")
async def wham_usage() -> Any:
    lb = lb_of(current_app)
    now = time.time()
    active = [a for a in lb.pool.all() if a.status not in (AccountStatus.PAUSED, AccountStatus.DEACTIVATED,
                                                             AccountStatus.REAUTH_REQUIRED)]
    usable = lb.pool.usable()
    plan = next((a.plan_type for a in active if a.plan_type), None)
    return jsonify({
        "plan_type": plan or "plus",
        "rate_limit": {"allowed": bool(usable), "limit_reached": not usable,
                       "primary_window": _window(active, "primary", now),
                       "secondary_window": _window(active, "secondary", now)},
        "code_review_rate_limit": None, "additional_rate_limits": [],
        "credits": {"has_credits": False, "unlimited": False, "balance": "0"},
        "rate_limit_reached_type": None, "promo": None,
    })


def _upgrade_required() -> Any:
    return json_error(426, "upgrade_required",
                      "send a WebSocket handshake (Upgrade: websocket) or POST for HTTP streaming",
                      headers={"upgrade": "websocket"})


@blueprint.get("/backend-api/codex/responses")
async def responses_websocket_probe() -> Any:
    """A GET without a WebSocket handshake (HTTP/2, or a client that checks first)."""
    return _upgrade_required()
