"""Soak: the proxy under steady mixed load for a set time, faults injected on a schedule.

    .venv/bin/python -m bench.soak                 # 30 minutes, ~100 req/s
    .venv/bin/python -m bench.soak --minutes 240 --out bench/out/soak-4h
    .venv/bin/python -m bench.soak --tiny          # 12 s smoke run (no flatness verdict)

``codexlb fake-upstream`` (8 accounts) and the proxy (``bench.soak_serve``: ``codexlb serve`` plus a
task/lag sampler) run as processes. The load is open-loop at ``--rate`` requests per second over
every route (Codex, ``/v1/responses`` and ``/v1/chat/completions`` streamed and not, compact). Every
``--fault-every`` seconds one fault from :data:`SCHEDULE` is queued through ``POST /_fake/faults``.
Every ``--sample-seconds`` a CSV row records RSS (and where it is: anonymous or file-backed, the C
heap's used and free bytes, SQLite's heap, Python's blocks), open descriptors, asyncio tasks, the
worst loop lag, p50/p99 latency, requests, errors and faults. At the end: ``soak.csv``, ``soak.png``
(matplotlib, from the ``bench`` extra) and ``soak.json`` with the checks: RSS growth under 5 MB/h
after warm-up (by default one pass of the fault schedule: each kind of fault sets the heap's
high-water mark the first time it comes, so the working set is only known after all of them; the
slope after 5 minutes and the largest rise within 5 minutes are reported too); descriptors and
tasks back at their idle level once the load has stopped (``DRAIN_SECONDS``; during the load
they follow the peak of requests in flight, also sampled); and
client errors only within ``FAULT_WINDOW`` seconds after a fault that can break an answer already
under way.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.procs import available_plugins, free_port, proxy_env, raise_fd_limit, rss_kb, spawn, wait_http
from bench.soak_report import plot, verdict

ROOT = Path(__file__).resolve().parent.parent
MESSAGE = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]
CHAT = {"model": "gpt-5.5", "messages": [{"role": "user", "content": "hi"}]}
ROUTES: list[tuple[str, dict[str, Any]]] = [
    ("/backend-api/codex/responses", {"model": "gpt-5.5", "instructions": "", "input": MESSAGE, "stream": True,
                                      "store": False}),
    ("/v1/responses", {"model": "gpt-5.5", "input": "hi", "stream": True}),
    ("/v1/responses", {"model": "gpt-5.5", "input": "hi"}),
    ("/v1/chat/completions", {**CHAT, "stream": True}),
    ("/v1/chat/completions", CHAT),
    ("/backend-api/codex/responses/compact", {"model": "gpt-5.5", "instructions": "", "input": MESSAGE}),
]
SCHEDULE: list[dict[str, Any]] = [
    {"fault": "stall_mid_stream", "after_events": 0, "delay_s": 8},
    {"fault": "server_error", "status": 503},
    {"fault": "drop_mid_stream", "after_events": 2},
    {"fault": "usage_limit", "resets_in_seconds": 30, "account": 1},
    {"fault": "end_mid_stream", "after_events": 2},
    {"fault": "refuse"},
    {"fault": "drop_mid_stream", "after_events": 8},
    {"fault": "response_failed"},
    {"fault": "token_expired", "times": 2},
    {"fault": "stall_mid_stream", "after_events": 8, "delay_s": 8},
    {"fault": "oversized_event", "size_bytes": 3 << 20},
    {"fault": "rate_limited"},
    {"fault": "hang"},
    {"fault": "stall_mid_stream", "after_events": 2, "delay_s": 1},
    {"fault": "cloudflare_403"},
    {"fault": "slow_events", "delay_s": 0.05, "times": 5},
]
"""Faults in turn, one request each unless ``times`` says otherwise. Stalls, drops and ends before the first
output event fail over (a stall costs ``FIRST_BYTE_SECONDS``); after it, the client gets an error."""
FIRST_OUTPUT_FRAME = 3
"""Frames the fake sends before the first output event: ``codex.rate_limits``, ``response.created`` and
``response.in_progress``."""
FIRST_BYTE_SECONDS = 3
IDLE_SECONDS = 5
"""The proxy's first-byte limit per attempt and its stream idle limit during the soak (both under the stalls)."""


def breaks(spec: dict[str, Any]) -> bool:
    """Whether a client sees an error by design after this fault: the answer had already begun."""
    if spec["fault"] == "oversized_event":
        return True
    if spec["fault"] == "stall_mid_stream" and spec.get("delay_s", 0) < IDLE_SECONDS:
        return False
    return spec["fault"] in ("drop_mid_stream", "stall_mid_stream", "end_mid_stream") and \
        spec.get("after_events", 0) > FIRST_OUTPUT_FRAME


ACCOUNTS = 8
FAULT_WINDOW = 20.0
DRAIN_SECONDS = 45.0
"""After the load stops: long enough for the proxy's idle upstream connections to expire (aiohttp closes
them 15 s after their last use, checking every 15 s). Descriptors (but the database pool's files) and tasks
must then be back at their level before the load: connections pooled at a burst's high-water mark are
not a leak, what stays is."""


@dataclass
class Stats:
    """What the load saw since the last sample."""

    latencies: list[float] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)
    requests: int = 0
    inflight: int = 0
    peak_inflight: int = 0


def complete(path: str, status: int, body: bytes, streamed: bool) -> bool:
    if status != 200:
        return False
    if path.endswith("/compact"):
        return b'"compaction"' in body
    if path == "/v1/chat/completions":
        return body.rstrip().endswith(b"[DONE]") and b'"error"' not in body if streamed else b'"choices"' in body
    if streamed:
        return b"response.completed" in body and b"response.failed" not in body
    return b'"completed"' in body


async def one(session: aiohttp.ClientSession, url: str, n: int, stats: Stats) -> None:
    path, body = ROUTES[n % len(ROUTES)]
    start = time.monotonic()
    stats.inflight += 1
    stats.peak_inflight = max(stats.peak_inflight, stats.inflight)
    try:
        async with session.post(url + path, json=body) as response:
            data = await response.read()
            ok = complete(path, response.status, data, bool(body.get("stream")))
            detail = f"{path} {response.status} {data[-200:]!r}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        ok, detail = False, f"{path} {type(exc).__name__}"
    stats.inflight -= 1
    stats.requests += 1
    stats.latencies.append(time.monotonic() - start)
    if not ok:
        stats.errors.append((time.time(), detail))


def load_session() -> aiohttp.ClientSession:
    """The load's client: at most 2000 connections, a minute per answer."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60), connector=aiohttp.TCPConnector(limit=2000))


async def load(session: aiohttp.ClientSession, url: str, rate: float, until: float, stats: Stats) -> None:
    """Open-loop: one request every ``1/rate`` s, whatever the answers' pace (at most 2000 in flight)."""
    tasks: set[asyncio.Task[None]] = set()
    n, start = 0, time.monotonic()
    while time.monotonic() < until:
        if len(tasks) < 2000:
            task = asyncio.ensure_future(one(session, url, n, stats))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        n += 1
        await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
    if tasks:
        await asyncio.wait(tasks, timeout=90)


async def burst(session: aiohttp.ClientSession, url: str, n: int) -> None:
    """``n`` requests at once on the load's session before the load (counted in neither its requests nor
    its errors).

    Both sides' connection pools keep every connection a burst opened for as long as the load reuses
    them (aiohttp hands pooled connections out first-in-first-out), and each open connection holds
    ~30 KB of the proxy's memory. Without this, the first stall of a shared machine that leaves more
    requests in flight than ever before raises RSS and descriptors in a step that is not a leak.
    """
    stats = Stats()
    await asyncio.gather(*(one(session, url, i, stats) for i in range(n)))
    print(f"burst: {n} requests at once, {len(stats.errors)} failed", flush=True)


async def chores(control: str, every: float, until: float, injected: list[tuple[float, dict[str, Any]]]) -> None:
    """Queue the scheduled faults; keep the fake accounts' usage low so the load never drains the pool."""
    async with aiohttp.ClientSession() as session:
        next_fault, n = time.monotonic() + every / 2, 0
        while time.monotonic() < until:
            await session.post(control + "usage", json={"primary_used_percent": 5, "secondary_used_percent": 5})
            if time.monotonic() >= next_fault:
                spec = SCHEDULE[n % len(SCHEDULE)]
                async with session.post(control + "faults", json=spec) as answer:
                    if answer.status != 201:
                        raise RuntimeError(f"fault {spec} refused: {await answer.text()}")
                injected.append((time.time(), spec))
                n, next_fault = n + 1, next_fault + every
            await asyncio.sleep(min(2.0, every / 2))


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def read_stats(path: Path, since: float) -> tuple[int, float, dict[str, float]]:
    """Latest task count, worst lag since ``since`` and the latest memory split from the sampler's file."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    recent = [r for r in rows if r["t"] >= since] or rows[-1:]
    if not recent:
        return 0, 0.0, {}
    memory = {k: v for k, v in recent[-1].items() if k not in ("t", "tasks", "lag_ms")}
    return recent[-1]["tasks"], max(r["lag_ms"] for r in recent), memory


def rss_split(pid: int) -> dict[str, float]:
    """Resident memory by kind (MB): anonymous (heaps), file-backed (code, mapped files), shared memory
    (SQLite's ``-shm`` index)."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile", "RssShmem"):
                out[key[3:].lower() + "_mb"] = round(int(value.split()[0]) / 1024, 2)
    return out


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1000


async def sampler(pid: int, stats_file: Path, every: float, until: float, stats: Stats,
                  injected: list[tuple[float, dict[str, Any]]], rows: list[dict[str, Any]],
                  errors: list[tuple[float, str]]) -> None:
    t0 = time.time()
    last = t0
    while True:
        await asyncio.sleep(max(0.0, min(every, until - time.monotonic() + every)))
        now = time.time()
        tasks, lag, memory = read_stats(stats_file, last)
        taken, stats.latencies = stats.latencies, []
        errs, stats.errors = stats.errors, []
        errors.extend(errs)
        rows.append({"t_s": round(now - t0, 1), "rss_mb": round(rss_kb(pid) / 1024, 2), "fds": fds(pid),
                     "tasks": tasks, "lag_ms": lag, "p50_ms": round(pct(taken, 50), 2),
                     "p99_ms": round(pct(taken, 99), 2), "requests": stats.requests, "errors": len(errs),
                     "faults": sum(1 for t, _ in injected if last < t <= now),
                     "inflight_peak": stats.peak_inflight, **rss_split(pid), **memory})
        stats.requests, stats.peak_inflight = 0, stats.inflight
        print(" ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
        last = now
        if time.monotonic() >= until:
            return


async def idle_sample(pid: int, stats_file: Path, wait: float) -> dict[str, Any]:
    """Descriptors (and what they are) and tasks of the idle proxy after ``wait`` seconds without load."""
    await asyncio.sleep(wait)
    kinds: dict[str, int] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kind = target.split(":")[0] if ":" in target else Path(target).name
        kinds[kind] = kinds.get(kind, 0) + 1
    tasks, _, memory = read_stats(stats_file, time.time() - 2)
    return {"fds": sum(kinds.values()), "tasks": tasks, "fd kinds": kinds, "rss_mb": round(rss_kb(pid) / 1024, 2),
            **rss_split(pid), **memory}


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raise_fd_limit()
    fake = spawn([sys.executable, "-m", "codexlb", "fake-upstream", "--port", "0", "--accounts", str(ACCOUNTS),
                  "--info", str(out / "fake.json")], cwd=ROOT, log_path=out / "fake.log", cores=None)
    proxy = None
    try:
        for _ in range(600):
            if "READY" in (out / "fake.log").read_text():
                break
            if fake.proc.poll() is not None:
                raise RuntimeError(f"fake-upstream exited:\n{fake.tail()}")
            await asyncio.sleep(0.1)
        info = json.loads((out / "fake.json").read_text())
        port = free_port()
        env = proxy_env(out, port, info["upstream_base_url"], info["auth_base_url"], available_plugins())
        env.update({"CODEX_LB_STREAM_IDLE_TIMEOUT_SECONDS": str(IDLE_SECONDS), "CODEX_LB_LOG_LEVEL": "ERROR",
                    "CODEX_LB_UPSTREAM_FIRST_BYTE_TIMEOUT_SECONDS": str(FIRST_BYTE_SECONDS),
                    "CODEX_LB_UPSTREAM_FIRST_BYTE_TOTAL_SECONDS": str(4 * FIRST_BYTE_SECONDS)})
        stats_file = out / "proxy-stats.jsonl"
        stats_file.write_text("")
        proxy = spawn([sys.executable, "-m", "bench.soak_serve", str(stats_file)], cwd=ROOT,
                      log_path=out / "proxy.log", cores=None, env=env)
        url = f"http://127.0.0.1:{port}"
        await asyncio.to_thread(wait_http, f"{url}/healthz", proxy, 60)
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/api/accounts/import",
                                    json=[a["auth_json"] for a in info["accounts"]]) as answer:
                if answer.status != 200:
                    raise RuntimeError(f"import failed: {await answer.text()}")
        idle = {"before": await idle_sample(proxy.pid, stats_file, 3.0)}
        stats, injected, rows, errors = Stats(), [], [], []  # type: ignore[var-annotated]
        async with load_session() as session:
            if args.burst:
                await burst(session, url, args.burst)
            until = time.monotonic() + args.minutes * 60
            await asyncio.gather(load(session, url, args.rate, until, stats),
                                 chores(info["control_url"], args.fault_every, until, injected),
                                 sampler(proxy.pid, stats_file, args.sample_seconds, until, stats, injected, rows,
                                         errors))
        idle["after"] = await idle_sample(proxy.pid, stats_file, 5.0 if args.tiny else DRAIN_SECONDS)
        with (out / "soak.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        breaking = [t for t, spec in injected if breaks(spec)]
        result = verdict(rows, args.warmup_minutes * 60, errors, len(injected), breaking, FAULT_WINDOW,
                         not args.tiny, idle)
        result.update({"minutes": args.minutes, "rate": args.rate, "plot": plot(rows, out / "soak.png"),
                       "faults": [spec for _, spec in injected]})
        (out / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
        return result
    finally:
        if proxy is not None:
            proxy.stop()
        fake.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long the load runs (default 30)")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second (default 100)")
    parser.add_argument("--sample-seconds", type=float, default=10.0, help="sampling interval (default 10)")
    parser.add_argument("--fault-every", type=float, default=30.0, help="seconds between faults (default 30)")
    parser.add_argument("--warmup-minutes", type=float, default=None,
                        help="ignored by the flatness checks (default: one pass of the fault schedule, at least 5)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "soak"), help="folder for csv/png/json")
    parser.add_argument("--burst", type=int, default=200,
                        help="requests sent at once before the load, so the pools start at their high-water mark "
                             "(default 200; 0: none)")
    parser.add_argument("--tiny", action="store_true", help="12 s at 20 req/s: a smoke run, no flatness verdict")
    args = parser.parse_args(argv)
    if args.tiny:
        args.minutes, args.rate, args.sample_seconds, args.fault_every, args.warmup_minutes = 0.2, 20, 3, 4, 0
        args.burst = min(args.burst, 20)
    if args.warmup_minutes is None:
        args.warmup_minutes = max(5.0, len(SCHEDULE) * args.fault_every / 60)
    if args.minutes <= 0 or args.rate <= 0 or args.sample_seconds <= 0 or args.fault_every <= 0:
        parser.error("--minutes, --rate, --sample-seconds and --fault-every must be positive")
    result = asyncio.run(soak(args))
    print(json.dumps({k: v for k, v in result.items() if k != "faults"}, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
