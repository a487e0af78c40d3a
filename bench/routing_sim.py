"""Routing quality in a simulation: the proxy's strategies against an oracle, on the same workload.

    .venv/bin/python -m bench.routing_sim            # ~1.5 minutes
    .venv/bin/python -m bench.routing_sim --quick    # ~30 s
    .venv/bin/python -m bench.routing_sim --matrix   # the scenario matrix (bench.routing_matrix), ~1 min
    .venv/bin/python -m bench.routing_sim --quick --replicas 3   # through 3 replicas behind nginx

Two identical :class:`~bench.sim_upstream.SimUpstream` fakes run in this process (quota
windows with token budgets in compressed time, a prompt cache, slower first events on cache misses),
with the same accounts and starting usage (some partly spent). The same seeded conversations run at the
same time against both: one set through ``codexlb serve`` (own process and core, the default plugins that
exist), the other routed by :class:`bench.workload.Oracle`. The report compares cache-hit ratio,
account switches, errors, time to first event and where the tokens went.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.fastfake import account_info
from bench.loadclient import percentile
from bench.procs import available_plugins, cpu_split, machine, pin, py_spy, start_proxy
from bench.sim_upstream import SimUpstream
from bench.workload import Conversation, Oracle, Transcript, demand, ideal_hit_ratio, make_workload
from codexlb.testing.fake_sse import parse_sse

PRESETS: dict[str, dict[str, Any]] = {
    "default": {"conversations": 40, "spread": 30.0, "turns": (8, 24), "think": (0.3, 2.5), "short": 60},
    "quick": {"conversations": 16, "spread": 8.0, "turns": (4, 10), "think": (0.2, 1.5), "short": 20},
    "tiny": {"conversations": 3, "spread": 0.5, "turns": (2, 3), "think": (0.05, 0.1), "short": 20},
}
RESPONSES = "/codex/responses"
DELTA = b"event: response.output_text.delta"


@dataclass
class TurnResult:
    conv: str
    account: str | None
    status: str
    ttfe: float = 0.0
    ttft: float = 0.0
    """Time to the first output delta (what a user waits for)."""
    input: int = 0
    cached: int = 0
    quota_left: bool = True
    route: str = ""


@dataclass
class Arm:
    """One side of the comparison: a simulator, how to reach it, and what happened."""

    name: str
    sim: SimUpstream
    results: list[TurnResult] = field(default_factory=list)
    abandoned: int = 0


def setup_accounts(sim: SimUpstream, n: int, short_budget: float, weekly_factor: float) -> None:
    """``n`` accounts with staggered short windows; the first three start partly used."""
    starts = [{"weekly_used": 0.97}, {"short_used": 0.85}, {"short_used": 0.4}]
    for i in range(n):
        used = starts[i] if i < len(starts) else {}
        sim.add_sim_account(short_budget=short_budget, weekly_budget=short_budget * weekly_factor,
                            short_reset_in=max(1, int(sim.short_seconds * (i + 1) / n)), **used)


async def send(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], arm: Arm,
               conv: str, account: str | None, labels: dict[str, str]) -> TurnResult:
    start = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers) as answer:
            chunks, first, output, tail = [], 0.0, 0.0, b""
            async for chunk in answer.content.iter_any():
                first = first or time.perf_counter()
                if not output and DELTA in tail + chunk:
                    output = time.perf_counter()
                tail = chunk[-len(DELTA):]
                chunks.append(chunk)
            used = labels.get(answer.headers.get("x-codexlb-account", ""), account)
            route = answer.headers.get("x-codexlb-route", "")
            status = answer.status
    except aiohttp.ClientError as exc:
        return TurnResult(conv, account, f"conn:{type(exc).__name__}", quota_left=arm.sim.has_quota())
    if status != 200:
        return TurnResult(conv, used, str(status), quota_left=arm.sim.has_quota(), route=route)
    events = parse_sse(b"".join(chunks))
    done = next((e for name, e in events if e.get("type") == "response.completed"), None)
    if done is None:
        return TurnResult(conv, used, "stream_error", quota_left=arm.sim.has_quota(), route=route)
    usage = done["response"].get("usage") or {}
    return TurnResult(conv, used, "ok", first - start, (output or first) - start, int(usage.get("input_tokens", 0)),
                      int((usage.get("input_tokens_details") or {}).get("cached_tokens", 0)), route=route)


async def converse(conv: Conversation, arm: Arm, session: aiohttp.ClientSession, begin: float,
                   target: dict[str, Any]) -> None:
    await asyncio.sleep(max(0.0, begin + conv.start - time.monotonic()))
    transcript = Transcript(conv)
    for turn in conv.turns:
        transcript.ask(turn)
        body = transcript.body()
        for _attempt in range(3):
            headers = transcript.headers()
            account = None
            if target["oracle"] is not None:
                account = target["oracle"].choose(conv.id, len(body))
                headers.update(arm.sim.accounts[account].headers())
            result = await send(session, target["url"], body, headers, arm, conv.id, account, target["labels"])
            arm.results.append(result)
            if result.status == "ok":
                break
            await asyncio.sleep(max(turn.think, 0.5))
        else:
            arm.abandoned += 1
            break
        transcript.answer(turn)
        await asyncio.sleep(turn.think)
    if target["oracle"] is not None:
        target["oracle"].release(conv.id)


def summarise(arm: Arm) -> dict[str, Any]:
    ok = [r for r in arm.results if r.status == "ok"]
    paths: dict[str, list[str | None]] = {}
    for r in ok:
        paths.setdefault(r.conv, []).append(r.account)
    switches = sum(sum(1 for a, b in zip(p, p[1:], strict=False) if a != b) for p in paths.values())
    returns = sum(sum(1 for i in range(1, len(p)) if p[i] != p[i - 1] and p[i] in p[:i - 1]) for p in paths.values())
    later_turns = sum(len(p) - 1 for p in paths.values())
    errors = Counter(r.status for r in arm.results if r.status != "ok")
    bad_while_quota = sum(1 for r in arm.results if r.status != "ok" and r.quota_left
                          and (r.status in ("429", "stream_error") or r.status.startswith(("5", "conn"))))
    inputs = sum(r.input for r in ok)
    stats = arm.sim.stats
    served = sum(s.input_tokens for s in stats.values()) or 1
    return {
        "turns ok": len(ok), "turns failed": len(arm.results) - len(ok), "abandoned conversations": arm.abandoned,
        "cache-hit ratio": sum(r.cached for r in ok) / inputs if inputs else math.nan,
        "turns that switched account": switches / later_turns if later_turns else 0.0,
        "  of which back to an earlier account": returns / later_turns if later_turns else 0.0,
        "conversations on >1 account": sum(1 for p in paths.values() if len(set(p)) > 1) / max(1, len(paths)),
        "TTFE p50 ms": 1000 * percentile([r.ttfe for r in ok], 50),
        "TTFE p90 ms": 1000 * percentile([r.ttfe for r in ok], 90),
        "first output delta p50 ms": 1000 * percentile([r.ttft for r in ok], 50),
        "first output delta p90 ms": 1000 * percentile([r.ttft for r in ok], 90),
        "errors": dict(errors), "429/5xx while an account had quota": bad_while_quota,
        "token share": {f"acct{i}": stats[a].input_tokens / served if a in stats else 0.0
                        for i, a in enumerate(arm.sim.accounts, 1)},
        "cost (quota tokens)": sum(s.cost for s in stats.values()),
        "routes": dict(Counter(r.route for r in arm.results if r.route)),
    }


def render(oracle: dict[str, Any], proxy: dict[str, Any]) -> str:
    lines = [f"{'metric':<40}{'oracle':>12}{'proxy':>12}{'proxy/oracle':>14}"]
    for key, value in oracle.items():
        other = proxy[key]
        if isinstance(value, dict):
            lines.append(f"{key:<40}")
            for sub in sorted(set(value) | set(other)):
                a, b = value.get(sub, 0), other.get(sub, 0)
                lines.append(f"  {sub:<38}{a:>12.3f}{b:>12.3f}" if isinstance(a, float) or isinstance(b, float)
                             else f"  {sub:<38}{a:>12}{b:>12}")
            continue
        ratio = other / value if value else math.nan
        lines.append(f"{key:<40}{value:>12.3f}{other:>12.3f}{ratio:>14.3f}")
    hit = proxy["cache-hit ratio"] / oracle["cache-hit ratio"] if oracle["cache-hit ratio"] else math.nan
    bad = proxy["429/5xx while an account had quota"]
    lines.append("targets (proxy):")
    lines.append(f"  {'PASS' if hit >= 0.98 else 'FAIL'}  cache-hit ratio {100 * hit:.1f}% of the oracle's (>= 98%)")
    lines.append(f"  {'PASS' if bad == 0 else 'FAIL'}  {bad} client-visible 429/5xx while an account had quota (0)")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    preset = dict(PRESETS["tiny" if args.tiny else "quick" if args.quick else "default"])
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    short = args.short or preset["short"]
    sim_options = {"short_seconds": short, "weekly_seconds": short * 30, "cache_ttl": args.cache_ttl,
                   "event_delay": 0.002}
    workload = make_workload(args.seed, preset["conversations"], preset["spread"], preset["turns"], preset["think"])
    probe = SimUpstream(**sim_options)
    cost, duration = demand(workload, probe.token_scale, probe.cached_weight)
    short_budget = args.capacity * cost / duration * short / args.accounts
    log(f"{len(workload)} conversations, {sum(len(c.turns) for c in workload)} turns, ~{duration:.0f} s; "
        f"demand {cost / duration:,.0f} tokens/s cached; short budget {short_budget:,.0f} per {short} s")
    proxy_cores, other_cores = cpu_split()
    pin(0, other_cores)
    plugins = args.plugins.split(",") if args.plugins else available_plugins()
    # strategy time constants scaled like the windows (5 h -> ``short`` s)
    scale = short / (5 * 3600)
    extra_env = {"CODEX_LB_USAGE_REFRESH_ENABLED": "true",
                 "CODEX_LB_USAGE_REFRESH_INTERVAL_SECONDS": str(max(1, round(60 * scale))),
                 "CODEX_LB_PLUGINS__SELECT_LEAST_USED__RESET_SOON_SECONDS": str(300 * scale)}
    arms = [Arm("oracle", SimUpstream(**sim_options)), Arm("proxy", SimUpstream(**sim_options))]
    with tempfile.TemporaryDirectory(prefix="codexlb-sim-") as tmp:
        for arm in arms:
            await arm.sim.start()
            setup_accounts(arm.sim, args.accounts, short_budget, args.weekly_factor)
        oracle_sim, proxy_sim = arms[0].sim, arms[1].sim
        stack = contextlib.AsyncExitStack()
        if args.replicas:
            from tests.support.cluster import cluster
            from tests.support.postgres import POSTGRES_URL_ENV, temp_postgres_database

            database = await stack.enter_async_context(temp_postgres_database(os.environ[POSTGRES_URL_ENV]))
            lb = await stack.enter_async_context(cluster(
                Path(tmp), proxy_sim, database, replicas=args.replicas, plugins=plugins, start=False,
                env={**extra_env, "CODEX_LB_LOG_LEVEL": "WARNING"}))
            await lb.store_accounts(list(proxy_sim.accounts.values()))
            await lb.start_all()
            url, pid = lb.url, None
            log(f"{args.replicas} replica(s) on one PostgreSQL behind nginx with {plugins}")
        else:
            proxy, port = await start_proxy(Path(tmp), proxy_sim.base_url, proxy_sim.auth_base_url,
                                            [account_info(a) for a in proxy_sim.accounts.values()], plugins,
                                            proxy_cores, extra_env)
            stack.callback(proxy.stop)
            url, pid = f"http://127.0.0.1:{port}", proxy.pid
            log(f"proxy on cores {proxy_cores} with {plugins}; oracle and fakes here on {other_cores}")
        labels = {f"acct{i}": a for i, a in enumerate(proxy_sim.accounts, 1)}
        targets = [{"url": oracle_sim.base_url + RESPONSES, "oracle": Oracle(oracle_sim), "labels": {}},
                   {"url": f"{url}/backend-api{RESPONSES}", "oracle": None, "labels": labels}]
        spy = await py_spy(pid, args.profile / "sim-profile.txt", duration + 5) if args.profile and pid else None
        try:
            timeout = aiohttp.ClientTimeout(total=120)
            async with aiohttp.ClientSession(timeout=timeout) as s1, aiohttp.ClientSession(timeout=timeout) as s2:
                begin = time.monotonic() + 0.5
                async with asyncio.TaskGroup() as group:
                    for conv in workload:
                        for arm, target, session in zip(arms, targets, (s1, s2), strict=True):
                            group.create_task(converse(conv, arm, session, begin, target))
        finally:
            if spy is not None:
                if spy.returncode is None:
                    spy.send_signal(signal.SIGINT)  # py-spy writes its output and exits
                await spy.wait()
            await stack.aclose()
            for arm in arms:
                await arm.sim.stop()
    summaries = [summarise(arm) for arm in arms]
    ideal = ideal_hit_ratio(workload, probe.token_scale)
    where = f"{args.replicas} replica(s) behind nginx on PostgreSQL" if args.replicas else "one process on SQLite"
    print(f"plugins: {', '.join(plugins)}; {args.accounts} accounts; seed {args.seed}; {where}")
    print(render(*summaries))
    print(f"ideal cache-hit ratio (no conversation ever moves, nothing expires): {ideal:.3f}")
    if args.profile and (args.profile / "sim-profile.txt").exists():
        from bench.pyspy_top import report

        print(report(args.profile / "sim-profile.txt"))
    seconds = round(time.monotonic() - started, 1)
    if args.json:
        args.json.write_text(json.dumps({"oracle": summaries[0], "proxy": summaries[1], "ideal cache-hit": ideal,
                                         "plugins": plugins, "replicas": args.replicas,
                                         "machine": machine(), "preset": preset, "seconds": seconds}, indent=2))
    log(f"done in {seconds} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if "--matrix" in argv:  # pool shapes x seeds in virtual time, see bench.routing_matrix
        from bench import routing_matrix

        return routing_matrix.main([a for a in argv if a != "--matrix"])
    parser = argparse.ArgumentParser(description="codexlb routing quality against an oracle, in a simulation")
    parser.add_argument("--quick", action="store_true", help="~30 s instead of ~1.5 min")
    parser.add_argument("--tiny", action="store_true", help="a few turns (smoke test)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--accounts", type=int, default=5)
    parser.add_argument("--capacity", type=float, default=1.5,
                        help="short-window budgets over the demand with perfect caching (all accounts)")
    parser.add_argument("--weekly-factor", type=float, default=8.0, help="weekly budget / short budget")
    parser.add_argument("--short", type=int, help="short window in s (default 60; the weekly one is 30x)")
    parser.add_argument("--cache-ttl", type=float, default=30.0, help="prompt cache TTL in s")
    parser.add_argument("--plugins", help="comma-separated pipeline (default: the default plugins that exist)")
    parser.add_argument("--replicas", type=int, default=0,
                        help="N codexlb replicas on one throw-away PostgreSQL database (CODEX_LB_TEST_POSTGRES_URL) "
                             "behind nginx (tests/support/cluster.py); default: one process on SQLite")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument("--profile", type=Path, help="py-spy the proxy over the run; write sim-profile.txt here")
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(main_async(args))
    return uvloop.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
