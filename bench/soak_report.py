"""The soak's verdict and plot from its samples (``bench.soak`` writes them)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any


def slope_per_hour(rows: list[dict[str, Any]], key: str) -> float:
    if len(rows) < 2:
        return 0.0
    xs, ys = [r["t_s"] / 3600 for r in rows], [float(r[key]) for r in rows]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def largest_rise(rows: list[dict[str, Any]], key: str, window_s: float) -> float:
    """The most ``key`` rose from one sample to any sample up to ``window_s`` later (a plateau shows ~0)."""
    best = 0.0
    for i, row in enumerate(rows):
        for later in rows[i + 1:]:
            if later["t_s"] - row["t_s"] > window_s:
                break
            best = max(best, float(later[key]) - float(row[key]))
    return round(best, 2)


def growth(rows: list[dict[str, Any]], key: str) -> float:
    """Median of the last third minus median of the first third."""
    third = max(1, len(rows) // 3)
    return float(statistics.median(r[key] for r in rows[-third:]) - statistics.median(r[key] for r in rows[:third]))


def not_database(sample: dict[str, Any]) -> int:
    """Descriptors other than the database's files: the connection pool keeps up to its size open."""
    return sum(n for kind, n in sample["fd kinds"].items() if not kind.startswith("store.db"))


def verdict(rows: list[dict[str, Any]], warmup_s: float, errors: list[tuple[float, str]], faults: int,
            breaking: list[float], window: float, judge_flatness: bool,
            idle: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The checks: client errors only within ``window`` s after a ``breaking`` fault's time; RSS growth
    under 5 MB/h after ``warmup_s``; descriptors and tasks back at their idle level after the load."""
    steady = [r for r in rows if r["t_s"] >= warmup_s]
    late = [r for r in rows if r["t_s"] >= 300]
    stray = [e for e in errors if not any(0 <= e[0] - t <= window for t in breaking)]
    out: dict[str, Any] = {
        "samples": len(rows), "steady samples": len(steady), "faults injected": faults,
        "client errors": len(errors), "errors outside fault windows": len(stray),
        "stray error examples": [d for _, d in stray[:5]],
        "warm-up minutes": round(warmup_s / 60, 1),
        "rss slope MB/h": round(slope_per_hour(steady, "rss_mb"), 2) if len(steady) > 1 else None,
        "rss slope MB/h after 5 minutes": round(slope_per_hour(late, "rss_mb"), 2) if len(late) > 1 else None,
        "largest rss rise in 5 minutes after warm-up (MB)": largest_rise(steady, "rss_mb", 300),
        "fd growth": growth(steady, "fds") if steady else None,
        "task growth": growth(steady, "tasks") if steady else None,
        "peak in flight": max((r["inflight_peak"] for r in rows), default=0),
        "idle before load": idle["before"], "idle after load": idle["after"],
    }
    checks = {"errors only after breaking faults": not stray}
    if judge_flatness and len(steady) >= 6:
        checks.update({"rss growth < 5 MB/h": out["rss slope MB/h"] < 5.0,
                       "fds back to the idle level": not_database(idle["after"]) <= not_database(idle["before"]) + 2,
                       "tasks back to the idle level": idle["after"]["tasks"] <= idle["before"]["tasks"] + 5})
    out["checks"] = checks
    out["ok"] = all(checks.values())
    return out


def plot(rows: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot", flush=True)
        return False
    minutes = [r["t_s"] / 60 for r in rows]
    fig, axes = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    for ax, keys, label in ((axes[0], ["rss_mb", "anon_mb"], "RSS (MB)"),
                            (axes[1], ["fds", "tasks", "inflight_peak"], "count"),
                            (axes[2], ["lag_ms"], "loop lag (ms)"), (axes[3], ["p50_ms", "p99_ms"], "latency (ms)")):
        for key in (k for k in keys if k in rows[0]):
            ax.plot(minutes, [r[key] for r in rows], label=key)
        ax.set_ylabel(label)
        ax.legend(loc="upper left")
        ax.grid(alpha=0.3)
    for r in rows:
        if r["faults"]:
            for ax in axes:
                ax.axvline(r["t_s"] / 60, color="red", alpha=0.15)
    axes[-1].set_xlabel("minutes (red: a fault was injected)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
