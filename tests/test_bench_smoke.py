"""Keep the benchmarks from rotting: each tool runs in its tiniest mode. No timing is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def run(module: str, *args: str, timeout: float = 60) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_LB_")}
    done = subprocess.run([sys.executable, "-m", module, "--tiny", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


def test_overhead_tiny(tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"
    run("bench.overhead", "--no-floor", "--asgi", "--held", "10", "--json", str(out))
    data = json.loads(out.read_text())
    assert set(data["proxy statuses"]) == {"200"}, data["proxy statuses"]
    assert set(data["asgi statuses"]) == {"200"}, data["asgi statuses"]
    assert data["c=64 req/s"]["proxy"] > 0
    assert data["RSS idle MB"]["proxy"] > 0


def test_routing_sim_tiny(tmp_path: Path) -> None:
    out = tmp_path / "sim.json"
    run("bench.routing_sim", "--json", str(out))
    data = json.loads(out.read_text())
    for arm in ("oracle", "proxy"):
        assert data[arm]["turns ok"] > 0, data[arm]
        assert data[arm]["errors"] == {}, data[arm]


def test_soak_tiny(tmp_path: Path) -> None:
    run("bench.soak", "--out", str(tmp_path), timeout=180)
    data = json.loads((tmp_path / "soak.json").read_text())
    assert data["samples"] >= 2 and data["faults injected"] >= 1
    assert data["checks"]["errors only after breaking faults"], data["stray error examples"]
    header = (tmp_path / "soak.csv").read_text().splitlines()[0]
    assert header.startswith("t_s,rss_mb,fds,tasks,lag_ms,p50_ms,p99_ms,requests,errors,faults,inflight_peak,")
    assert {"anon_mb", "file_mb", "heap_used_mb", "heap_free_mb", "sqlite_mb", "py_blocks_k", "gc_full"} <= \
        set(header.split(","))
    assert data["warm-up minutes"] == 0 and "largest rss rise in 5 minutes after warm-up (MB)" in data
    assert data["peak in flight"] >= 1
    assert data["idle before load"]["fds"] > 0 and data["idle after load"]["tasks"] > 0


def test_dashboard_bench_tiny(tmp_path: Path) -> None:
    out = tmp_path / "dashboard.json"
    run("bench.dashboard_bench", "--json", str(out))
    data = json.loads(out.read_text())
    assert data["rows"] == 2000 and data["database"] == "sqlite"
    assert data["requests deep page (90 % back)"]["p50 ms"] > 0


def test_soak_largest_rise_sees_a_step_not_a_plateau() -> None:
    from bench.soak_report import largest_rise

    rows = [{"t_s": t, "rss_mb": v} for t, v in [(0, 100), (60, 101), (120, 104), (400, 104.5), (700, 104)]]
    assert largest_rise(rows, "rss_mb", 300) == 4.0  # 0 → 120 s; 400 s is more than 300 s after 60 s
    assert largest_rise(rows[2:], "rss_mb", 300) == 0.5
