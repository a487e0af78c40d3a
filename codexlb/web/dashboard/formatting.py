"""Jinja filters of the dashboard: numbers with units, times relative and absolute."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup


def relative(ts: float | None, now: float | None = None) -> str:
    """``in 2 h 5 min`` / ``3 min ago`` / ``just now``; ``never`` for none."""
    if not ts:
        return "never"
    now = time.time() if now is None else now
    delta = ts - now
    span = abs(delta)
    if span < 30:
        return "just now"
    if span < 3600:
        text = f"{span / 60:.0f} min"
    elif span < 86400:
        hours, minutes = divmod(int(span // 60), 60)
        text = f"{hours} h {minutes} min" if minutes else f"{hours} h"
    else:
        days, hours = divmod(int(span // 3600), 24)
        text = f"{days} d {hours} h" if hours else f"{days} d"
    return f"in {text}" if delta > 0 else f"{text} ago"


def absolute(ts: float | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def when(ts: float | None) -> Markup:
    """A ``<time>`` showing the relative time, the absolute one as its title (and for scripts)."""
    if not ts:
        return Markup("<span class=muted>never</span>")
    iso = datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")
    # every part is made here from a number (nothing to escape); Markup.format would cost more than all of it
    return Markup(f'<time datetime="{iso}" title="{absolute(ts)}" data-ts="{ts:.0f}">{relative(ts)}</time>')


def number(value: float | int | None, unit: str = "") -> str:
    """``1,234`` below 10,000, then ``12.3k``, ``4.56M``, ``7.8B``; with a unit after a space."""
    if value is None:
        return "-"
    value = float(value)
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e4, "k")):
        if abs(value) >= size:
            text = f"{value / size:.3g}{suffix}" if size > 1e4 else f"{value / 1e3:.1f}k"
            break
    else:
        text = f"{value:,.0f}" if value == int(value) else f"{value:,.2f}"
    return f"{text} {unit}".rstrip()


def duration_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f} ms" if value < 1000 else f"{value / 1000:.2f} s"


def percent(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f} %"


def bar(used: float | None) -> Markup:
    """A usage bar: ``used`` percent filled, coloured by how full it is."""
    used = max(0.0, min(100.0, float(used or 0.0)))
    level = "high" if used >= 90 else "mid" if used >= 70 else "low"
    return Markup(f'<span class="bar {level}" role="img" aria-label="{percent(used)} used">'
                  f'<span style="width:{used:.1f}%"></span></span>')  # made from a number: nothing to escape


def short(value: Any, length: int = 12) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= length else text[:length] + "…"


def status_class(status: int | None) -> str:
    if status is None:
        return "muted"
    return "ok" if status < 400 else "warn" if status < 500 else "bad"


FILTERS = {"relative": relative, "absolute": absolute, "when": when, "number": number,
           "duration_ms": duration_ms, "percent": percent, "bar": bar, "short": short,
           "status_class": status_class}
