"""Reading the upstream's rate-limit signals: ``x-codex-*`` headers and ``codex.rate_limits``.

Every answer carries both, and they rarely change from one answer to the next: a window is
replaced only when its values change (so ``changed`` means a change worth saving), and an
account skips the parse when a source repeats what it last applied and nothing else has changed
the account since (:func:`apply_headers`, :func:`apply_event_data`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from codexlb.types import Account, UsageWindow


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


def _window_from_headers(headers: Mapping[str, str], which: str, now: float) -> UsageWindow | None:
    prefix = f"x-codex-{which}-"
    used = _float(headers.get(prefix + "used-percent"))
    if used is None:
        return None
    minutes = _float(headers.get(prefix + "window-minutes"))
    reset_at = _float(headers.get(prefix + "reset-at"))
    if reset_at is None and (after := _float(headers.get(prefix + "reset-after-seconds"))) is not None:
        reset_at = now + after
    return UsageWindow(used, int(minutes) if minutes is not None else None, reset_at)


HEADER_NAMES = tuple(f"x-codex-{which}-{part}" for which in ("primary", "secondary")
                     for part in ("used-percent", "window-minutes", "reset-at", "reset-after-seconds")
                     ) + ("x-codex-credits-balance", "x-codex-plan-type")
"""The headers :func:`apply_headers` reads."""


def _set_window(account: Account, which: str, window: UsageWindow) -> bool:
    """Put ``window`` in place unless the account already shows the same values; ``True`` if replaced."""
    if getattr(account, which) == window:
        return False
    setattr(account, which, window)
    return True


def _repeats(account: Account, source: str, key: object) -> bool:
    """Whether ``source`` last applied ``key`` to ``account`` and nothing has changed its limits since."""
    last = account.seen_limits.get(source)
    return (last is not None and last[0] == key and last[1] is account.primary and last[2] is account.secondary
            and last[3] == account.credits and last[4] == account.plan_type)


def _remember(account: Account, source: str, key: object) -> None:
    account.seen_limits[source] = (key, account.primary, account.secondary, account.credits, account.plan_type)


def apply_headers(account: Account, headers: Mapping[str, str], now: float | None = None) -> bool:
    """Update ``account`` from lower-cased response headers; ``True`` when a value changed."""
    key = tuple(headers.get(name) for name in HEADER_NAMES)
    if _repeats(account, "headers", key):
        return False
    now = time.time() if now is None else now
    changed = False
    for which in ("primary", "secondary"):
        window = _window_from_headers(headers, which, now)
        if window is not None:
            changed = _set_window(account, which, window) or changed
    if (balance := _float(headers.get("x-codex-credits-balance"))) is not None and balance != account.credits:
        account.credits, changed = balance, True
    if plan := headers.get("x-codex-plan-type"):
        account.plan_type = plan
    _remember(account, "headers", key)
    return changed


def _window_from_event(data: Any, now: float) -> UsageWindow | None:
    if not isinstance(data, Mapping) or _float(data.get("used_percent")) is None:
        return None
    reset_at = _float(data.get("reset_at", data.get("resets_at")))
    if reset_at is None and (after := _float(data.get("reset_after_seconds"))) is not None:
        reset_at = now + after
    minutes = _float(data.get("window_minutes"))
    return UsageWindow(float(data["used_percent"]), int(minutes) if minutes is not None else None, reset_at)


def apply_event(account: Account, event: Mapping[str, Any], now: float | None = None) -> bool:
    """Update ``account`` from a ``codex.rate_limits`` event of the default ``codex`` family."""
    now = time.time() if now is None else now
    limit = event.get("metered_limit_name") or event.get("limit_name") or event.get("limit_id")
    if limit not in (None, "codex"):
        return False
    limits = event.get("rate_limits") or {}
    changed = False
    for which in ("primary", "secondary"):
        window = _window_from_event(limits.get(which), now)
        if window is not None:
            changed = _set_window(account, which, window) or changed
    credits = event.get("credits") or limits.get("credits") or {}
    if isinstance(credits, Mapping) and (balance := _float(credits.get("balance"))) is not None \
            and balance != account.credits:
        account.credits, changed = balance, True
    if isinstance(event.get("plan_type"), str):
        account.plan_type = event["plan_type"]
    return changed


def apply_event_data(account: Account, data: bytes, now: float | None = None) -> bool:
    """:func:`apply_event` for the event's raw JSON, not parsed when it repeats the last one applied.

    :raises ValueError: ``data`` is not JSON.
    """
    if _repeats(account, "event", data):
        return False
    event = json.loads(data)
    changed = apply_event(account, event, now) if isinstance(event, Mapping) else False
    _remember(account, "event", data)
    return changed


def reset_time(error: Mapping[str, Any], headers: Mapping[str, str], now: float | None = None) -> float | None:
    """When a ``usage_limit_reached`` error ends: ``resets_at``, else ``resets_in_seconds``, else headers."""
    now = time.time() if now is None else now
    if (at := _float(error.get("resets_at"))) is not None:
        return at
    if (after := _float(error.get("resets_in_seconds"))) is not None:
        return now + after
    candidates = []
    for which in ("primary", "secondary"):
        window = _window_from_headers(headers, which, now)
        if window and window.used_percent >= 100 and window.resets_at:
            candidates.append(window.resets_at)
    return min(candidates) if candidates else None
