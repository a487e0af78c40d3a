"""Routing under quota pressure: the proxy's routing code against an oracle on a matrix of pool shapes.

    .venv/bin/python -m bench.routing_matrix                 # every scenario x seeds 1-3 (~1 min)
    .venv/bin/python -m bench.routing_matrix --seeds 4-9     # robustness check on other seeds
    .venv/bin/python -m bench.routing_matrix --only uneven --seeds 1

Virtual time (real-sized windows): each arm has its own :class:`SimUpstream` model (token budgets,
prompt cache), used in-process without HTTP. The proxy arm runs the real pipeline
(:class:`codexlb.pipeline.Pipeline` with the default strategies, the pool, failover, the usage tap
and ``codex.rate_limits``), with ``send_upstream`` answered by the model; ``/wham/usage`` is polled
every ``usage_refresh_interval_seconds`` as the usage job does. ``time.time`` is the virtual clock
while a scenario runs. The oracle arm is routed by :class:`bench.matrix_workload.Oracle`. The HTTP
path itself is measured by ``bench.routing_sim``.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import math
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.matrix_workload import (
    CACHE_TTL,
    CACHED_WEIGHT,
    PRO_FACTOR,
    SHORT_SECONDS,
    WEEKLY_SECONDS,
    Conversation,
    Oracle,
    Scenario,
    make_conversations,
    scenarios,
    short_budget,
)
from bench.sim_upstream import SimUpstream
from codexlb import hookimpl
from codexlb.app import CodexLB
from codexlb.flow import Flow, ProxyResponse
from codexlb.jobs.usage import apply_usage
from codexlb.pool import STATUS, Credentials
from codexlb.testing import make_flow
from codexlb.testing.fake_sse import frame, usage_block
from codexlb.testing.harness import make_settings
from codexlb.types import Account, AccountStatus

STRATEGIES = ("select_sticky", "select_least_used", "select_round_robin")
EPOCH = 1_750_000_000.0
RETRY_SECONDS = 5.0
SERVICE_SECONDS = 8.0
"""Seconds a turn takes to answer (virtual)."""


class Clock:
    def __init__(self) -> None:
        self.now = EPOCH

    def __call__(self) -> float:
        return self.now


@contextmanager
def virtual_time(clock: Clock) -> Any:
    real = time.time
    time.time = clock  # type: ignore[assignment]
    try:
        yield
    finally:
        time.time = real  # type: ignore[assignment]


@dataclass
class Result:
    conv: str
    account: str | None
    status: int
    cached: int = 0
    input: int = 0
    cost: float = 0.0
    route: str = ""
    """``strategy:reason`` of the turn (without the route's detail)."""
    quota_left: bool = True
    reset_ok: bool | None = None
    retry_at: float | None = None
    """When a 429 said the pool can answer again."""


@dataclass
class ArmState:
    sim: SimUpstream
    results: list[Result] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)
    present: list[str] = field(default_factory=list)


def build_sim(clock: Clock, scenario: Scenario, budget: float) -> tuple[SimUpstream, list[tuple[float, str]]]:
    """A model with the scenario's accounts; returns it and ``(time, id)`` of accounts added later."""
    sim = SimUpstream(short_seconds=SHORT_SECONDS, weekly_seconds=WEEKLY_SECONDS, cache_ttl=CACHE_TTL,
                      cached_weight=CACHED_WEIGHT, clock=clock, token_scale=1)
    later = []
    for n, spec in enumerate(scenario.accounts):
        factor = PRO_FACTOR if spec.plan == "pro" else 1.0
        account = sim.add_sim_account(
            short_budget=budget * factor, weekly_budget=budget * factor * spec.weekly_factor,
            short_used=spec.short_used, weekly_used=spec.weekly_used,
            short_reset_in=int(spec.short_reset_in) if spec.short_reset_in else None,
            weekly_reset_in=int(spec.weekly_reset_in or WEEKLY_SECONDS * (0.3 + 0.1 * n)),
            plan_type=spec.plan, email=f"acct{n + 1}@sim")
        if spec.added_at:
            later.append((spec.added_at, account.chatgpt_account_id))
    return sim, later


class SimSend:
    """``send_upstream`` answered by the model; the core applies its headers and classifies failures."""

    def __init__(self, state: ArmState) -> None:
        self.state = state

    @hookimpl
    async def send_upstream(self, flow: Flow, account: Account) -> ProxyResponse | None:
        sim = self.state.sim
        fake = sim.accounts[account.chatgpt_account_id or ""]
        if fake.chatgpt_account_id in self.state.revoked:
            return ProxyResponse(401, [], b'{"error": {"message": "token revoked", "code": "token_revoked"}}')
        if fake.limit_reached() is not None:
            at = int(sim.usable_at(fake.chatgpt_account_id))
            body = {"error": {"type": "usage_limit_reached", "message": "limit", "resets_at": at,
                              "resets_in_seconds": max(0, at - int(sim.clock()))}}
            return ProxyResponse(429, list(fake.rate_limit_headers()), json.dumps(body).encode())
        payload = flow.request.payload or {}
        tokens, output = int(payload["sim_tokens"]), int(payload["sim_output"])
        cached, _ = sim.charge_turn(fake, payload.get("prompt_cache_key"), tokens, output)
        completed = {"type": "response.completed", "response": {"id": "r", "status": "completed",
                                                                 "usage": usage_block(tokens, cached, output, 0)}}
        frames = [frame(fake.rate_limits_event()), frame(completed)]

        async def stream() -> AsyncIterator[bytes]:
            for chunk in frames:
                yield chunk

        headers = [("content-type", "text/event-stream"), *fake.rate_limit_headers()]
        return ProxyResponse(200, headers, stream())


def true_earliest_reset(state: ArmState) -> float:
    """When the first account can answer again (usage as the upstream reports it, to 0.01 %)."""
    sim, now = state.sim, state.sim.clock()
    times = []
    for a in state.present:
        if a not in state.revoked:
            spent = [w.reset_at for w in sim.accounts[a].windows() if w is not None and round(w.used_percent, 2) >= 100]
            times.append(max(spent) if spent else now)
    return min(times)


def has_quota(state: ArmState) -> bool:
    """Whether any account can answer now, as the upstream reports usage (to 0.01 %)."""
    sim = state.sim
    return any(all(w is None or round(w.used_percent, 2) < 100 for w in sim.accounts[a].windows())
               for a in state.present if a not in state.revoked)


async def run_arm(scenario: Scenario, seed: int, kind: str, tmp: Path) -> dict[str, Any]:
    clock = Clock()
    convs = make_conversations(seed, scenario.conversations, scenario.duration)
    budget = short_budget(scenario, convs)
    with virtual_time(clock):
        sim, later = build_sim(clock, scenario, budget)
        state = ArmState(sim)
        state.present = [a for a in sim.accounts if a not in {x for _, x in later}]
        revocations = sorted((spec.revoked_at, aid) for spec, aid in zip(scenario.accounts, sim.accounts,
                                                                        strict=True) if spec.revoked_at)
        router: Any = Oracle(sim) if kind == "oracle" else ProxyArm(state, tmp)
        if kind != "oracle":
            for aid in state.present:
                router.add(aid)
        queue: list[tuple[float, int, int, int]] = []  # (time, seq, conversation index, turn index)
        for i, conv in enumerate(convs):
            heapq.heappush(queue, (EPOCH + conv.start, i, i, 0))
        seq = len(convs)
        next_poll = EPOCH
        while queue:
            at, _, ci, ti = heapq.heappop(queue)
            clock.now = at
            while later and EPOCH + later[0][0] <= at:
                _, aid = later.pop(0)
                state.present.append(aid)
                if kind != "oracle":
                    router.add(aid)
            while revocations and EPOCH + revocations[0][0] <= at:
                state.revoked.add(revocations.pop(0)[1])
            if kind != "oracle" and at >= next_poll:
                router.poll()
                next_poll = at + router.poll_interval
            conv: Conversation = convs[ci]
            turn = conv.turns[ti]
            if kind == "oracle":
                result = oracle_turn(router, state, conv, ti)
            else:
                result = await router.turn(conv, ti)
            state.results.append(result)
            seq += 1
            if result.status == 200:
                if ti + 1 < len(conv.turns):
                    heapq.heappush(queue, (at + SERVICE_SECONDS + turn.gap, seq, ci, ti + 1))
                elif kind == "oracle":
                    router.release(conv.id)
            else:  # the client waits for the reset it was told (or a few seconds) and sends the turn again
                retry = max(at + RETRY_SECONDS, (result.retry_at or 0.0) + 1.0)
                heapq.heappush(queue, (retry, seq, ci, ti))
    return summarise(state, len(convs))


def oracle_turn(oracle: Oracle, state: ArmState, conv: Conversation, ti: int) -> Result:
    sim, turn = state.sim, conv.turns[ti]
    accounts = [a for a in state.present if a not in state.revoked]
    chosen = oracle.choose(conv.id, turn.tokens, turn.output, accounts)
    if chosen is None or sim.accounts[chosen].limit_reached() is not None:
        return Result(conv.id, None, 429, quota_left=False, reset_ok=True, retry_at=true_earliest_reset(state))
    before = sim.stats.get(chosen)
    cost_before = before.cost if before else 0.0
    cached, _ = sim.charge_turn(sim.accounts[chosen], conv.id, turn.tokens, turn.output)
    return Result(conv.id, chosen, 200, cached, turn.tokens, sim.stats[chosen].cost - cost_before)


class ProxyArm:
    """The proxy's pipeline and pool, in-process, answering from the model."""

    def __init__(self, state: ArmState, tmp: Path) -> None:
        self.state = state
        settings = make_settings(tmp, pipeline_plugins=STRATEGIES)
        self.app = CodexLB(settings, [SimSend(state)])
        self.poll_interval = float(settings.usage_refresh_interval_seconds)
        self.app.tokens.refresh = self._refresh  # type: ignore[method-assign]

    async def _refresh(self, account: Account, *, force: bool = False, failed: str | None = None) -> bool:
        """What a refresh does for a revoked account: ``invalid_grant``, so re-login is required."""
        if account.chatgpt_account_id in self.state.revoked:
            self.app.pool.set_status(account, AccountStatus.REAUTH_REQUIRED, "refresh token revoked")
        return False

    def add(self, account_id: str) -> None:
        fake = self.state.sim.accounts[account_id]
        self.app.pool.accounts[account_id] = Account(id=account_id, label=fake.email, plan_type=fake.plan_type,
                                                     chatgpt_account_id=account_id)
        self.app.pool.credentials[account_id] = Credentials(f"sim-token-{account_id}")

    def poll(self) -> None:
        """The usage job: ``/wham/usage`` for every active or limited account."""
        now = time.time()
        for account in self.app.pool.all():
            if account.status in (AccountStatus.PAUSED, AccountStatus.REAUTH_REQUIRED):
                continue
            if account.chatgpt_account_id in self.state.revoked:
                continue
            limit = apply_usage(account, self.state.sim.accounts[account.id].usage_json(), now)
            if limit is not None:
                status, until, reason = limit
                account.cooldown_until = until
                self.app.pool.set_status(account, status, reason)
            elif account.status is not AccountStatus.ACTIVE:
                account.cooldown_until = min(account.cooldown_until, now)
                self.app.pool.set_status(account, AccountStatus.ACTIVE, None)
            self.app.pool.mark_dirty(account, STATUS)

    async def turn(self, conv: Conversation, ti: int) -> Result:
        turn, sim = conv.turns[ti], self.state.sim
        payload = {"model": "gpt-5.5", "input": [{"role": "user", "content": "x"}], "stream": True,
                   "prompt_cache_key": conv.id, "sim_tokens": turn.tokens, "sim_output": turn.output}
        flow = make_flow(payload=payload, headers={"content-type": "application/json", "session-id": conv.id})
        quota = has_quota(self.state)
        before = {a: s.cost for a, s in sim.stats.items()}
        response = await self.app.pipeline.run(flow)
        if response.streaming:
            async for _ in response.body:  # type: ignore[union-attr]
                pass
        flow.status = response.status
        await self.app.hooks.flow_done(flow)
        account = flow.account.id if flow.account and response.status == 200 else None
        if response.status != 200:
            result = Result(conv.id, None, response.status, route=route_of(flow), quota_left=quota)
            if response.status == 429:
                body = json.loads(response.body)  # type: ignore[arg-type]
                told = float(body["error"].get("resets_at") or 0)
                true = true_earliest_reset(self.state)
                result.reset_ok = abs(told - true) <= 1.0
                result.retry_at = told
            return result
        usage = flow.usage
        cost = sum(s.cost for s in sim.stats.values()) - sum(before.values())
        return Result(conv.id, account, 200, usage.cached if usage else 0, usage.input if usage else 0, cost,
                      route_of(flow))


def route_of(flow: Flow) -> str:
    route = flow.route
    return f"{route.strategy}:{route.reason}" if route is not None else ""


def summarise(state: ArmState, conversations: int) -> dict[str, Any]:
    ok = [r for r in state.results if r.status == 200]
    paths: dict[str, list[str | None]] = {}
    for r in ok:
        paths.setdefault(r.conv, []).append(r.account)
    switches = sum(sum(1 for a, b in zip(p, p[1:], strict=False) if a != b) for p in paths.values())
    later = sum(len(p) - 1 for p in paths.values())
    inputs = sum(r.input for r in ok)
    bad = [r for r in state.results if r.status != 200]
    return {
        "turns": len(ok), "conversations": conversations,
        "cache_hit": sum(r.cached for r in ok) / inputs if inputs else math.nan,
        "switch_rate": switches / later if later else 0.0,
        "multi_account": sum(1 for p in paths.values() if len(set(p)) > 1) / max(1, len(paths)),
        "quota_per_turn": sum(r.cost for r in ok) / max(1, len(ok)),
        "errors_with_quota": sum(1 for r in bad if r.quota_left),
        "exhausted_429": sum(1 for r in bad if r.status == 429 and not r.quota_left),
        "wrong_reset": sum(1 for r in bad if r.reset_ok is False),
        "errors": dict(Counter(str(r.status) for r in bad)),
        "routes": dict(Counter(r.route for r in state.results if r.route)),
    }


def compare(oracle: dict[str, Any], proxy: dict[str, Any]) -> dict[str, Any]:
    hit = proxy["cache_hit"] / oracle["cache_hit"] if oracle["cache_hit"] else math.nan
    multi = proxy["multi_account"] / oracle["multi_account"] if oracle["multi_account"] else (
        1.0 if proxy["multi_account"] == 0 else math.inf)
    quota = proxy["quota_per_turn"] / oracle["quota_per_turn"]
    checks = {"cache": hit >= 0.98, "multi": proxy["multi_account"] <= 1.2 * oracle["multi_account"] + 1e-9,
              "quota": quota <= 1.05, "errors": proxy["errors_with_quota"] == 0,
              "reset": proxy["wrong_reset"] == 0}
    return {"hit_ratio": hit, "multi_ratio": multi, "quota_ratio": quota, "checks": checks,
            "pass": all(checks.values())}


def parse_seeds(text: str) -> list[int]:
    if "-" in text:
        low, high = text.split("-")
        return list(range(int(low), int(high) + 1))
    return [int(s) for s in text.split(",")]


async def main_async(args: argparse.Namespace) -> int:
    rows = []
    with tempfile.TemporaryDirectory(prefix="codexlb-matrix-") as tmp:
        for scenario in scenarios():
            if args.only and scenario.name not in args.only.split(","):
                continue
            for seed in parse_seeds(args.seeds):
                oracle = await run_arm(scenario, seed, "oracle", Path(tmp))
                proxy = await run_arm(scenario, seed, "proxy", Path(tmp))
                verdict = compare(oracle, proxy)
                rows.append({"scenario": scenario.name, "seed": seed, "oracle": oracle, "proxy": proxy, **verdict})
                print(line(rows[-1]), flush=True)
    worst = min(rows, key=lambda r: (r["pass"], r["hit_ratio"]))
    print(f"worst: {worst['scenario']} seed {worst['seed']}: {line(worst)}")
    print(f"{sum(r['pass'] for r in rows)}/{len(rows)} runs meet every target")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0 if all(r["pass"] for r in rows) else 1


def line(row: dict[str, Any]) -> str:
    o, p, c = row["oracle"], row["proxy"], row["checks"]
    mark = lambda ok: "" if ok else "!"  # noqa: E731
    return (f"{row['scenario']:<16} s{row['seed']:<2} turns {p['turns']:>5}  "
            f"hit {o['cache_hit']:.3f}/{p['cache_hit']:.3f}={row['hit_ratio']:.3f}{mark(c['cache'])}  "
            f"multi {o['multi_account']:.2f}/{p['multi_account']:.2f}{mark(c['multi'])}  "
            f"quota/turn x{row['quota_ratio']:.3f}{mark(c['quota'])}  "
            f"err-with-quota {p['errors_with_quota']}{mark(c['errors'])}  "
            f"exhausted-429 {o['exhausted_429']}/{p['exhausted_429']} "
            f"wrong-reset {p['wrong_reset']}{mark(c['reset'])}  "
            f"routes {p['routes']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="codexlb routing against an oracle on a matrix of pool shapes")
    parser.add_argument("--seeds", default="1-3", help="e.g. 1-3 or 4,7,9")
    parser.add_argument("--only", help="comma-separated scenario names")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
