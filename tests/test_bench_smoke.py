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


def run(module: str, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_LB_")}
    done = subprocess.run([sys.executable, "-m", module, "--tiny", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


def test_overhead_tiny(tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"
    run("bench.overhead", "--no-floor", "--held", "10", "--json", str(out))
    data = json.loads(out.read_text())
    assert set(data["proxy statuses"]) == {"200"}, data["proxy statuses"]
    assert data["c=64 req/s"]["proxy"] > 0
    assert data["RSS idle MB"]["proxy"] > 0


def test_routing_sim_tiny(tmp_path: Path) -> None:
    out = tmp_path / "sim.json"
    run("bench.routing_sim", "--json", str(out))
    data = json.loads(out.read_text())
    for arm in ("oracle", "proxy"):
        assert data[arm]["turns ok"] > 0, data[arm]
        assert data[arm]["errors"] == {}, data[arm]
