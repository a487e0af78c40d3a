"""A seeded workload of Codex-like conversations for the routing simulation, and the oracle router.

Each conversation has a start time, an initial context (instructions, tools, files read), and turns;
a turn adds a user message, sends the whole history (``prompt_cache_key`` = the thread id, plus the
``session-id``/``thread-id`` headers), then adds the answer and tool output and waits a think time.
The same seed gives the same conversations, bodies and think times.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.sim_upstream import SimUpstream

WORDS = ("def", "class", "return", "import", "self", "value", "async", "await", "test", "config", "error",
         "README", "plugin", "account", "request", "stream", "token", "window", "cache", "router")
OUTPUT_TOKENS = 20
"""Output tokens of one fake answer (20 text deltas), for the oracle's cost estimate."""


@dataclass
class Turn:
    user_bytes: int
    answer_bytes: int
    think: float


@dataclass
class Conversation:
    id: str
    session: str
    start: float
    base_bytes: int
    turns: list[Turn] = field(default_factory=list)


def filler(rng: random.Random, size: int) -> str:
    """About ``size`` bytes of code-ish words."""
    words, total = [], 0
    while total < size:
        word = rng.choice(WORDS)
        words.append(word)
        total += len(word) + 1
    return " ".join(words)


def make_workload(seed: int, conversations: int, spread: float, turns: tuple[int, int],
                  think: tuple[float, float], long_pause: float = 0.1) -> list[Conversation]:
    """``conversations`` starting at random over ``spread`` s, ``turns`` (min, max) turns each."""
    rng = random.Random(seed)
    out = []
    for _ in range(conversations):
        conv = Conversation(id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                            session=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                            start=rng.uniform(0, spread), base_bytes=rng.randint(4000, 9000))
        for _ in range(rng.randint(*turns)):
            pause = rng.uniform(*think) if rng.random() > long_pause else rng.uniform(think[1], 4 * think[1])
            conv.turns.append(Turn(rng.randint(100, 600), rng.randint(300, 2000), pause))
        out.append(conv)
    out.sort(key=lambda c: c.start)
    return out


class Transcript:
    """The growing input of one conversation (deterministic text per conversation)."""

    def __init__(self, conv: Conversation) -> None:
        self.conv = conv
        self.rng = random.Random(conv.id)
        self.items: list[dict[str, Any]] = [
            {"type": "message", "role": "developer",
             "content": [{"type": "input_text", "text": filler(self.rng, conv.base_bytes)}]}]

    def ask(self, turn: Turn) -> None:
        self.items.append({"type": "message", "role": "user",
                           "content": [{"type": "input_text", "text": filler(self.rng, turn.user_bytes)}]})

    def answer(self, turn: Turn) -> None:
        self.items.append({"type": "message", "role": "assistant",
                           "content": [{"type": "output_text", "text": filler(self.rng, turn.answer_bytes)}]})

    def body(self) -> bytes:
        payload = {"model": "gpt-5.5", "instructions": "You are Codex.", "input": self.items, "tools": [],
                   "tool_choice": "auto", "parallel_tool_calls": True, "reasoning": None, "store": False,
                   "stream": True, "include": [], "prompt_cache_key": self.conv.id,
                   "text": {"verbosity": "low"}}
        return json.dumps(payload, separators=(",", ":")).encode()

    def headers(self) -> dict[str, str]:
        return {"content-type": "application/json", "accept": "text/event-stream", "originator": "codex_cli_rs",
                "session-id": self.conv.session, "thread-id": self.conv.id}


def demand(workload: list[Conversation], token_scale: int, cached_weight: float) -> tuple[float, float]:
    """``(cost with every prefix cached, rough duration in s)`` of the whole workload."""
    total, end = 0.0, 0.0
    for conv in workload:
        transcript, previous = Transcript(conv), 0
        for turn in conv.turns:
            transcript.ask(turn)
            tokens = len(transcript.body()) // 4 * token_scale
            total += tokens - previous + cached_weight * previous + OUTPUT_TOKENS
            previous = tokens
            transcript.answer(turn)
        end = max(end, conv.start + sum(t.think + 0.1 for t in conv.turns))
    return total, end


class Oracle:
    """Keeps each conversation on one account until that account cannot pay for the next turn.

    It reads the simulator's state (exact remaining budgets and cache contents). New and moved
    conversations go to the account with the most tokens left per conversation already living there,
    so load spreads instead of piling onto the fullest account.
    """

    def __init__(self, sim: SimUpstream) -> None:
        self.sim = sim
        self.home: dict[str, str] = {}

    def cost_on(self, account_id: str, key: str, tokens: int) -> float:
        entry = self.sim.caches.get(account_id, {}).get(key)
        cached = min(entry[0], tokens) if entry and entry[1] >= self.sim.clock() else 0
        return tokens - cached + self.sim.cached_weight * cached + OUTPUT_TOKENS

    def choose(self, key: str, body_size: int) -> str:
        tokens = max(1, body_size // 4) * self.sim.token_scale
        home = self.home.pop(key, None)
        if home is not None and self.sim.remaining(home) >= self.cost_on(home, key, tokens):
            self.home[key] = home
            return home
        living = Counter(self.home.values())

        def score(account_id: str) -> tuple[float, str]:
            left = self.sim.remaining(account_id) - self.cost_on(account_id, key, tokens)
            return (left / (1 + living[account_id]) if left > 0 else left, account_id)

        best = max(self.sim.accounts, key=score)
        self.home[key] = best
        return best

    def release(self, key: str) -> None:
        """The conversation ended."""
        self.home.pop(key, None)


def ideal_hit_ratio(workload: list[Conversation], token_scale: int) -> float:
    """Cache-hit ratio if no conversation ever moved and no cache entry expired (an upper bound)."""
    cached = total = 0
    for conv in workload:
        transcript, previous = Transcript(conv), 0
        for turn in conv.turns:
            transcript.ask(turn)
            tokens = len(transcript.body()) // 4 * token_scale
            cached, total, previous = cached + min(previous, tokens), total + tokens, tokens
            transcript.answer(turn)
    return cached / total if total else 0.0
