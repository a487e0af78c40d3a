"""Proxy overhead against direct: latency, throughput, CPU and memory of ``codexlb serve``.

    .venv/bin/python -m bench.overhead            # ~2 minutes
    .venv/bin/python -m bench.overhead --quick    # ~30 s
    .venv/bin/python -m bench.overhead --profile bench/out   # + py-spy of the proxy (and bare floor) at c=64

The fake upstream (``bench.fastfake``) and this load client share one core; the proxy (Hypercorn on
uvloop, the default plugins that exist, a few imported accounts) gets the other, and so do two
floors with no pipeline: ``floor`` (``bench.floor_server``: Quart + Hypercorn/uvloop + httpx over
aiohttp) and ``bare`` (``bench.bare_floor``: the same with aiohttp directly); with ``--asgi`` also
``asgi`` (``bench.asgi_floor``: that pass-through as a raw ASGI app, no Quart, as the proxy serves
its POST routes: the proxy minus ``asgi`` is the pipeline's own cost).
Every measurement runs against the fake directly, through both floors and through the proxy,
interleaved in rotating order; the table shows them all with the proxy's differences. With
``--baseline DIR`` the proxy of another source tree runs too (column ``before``), to measure a
change before and after in one run. The pipeline's
cost targets are against ``bare``. Requests are the 20-event streamed ``POST /backend-api/codex/responses``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.fastfake import HOLD_HEADER, RESPONSES
from bench.loadclient import Block, build_request, percentile, run_block
from bench.procs import (
    Child,
    available_plugins,
    core_busy_seconds,
    cpu_seconds,
    cpu_split,
    machine,
    pin,
    py_spy,
    raise_fd_limit,
    rss_kb,
    start_fast_fake,
    start_floor,
    start_proxy,
)
from codexlb.testing.fake_sse import sample_request

PRESETS: dict[str, dict[str, Any]] = {
    "default": {"warm": 1.0, "c1_rounds": 4, "c1_secs": 2.0, "rounds": 3, "secs": 3.0, "held": 500, "hold": 6.0},
    "quick": {"warm": 0.3, "c1_rounds": 2, "c1_secs": 0.75, "rounds": 1, "secs": 1.5, "held": 500, "hold": 2.0},
    "tiny": {"warm": 0.1, "c1_rounds": 1, "c1_secs": 0.2, "rounds": 1, "secs": 0.3, "held": 20, "hold": 0.5},
}
LOADS = (("c1", 1), ("c16", 16), ("c64", 64))


@dataclass
class Target:
    """Where requests go and whose CPU counts for it (the fake for direct calls, else the server)."""

    name: str
    port: int
    pid: int
    make: Callable[[int, dict[str, str]], bytes]
    cores: set[int] | None = None
    """Cores the server is pinned to (to see how much other processes used them meanwhile)."""
    blocks: dict[str, Block] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    foreign: dict[str, float] = field(default_factory=dict)

    def requests(self, n: int, extra: dict[str, str] | None = None) -> list[bytes]:
        return [self.make(i, extra or {}) for i in range(n)]

    async def measure(self, label: str, n: int, extra: dict[str, str] | None = None, **kwargs: Any) -> Block:
        before, busy = cpu_seconds(self.pid), core_busy_seconds(self.cores)
        block = await run_block(self.port, self.requests(n, extra), **kwargs)
        used = cpu_seconds(self.pid) - before
        self.cpu[label] = self.cpu.get(label, 0.0) + used
        if self.cores:
            self.foreign[label] = self.foreign.get(label, 0.0) + core_busy_seconds(self.cores) - busy - used
        self.blocks.setdefault(label, Block()).add(block)
        return block

    def foreign_pct(self, label: str) -> float:
        """Share of the block's wall time other processes ran on the server's core (noise indicator)."""
        block = self.blocks.get(label)
        return 100 * max(0.0, self.foreign.get(label, 0.0)) / block.elapsed if block and block.elapsed else 0.0

    def cpu_ms(self, label: str) -> float:
        block = self.blocks.get(label)
        return 1000 * self.cpu.get(label, 0.0) / block.requests if block and block.requests else math.nan

    def pct(self, label: str, kind: str, p: float) -> float:
        block = self.blocks.get(label)
        return percentile(getattr(block, kind), p) if block else math.nan


def request_maker(port: int, accounts: list[dict[str, Any]] | None,
                  body_kb: int = 0) -> Callable[[int, dict[str, str]], bytes]:
    """Codex-like requests for worker ``i``; with ``accounts``, authenticated as one (direct calls).

    ``body_kb`` > 0 adds a developer message of that size (a long conversation's history).
    """
    history = [{"type": "message", "role": "developer",
                "content": [{"type": "input_text", "text": ("lorem ipsum " * (body_kb * 86))[: body_kb * 1024]}]}]

    def make(i: int, extra: dict[str, str]) -> bytes:
        headers = {"originator": "codex_cli_rs", "session-id": f"bench-session-{i:04d}"}
        if accounts:
            acct = accounts[i % len(accounts)]
            headers.update({"Authorization": f"Bearer {acct['access_token']}",
                            "chatgpt-account-id": acct["chatgpt_account_id"]})
        headers.update(extra)
        body = sample_request(prompt_cache_key=f"bench-{i:04d}")
        if body_kb:
            body["input"] = history + body["input"]
        return build_request(RESPONSES, body, headers, port)

    return make


async def held_streams(target: Target, n: int, hold: float) -> tuple[int, int]:
    """``n`` streams open at once, each spread over ``hold`` s; the server's RSS before and at peak (KB)."""
    before = peak = rss_kb(target.pid)
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_kb(target.pid))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.05)

    sampler = asyncio.ensure_future(sample())
    try:
        await target.measure("held", n, {HOLD_HEADER: str(hold)}, count=1, ramp=50)
    finally:
        done.set()
        await sampler
    return before, peak


async def measure(targets: list[Target], proxy: Target, preset: dict[str, Any],
                  log: Callable[[str], None]) -> dict[str, Any]:
    mem: dict[str, Any] = {}
    for target in targets:
        await target.measure("warm", 16, duration=preset["warm"])
    await asyncio.sleep(0.5)
    mem["idle"] = {t.name: rss_kb(t.pid) for t in targets}
    log(f"{preset['held']} held streams of {preset['hold']} s per target")
    for target in targets:
        mem.setdefault("held", {})[target.name] = await held_streams(target, preset["held"], preset["hold"])
    for label, conc in LOADS:
        rounds, secs = (preset["c1_rounds"], preset["c1_secs"]) if conc == 1 else (preset["rounds"], preset["secs"])
        log(f"c={conc}: {rounds} round(s) of {secs} s per target")
        for r in range(rounds):
            for target in targets[r % len(targets):] + targets[:r % len(targets)]:
                await target.measure(label, conc, duration=secs)
    await asyncio.sleep(1.0)
    mem["idle_after"] = {t.name: rss_kb(t.pid) for t in targets}
    return mem


async def profile(targets: list[Target], out_dir: Path, secs: float, log: Callable[[str], None],
                  concurrency: int = 64) -> None:
    """py-spy the proxy under load: collapsed stacks (``profile.txt``) and a flame graph (``profile.svg``).

    With a floor running (``asgi`` if it runs, else ``bare``), it is profiled the same way
    (``<floor>.txt``) and the proxy's extra cost per request is printed by package and function
    (``bench.pyspy_top --against``).
    """
    from bench.pyspy_top import compare, report

    by = {t.name: t for t in targets}
    runs = [(by["proxy"], "raw", "profile.txt"), (by["proxy"], "flamegraph", "profile.svg")]
    base = by.get("asgi") or by.get("bare")
    if base is not None:
        runs.append((base, "raw", f"{base.name}.txt"))
    for target, fmt, name in runs:
        log(f"py-spy {fmt} of {target.name} for {secs:.0f} s at c={concurrency} -> {out_dir / name}")
        spy = await py_spy(target.pid, out_dir / name, secs, fmt)
        await asyncio.sleep(0.5)
        await target.measure(f"profile-{fmt}", concurrency, duration=secs)
        if await spy.wait():
            log(f"py-spy failed ({spy.returncode}); is ptrace allowed?")
    if (out_dir / "profile.txt").exists():
        print(report(out_dir / "profile.txt"))
    if base is not None and (out_dir / f"{base.name}.txt").exists():
        print("\n" + compare(out_dir / f"{base.name}.txt", base.cpu_ms("profile-raw"), out_dir / "profile.txt",
                              by["proxy"].cpu_ms("profile-raw")))


def table(targets: list[Target], mem: dict[str, Any], held: int) -> tuple[str, dict[str, Any]]:
    """The result table (every target, proxy/direct ratio, proxy minus direct and minus each floor) and its data."""
    by = {t.name: t for t in targets}
    floor, bare, asgi = by.get("floor"), by.get("bare"), by.get("asgi")
    rows: list[tuple[str, Callable[[Target], float]]] = []
    for label, conc in LOADS:
        if conc > 1:
            rows.append((f"c={conc} req/s", lambda t, lb=label: t.blocks[lb].rps))
        kinds = ("ttfb", "ttlb") if conc == 1 else ("ttlb",)
        for kind in kinds:
            for p in (50, 99):
                rows.append((f"c={conc} {kind.upper()} p{p} ms",
                             lambda t, lb=label, k=kind, q=p: 1000 * t.pct(lb, k, q)))
    for label, conc in LOADS:
        rows.append((f"c={conc} CPU ms/req", lambda t, lb=label: t.cpu_ms(lb)))
    for p in (50, 99):
        rows.append((f"{held} held TTLB p{p} s", lambda t, q=p: t.pct("held", "ttlb", q)))
    rows.append(("RSS idle MB", lambda t: mem["idle"][t.name] / 1024))
    rows.append((f"RSS {held} held MB", lambda t: mem["held"][t.name][1] / 1024))
    rows.append(("KB per held stream", lambda t: (mem["held"][t.name][1] - mem["held"][t.name][0]) / held))
    rows.append(("RSS idle after load MB", lambda t: mem["idle_after"][t.name] / 1024))
    names = [t.name for t in targets]
    head = f"{'metric':<24}" + "".join(f"{n:>10}" for n in names) + f"{'prx/dir':>9}{'prx-dir':>10}"
    head += f"{'prx-floor':>10}" if floor else ""
    head += f"{'prx-bare':>10}" if bare else ""
    head += f"{'prx-asgi':>10}" if asgi else ""
    lines, data = [head], {}
    for metric, get in rows:
        values = {t.name: get(t) for t in targets}
        d, p = values["direct"], values["proxy"]
        line = f"{metric:<24}" + "".join(f"{values[n]:>10.3f}" for n in names)
        line += f"{p / d if d else math.nan:>9.2f}{p - d:>+10.3f}"
        line += f"{p - values['floor']:>+10.3f}" if floor else ""
        line += f"{p - values['bare']:>+10.3f}" if bare else ""
        line += f"{p - values['asgi']:>+10.3f}" if asgi else ""
        lines.append(line)
        data[metric] = values
    lines.append("direct = the fake itself (its CPU and RSS); CPU/RSS of the floors and the proxy are their own")
    for target in targets[1:]:
        noise = ", ".join(f"{label} {target.foreign_pct(label):.0f}%" for label in ("c1", "c16", "c64", "held"))
        lines.append(f"other processes on the {target.name}'s core while measuring it (noise): {noise}")
    for target in targets:
        total = Block()
        for block in target.blocks.values():
            total.add(block)
        lines.append(f"{target.name}: {total.requests} requests, statuses {dict(total.statuses)}"
                     + (f", first error {total.first_error}" if total.first_error else ""))
        data[f"{target.name} statuses"] = dict(total.statuses)
    added = data["c=1 TTLB p50 ms"]["proxy"] - data["c=1 TTLB p50 ms"]["direct"]
    checks = [("added TTLB p50 at c=1", added, 1.0, "ms", True),
              ("req/s at c=64", data["c=64 req/s"]["proxy"], 1000.0, "", False),
              ("proxy CPU per request, c=64", data["c=64 CPU ms/req"]["proxy"], 1.0, "ms", True),
              ("RSS idle", data["RSS idle MB"]["proxy"], 80.0, "MB", True),
              ("RSS per held stream", data["KB per held stream"]["proxy"], 30.0, "KB", True)]
    lines.append("targets (proxy):")
    data["targets"] = {}
    if bare:
        checks += pipeline_checks(data)
    for name, value, goal, unit, lower in checks:
        ok = value <= goal if lower else value >= goal
        sign = "<=" if lower else ">="
        verdict = "PASS" if ok else "FAIL"
        lines.append(f"  {verdict}  {name:<30}{value:>10.2f} {unit:<3} (target {sign} {goal:g} {unit})")
        data["targets"][name] = {"value": value, "goal": goal, "pass": ok}
    return "\n".join(lines), data


def pipeline_checks(data: dict[str, Any]) -> list[tuple[str, float, float, str, bool]]:
    """The pipeline's own cost against the bare floor: ``(name, value, goal, unit, lower is better)``."""

    def minus(metric: str) -> float:
        return float(data[metric]["proxy"] - data[metric]["bare"])

    rps = data["c=64 req/s"]
    return [("TTLB p50 at c=1 over bare", minus("c=1 TTLB p50 ms"), 0.15, "ms", True),
            ("req/s at c=64, % of bare", 100 * rps["proxy"] / rps["bare"] if rps["bare"] else math.nan, 90.0, "%",
             False),
            ("CPU per request c=64 over bare", minus("c=64 CPU ms/req"), 0.1, "ms", True)]


async def main_async(args: argparse.Namespace) -> int:
    preset = dict(PRESETS["tiny" if args.tiny else "quick" if args.quick else "default"])
    if args.held is not None:
        preset["held"] = args.held
    if args.rounds is not None:
        preset["rounds"] = preset["c1_rounds"] = args.rounds
    plugins = args.plugins.split(",") if args.plugins else available_plugins()
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    raise_fd_limit()
    proxy_cores, other_cores = cpu_split()
    pin(0, other_cores)
    log(f"proxy on cores {proxy_cores}, fake + client on {other_cores}; plugins {plugins}")
    children: list[Child] = []
    with tempfile.TemporaryDirectory(prefix="codexlb-bench-") as tmp:
        root = Path(tmp)
        try:
            fake, fake_port, accounts = await start_fast_fake(root, args.accounts, other_cores)
            children.append(fake)
            upstream, auth = f"http://127.0.0.1:{fake_port}/backend-api", f"http://127.0.0.1:{fake_port}"
            targets = [Target("direct", fake_port, fake.pid, request_maker(fake_port, accounts, args.body_kb))]
            if not args.no_floor:
                floor, floor_port = await start_floor(root, upstream, root / "fake-accounts.json", proxy_cores)
                children.append(floor)
                targets.append(Target("floor", floor_port, floor.pid, request_maker(floor_port, None, args.body_kb),
                                      proxy_cores))
            if not args.no_bare:
                bare, bare_port = await start_floor(root, upstream, root / "fake-accounts.json", proxy_cores,
                                                    "bench.bare_floor")
                children.append(bare)
                targets.append(Target("bare", bare_port, bare.pid, request_maker(bare_port, None, args.body_kb),
                                      proxy_cores))
            if args.asgi:
                asgi, asgi_port = await start_floor(root, upstream, root / "fake-accounts.json", proxy_cores,
                                                    "bench.asgi_floor")
                children.append(asgi)
                targets.append(Target("asgi", asgi_port, asgi.pid, request_maker(asgi_port, None, args.body_kb),
                                      proxy_cores))
            if args.baseline:
                base_child, base_port = await start_proxy(root / "before", upstream, auth, accounts, plugins,
                                                          proxy_cores, source=args.baseline)
                children.append(base_child)
                targets.append(Target("before", base_port, base_child.pid,
                                      request_maker(base_port, None, args.body_kb), proxy_cores))
            proxy_child, proxy_port = await start_proxy(root, upstream, auth, accounts, plugins, proxy_cores)
            children.append(proxy_child)
            proxy = Target("proxy", proxy_port, proxy_child.pid, request_maker(proxy_port, None, args.body_kb),
                           proxy_cores)
            targets.append(proxy)
            mem = await measure(targets, proxy, preset, log)
            text, data = table(targets, mem, preset["held"])
            print(f"plugins: {', '.join(plugins)}\n{text}", flush=True)
            data.update(machine=machine(), preset=preset, plugins=plugins)
            if args.json:
                args.json.write_text(json.dumps(data, indent=2, default=str))
            if args.profile:
                await profile(targets, args.profile, args.profile_secs, log, args.profile_concurrency)
        except BaseException:
            await asyncio.sleep(3)  # a server shutting down (signal from outside?) has exited by now
            for child in children:
                log(f"{child.log_path.name} (exit status {child.proc.poll()}):\n{child.tail(30)}")
            raise
        finally:
            for child in reversed(children):
                child.stop()
    data["seconds"] = round(time.monotonic() - started, 1)
    if args.json:
        args.json.write_text(json.dumps(data, indent=2, default=str))
    log(f"done in {data['seconds']} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="codexlb proxy overhead against direct calls to the fake")
    parser.add_argument("--quick", action="store_true", help="~30 s instead of ~2 min")
    parser.add_argument("--tiny", action="store_true", help="a few requests (smoke test)")
    parser.add_argument("--accounts", type=int, default=4)
    parser.add_argument("--rounds", type=int, help="rounds per load level and target (more: less noise)")
    parser.add_argument("--held", type=int, help="held streams for the memory test (default 500)")
    parser.add_argument("--plugins", help="comma-separated pipeline (default: the default plugins that exist)")
    parser.add_argument("--body-kb", type=int, default=0, help="pad each request body by this many KB")
    parser.add_argument("--no-floor", action="store_true", help="skip the httpx engine-floor server")
    parser.add_argument("--asgi", action="store_true",
                        help="also run bench.asgi_floor (the bare pass-through without Quart)")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare aiohttp floor server")
    parser.add_argument("--baseline", type=Path, help="also run the proxy of this source tree (column 'before'), "
                        "e.g. `git archive HEAD~1 codexlb plugins migrations | tar -x -C DIR`")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument("--profile", type=Path, help="py-spy the proxy under load; write profile.txt/.svg here")
    parser.add_argument("--profile-secs", type=float, default=10.0)
    parser.add_argument("--profile-concurrency", type=int, default=64, help="load while profiling")
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(main_async(args))
    return uvloop.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
