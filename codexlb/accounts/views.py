"""Account summaries for people and scripts (CLI table, ``--json``, the HTTP API): never a token."""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from codexlb.db.store import StoredAccount
    from codexlb.types import Account, UsageWindow

COLUMNS = ("LABEL", "EMAIL", "PLAN", "STATUS", "5H USAGE", "WEEKLY USAGE", "LAST USED", "ID")


def _window(window: UsageWindow) -> dict[str, Any]:
    return {"used_percent": window.used_percent, "window_minutes": window.window_minutes,
            "resets_at": window.resets_at}


def account_summary(account: Account | StoredAccount) -> dict[str, Any]:
    """The public fields of an account (in-memory or stored)."""
    return {
        "id": account.id, "label": account.label, "email": account.email,
        "chatgpt_account_id": account.chatgpt_account_id, "plan_type": account.plan_type,
        "status": account.status.value, "status_reason": account.status_reason, "priority": account.priority,
        "cooldown_until": account.cooldown_until or None, "last_used_at": account.last_used_at,
        "primary": _window(account.primary), "secondary": _window(account.secondary), "credits": account.credits,
        "max_primary_percent": account.max_primary_percent, "max_secondary_percent": account.max_secondary_percent,
    }


def _clock(ts: float, now: float) -> str:
    moment = datetime.fromtimestamp(ts)
    return moment.strftime("%H:%M") if abs(ts - now) < 86400 else moment.strftime("%Y-%m-%d %H:%M")


def usage_text(window: UsageWindow, now: float) -> str:
    """``12% (resets 14:05)``; ``-`` when the window is unknown."""
    if window.window_minutes is None and not window.used_percent and window.resets_at is None:
        return "-"
    text = f"{window.used_percent:.0f}%"
    if window.resets_at is not None and window.resets_at > now:
        text += f" (resets {_clock(window.resets_at, now)})"
    return text


def ago(ts: float | None, now: float) -> str:
    """``never``, ``just now``, ``5m ago``, ``3h ago``, ``2d ago``."""
    if not ts:
        return "never"
    seconds = max(0, int(now - ts))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return "just now"


def status_text(account: Account | StoredAccount) -> str:
    status = account.status.value
    return f"{status} ({account.status_reason})" if account.status_reason else status


def table(accounts: list[Account] | list[StoredAccount], now: float | None = None) -> str:
    """A plain-text table, one account a line."""
    now = time.time() if now is None else now
    rows = [COLUMNS] + [(a.label, a.email or "-", a.plan_type or "-", status_text(a), usage_text(a.primary, now),
                         usage_text(a.secondary, now), ago(a.last_used_at, now), a.id[:8]) for a in accounts]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)
