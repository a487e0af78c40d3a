"""CPU cost of the metrics plugin: the default pipeline with and without ``metrics`` at c=64.

    .venv/bin/python -m bench.metrics_overhead            # ~1 minute
    .venv/bin/python -m bench.metrics_overhead --tiny     # a few seconds (smoke test)

Two proxies (``codexlb serve``, same plugins but for ``metrics``) run against one fast fake;
blocks of 64 concurrent streamed Codex turns alternate between them, and the proxy's own CPU
time per request is compared. One ``/metrics`` scrape per block is included in the cost.
On a busy machine the end-to-end difference is within the noise, so the plugin's own work per
flow (``wrap_response_stream`` + ``flow_done``) is also timed in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.loadclient import run_block
from bench.overhead import request_maker
from bench.procs import (
    Child,
    available_plugins,
    cpu_seconds,
    cpu_split,
    pin,
    raise_fd_limit,
    start_fast_fake,
    start_proxy,
)

PRESETS = {"default": {"rounds": 6, "secs": 4.0, "warm": 1.0}, "tiny": {"rounds": 1, "secs": 0.3, "warm": 0.1}}


def scrape(port: int) -> None:
    """One ``/metrics`` read (a 404 JSON answer without the plugin: about the same work)."""
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    except urllib.error.HTTPError:
        pass


async def cpu_ms_per_request(port: int, pid: int, secs: float) -> tuple[float, int]:
    make = request_maker(port, None)
    requests = [make(i, {}) for i in range(64)]
    before = cpu_seconds(pid)
    block = await run_block(port, requests, duration=secs)
    await asyncio.to_thread(scrape, port)
    used = cpu_seconds(pid) - before
    if set(block.statuses) != {"200"}:
        raise RuntimeError(f"non-200 answers: {dict(block.statuses)} {block.first_error}")
    return used * 1000 / max(1, block.requests), block.requests


async def plugin_us_per_flow(n: int = 100_000) -> float:
    """CPU microseconds of the plugin's hooks for one finished streamed flow."""
    from codexlb.flow import Attempt
    from codexlb.testing import make_flow
    from plugins.metrics import Metrics

    metrics, flows = Metrics(), []
    for _ in range(1000):
        flow = make_flow(payload={"model": "gpt-5.5"})
        flow.status = 200
        flow.set_route("sticky", "hit")
        flow.first_byte_at, flow.finished_at = flow.started_at + 0.01, flow.started_at + 0.2
        flow.attempts.append(Attempt("a", None, 200))
        flows.append(flow)
    started = time.process_time()
    for i in range(n):
        flow = flows[i % len(flows)]
        metrics.wrap_response_stream(flow)
        await metrics.flow_done(flow)
    return (time.process_time() - started) / n * 1e6


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    preset = PRESETS["tiny" if args.tiny else "default"]
    base = [p for p in available_plugins() if p != "metrics"]
    raise_fd_limit()
    proxy_cores, other_cores = cpu_split()
    pin(0, other_cores)
    children: list[Child] = []
    with tempfile.TemporaryDirectory(prefix="codexlb-bench-metrics-") as tmp:
        root = Path(tmp)
        try:
            fake, fake_port, accounts = await start_fast_fake(root, 4, other_cores)
            children.append(fake)
            upstream, auth = f"http://127.0.0.1:{fake_port}/backend-api", f"http://127.0.0.1:{fake_port}"
            arms = {}
            for name, plugins in (("without", base), ("with", [*base, "metrics"])):
                (root / name).mkdir()
                child, port = await start_proxy(root / name, upstream, auth, accounts, plugins, proxy_cores)
                children.append(child)
                arms[name] = (port, child.pid)
            for port, pid in arms.values():
                await cpu_ms_per_request(port, pid, preset["warm"])
            cpu: dict[str, list[float]] = {name: [] for name in arms}
            total = dict.fromkeys(arms, 0)
            for round_ in range(preset["rounds"]):
                order = list(arms) if round_ % 2 == 0 else list(reversed(arms))
                for name in order:
                    ms, n = await cpu_ms_per_request(*arms[name], preset["secs"])
                    cpu[name].append(ms)
                    total[name] += n
        finally:
            for child in reversed(children):
                child.stop()
    without, with_ = statistics.median(cpu["without"]), statistics.median(cpu["with"])
    micro = await plugin_us_per_flow(1000 if args.tiny else 100_000)
    return {"plugins": base, "rounds": preset["rounds"], "requests": total,
            "plugin hooks us/flow (in process)": round(micro, 2),
            "cpu ms/request without metrics": round(without, 4), "cpu ms/request with metrics": round(with_, 4),
            "metrics cost ms/request": round(with_ - without, 4),
            "per round": {k: [round(v, 4) for v in vs] for k, vs in cpu.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="smoke-test size")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    result = asyncio.run(main_async(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
