"""Numbers and charts of the Overview: the pool's remaining quota, its pace, hourly charts (pygal SVG)."""

from __future__ import annotations

import re
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from codexlb.db.dashboard_queries import HourTotals
from codexlb.types import Account, AccountStatus

if TYPE_CHECKING:
    from types import ModuleType

PACE_WINDOW_SECONDS = 6 * 3600


@cache
def _pygal() -> tuple[ModuleType, Any]:
    """pygal and our chart style, imported when the first chart is drawn (not by a serving proxy).

    pygal appends an old-style import hook (for its optional map plugins, unused here) to
    sys.meta_path; Python 3.11 warns about it on every failed import anywhere in the process.
    """
    import pygal
    from pygal.style import Style

    sys.meta_path[:] = [finder for finder in sys.meta_path if type(finder).__module__ != "pygal"]
    style = Style(background="transparent", plot_background="transparent", foreground="#888",
                  foreground_strong="#888", foreground_subtle="#8884", opacity=".85", opacity_hover="1",
                  colors=("#3b82f6", "#ef4444", "#10b981", "#f59e0b"), font_family="system-ui, sans-serif",
                  label_font_size=11, major_label_font_size=11, legend_font_size=12, title_font_size=13)
    return pygal, style


@dataclass(frozen=True, slots=True)
class PoolOutlook:
    accounts: int
    usable: int
    weekly_remaining: float
    """Sum over active accounts of the weekly window's remaining share, in accounts (2.5 = 250 %)."""
    short_remaining: float
    weekly_pace: float | None
    """Weekly quota used per hour over the last hours, in accounts per hour (``None``: no history)."""
    runs_out_at: float | None
    """When the weekly quota would be used up at that pace (``None``: not at this pace)."""


def outlook(accounts: Sequence[Account], snapshots: Iterable[dict[str, Any]], now: float | None = None,
            ) -> PoolOutlook:
    """The pool's remaining quota and, from recent usage snapshots, when it would run out."""
    now = time.time() if now is None else now
    active = [a for a in accounts if a.status is AccountStatus.ACTIVE]
    weekly = sum(a.secondary.remaining_percent for a in active) / 100
    short = sum(a.primary.remaining_percent for a in active) / 100
    by_account: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for snap in snapshots:
        by_account[snap["account_id"]].append(snap)
    active_ids = {a.id for a in active}
    rate, seen = 0.0, False
    for account_id, points in by_account.items():
        if account_id not in active_ids or len(points) < 2:
            continue
        first, last = points[0], points[-1]
        hours = (last["time"] - first["time"]) / 3600
        if hours <= 0 or first["secondary_used_percent"] is None or last["secondary_used_percent"] is None:
            continue
        seen = True
        if first.get("secondary_resets_at") != last.get("secondary_resets_at"):
            continue  # the window reset in between: no pace from these two points
        rate += max(0.0, last["secondary_used_percent"] - first["secondary_used_percent"]) / 100 / hours
    pace = rate if seen else None
    runs_out = now + weekly / rate * 3600 if rate > 0 else None
    return PoolOutlook(len(accounts), sum(1 for a in accounts if a.usable(now)), weekly, short, pace, runs_out)


def _labels(buckets: Sequence[HourTotals], step: int) -> list[str]:
    out = []
    for n, bucket in enumerate(buckets):
        moment = datetime.fromtimestamp(bucket.hour * 3600, UTC)
        fmt = "%H:00" if step == 1 else "%a %H:00"
        out.append(moment.strftime(fmt) if n % max(1, len(buckets) // 8) == 0 else "")
    return out


def _group(buckets: Sequence[HourTotals], size: int) -> list[HourTotals]:
    """Hourly buckets summed into ``size``-hour buckets (the first hour's label)."""
    grouped = []
    for start in range(0, len(buckets), size):
        part = buckets[start:start + size]
        total = HourTotals(part[0].hour)
        for bucket in part:
            for name, value in bucket.values.items():
                total.values[name] += value
        grouped.append(total)
    return grouped


_SCRIPT = re.compile(r"<script\b.*?</script>", re.S)


def _render(chart: Any) -> str:
    """The chart's SVG without pygal's inline configuration script (no script runs in our charts)."""
    return _SCRIPT.sub("", str(chart.render(is_unicode=True)))


def charts(buckets: Sequence[HourTotals], *, group_hours: int = 1) -> dict[str, str]:
    """SVG charts of hourly totals (oldest first): requests and errors; tokens, cached and not."""
    pygal, style = _pygal()
    data = _group(buckets, group_hours) if group_hours > 1 else list(buckets)
    options: dict[str, Any] = dict(style=style, height=220, width=640, show_legend=True, legend_at_bottom=True,
                                   legend_at_bottom_columns=3, js=[], disable_xml_declaration=True,
                                   x_label_rotation=0, show_minor_x_labels=True, margin=4, explicit_size=False,
                                   print_values=False, include_x_axis=True, truncate_label=-1)
    labels = _labels(data, group_hours)
    requests = pygal.Bar(**options, title="Requests")
    requests.x_labels = labels
    requests.add("requests", [b.values["requests"] for b in data])
    requests.add("errors", [b.values["errors"] for b in data])
    tokens = pygal.StackedBar(**options, title="Tokens (cached share of input in the legend)")
    tokens.x_labels = labels
    input_total = sum(b.values["input_tokens"] for b in data)
    cached_total = sum(b.values["cached_tokens"] for b in data)
    share = f"{100 * cached_total / input_total:.0f} %" if input_total else "-"
    tokens.add("input, not cached", [b.values["input_tokens"] - b.values["cached_tokens"] for b in data])
    tokens.add(f"cached input ({share})", [b.values["cached_tokens"] for b in data])
    tokens.add("output", [b.values["output_tokens"] for b in data])
    return {"requests": _render(requests), "tokens": _render(tokens)}


def totals(buckets: Sequence[HourTotals]) -> dict[str, Any]:
    out: dict[str, Any] = {name: sum(b.values[name] for b in buckets) for name in buckets[0].values} if buckets else {}
    out["cached_share"] = 100 * out["cached_tokens"] / out["input_tokens"] if out.get("input_tokens") else None
    return out


def usage_chart(points: Sequence[dict[str, Any]]) -> str:
    """An account's 5 h and weekly usage over time (from its usage snapshots, oldest first)."""
    pygal, style = _pygal()
    chart = pygal.Line(style=style, height=220, width=640, js=[], disable_xml_declaration=True,
                       range=(0, 100), show_dots=False, legend_at_bottom=True, explicit_size=False,
                       title="Usage (%)", show_minor_x_labels=False, x_label_rotation=0, truncate_label=-1)
    labels = [datetime.fromtimestamp(p["time"], UTC).strftime("%m-%d %H:%M") for p in points]
    chart.x_labels = labels
    chart.x_labels_major = labels[::max(1, len(labels) // 5)]
    chart.add("5 h window", [p["primary"] for p in points])
    chart.add("weekly", [p["secondary"] for p in points])
    return _render(chart)
