"""Key limits: what is counted (requests, tokens), over which fixed window, and when windows reset.

Windows are fixed, not rolling, and in UTC: ``5h`` is one of the consecutive 5-hour blocks counted
from the Unix epoch (so every replica and every key agree on them), ``day`` starts at 00:00 UTC,
``week`` on Monday 00:00 UTC, ``month`` on the first of the month 00:00 UTC. A window's counts
start again from zero when the next window begins (``resets_at`` is that moment).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

WINDOWS = ("5h", "day", "week", "month")
METRICS = ("requests", "input_tokens", "output_tokens", "total_tokens")
METRIC_ALIASES = {"requests": "requests", "tokens": "total_tokens", "total_tokens": "total_tokens",
                  "total": "total_tokens", "input_tokens": "input_tokens", "input": "input_tokens",
                  "output_tokens": "output_tokens", "output": "output_tokens"}
FIVE_HOURS = 5 * 3600
_DURATION = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class LimitError(ValueError):
    """A limit, duration or window written wrongly; the message says what is allowed."""


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``max`` of ``metric`` per ``window``."""

    metric: str
    window: str
    max: int

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "window": self.window, "max": self.max}

    def __str__(self) -> str:
        return f"{self.metric}={self.max}/{self.window}"


def parse_limit(text: str) -> Limit:
    """``requests=500/day``, ``tokens=2000000/5h``, ``input_tokens=1_000_000/week``.

    :raises LimitError: the text does not have that shape, or names an unknown metric or window.
    """
    name, sep, rest = text.partition("=")
    amount, slash, window = rest.partition("/")
    metric = METRIC_ALIASES.get(name.strip().lower())
    if not sep or not slash or metric is None:
        raise LimitError(f"limit {text!r}: expected METRIC=NUMBER/WINDOW such as requests=500/day; metrics: "
                         "requests, tokens (total), input_tokens, output_tokens; windows: " + ", ".join(WINDOWS))
    window = window.strip().lower()
    if window not in WINDOWS:
        raise LimitError(f"limit {text!r}: unknown window {window!r}; allowed: {', '.join(WINDOWS)}")
    try:
        maximum = int(amount.strip())
    except ValueError:
        raise LimitError(f"limit {text!r}: {amount.strip()!r} is not a whole number") from None
    if maximum < 1:
        raise LimitError(f"limit {text!r}: the number must be at least 1")
    return Limit(metric, window, maximum)


def limit_from_dict(data: Any) -> Limit:
    """A limit from its stored or JSON form ``{"metric", "window", "max"}`` (or the text form)."""
    if isinstance(data, str):
        return parse_limit(data)
    if not isinstance(data, dict) or set(data) != {"metric", "window", "max"}:
        raise LimitError(f"limit {data!r}: expected {{\"metric\", \"window\", \"max\"}} or \"requests=500/day\"")
    maximum = data["max"]
    if isinstance(maximum, bool) or not isinstance(maximum, int):
        raise LimitError(f"limit {data!r}: max must be a whole number")
    return parse_limit(f"{data['metric']}={maximum}/{data['window']}")


def check_unique(limits: list[Limit]) -> list[Limit]:
    """The limits, refusing two for the same metric and window."""
    seen: set[tuple[str, str]] = set()
    for limit in limits:
        if (limit.metric, limit.window) in seen:
            raise LimitError(f"two limits for {limit.metric} per {limit.window}; give one")
        seen.add((limit.metric, limit.window))
    return limits


def window_bounds(window: str, now: float) -> tuple[float, float]:
    """``(start, end)`` of the fixed ``window`` holding the unix time ``now``."""
    if window == "5h":
        start = now - now % FIVE_HOURS
        return start, start + FIVE_HOURS
    moment = datetime.fromtimestamp(now, UTC)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "day":
        begin, end = day, day + timedelta(days=1)
    elif window == "week":
        begin = day - timedelta(days=day.weekday())
        end = begin + timedelta(days=7)
    elif window == "month":
        begin = day.replace(day=1)
        end = (begin + timedelta(days=32)).replace(day=1)
    else:
        raise LimitError(f"unknown window {window!r}; allowed: {', '.join(WINDOWS)}")
    return begin.timestamp(), end.timestamp()


def parse_duration(text: str, what: str) -> float:
    """Seconds in ``30m``, ``12h``, ``30d`` or ``2w``."""
    match = _DURATION.match(text or "")
    if not match or int(match.group(1)) < 1:
        raise LimitError(f"{what} {text!r}: expected a duration such as 30m, 12h, 30d or 2w")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
