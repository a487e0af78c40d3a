"""Stickiness across replicas: a conversation's turns, spread over the replicas by nginx, stay on one
account while it has quota, and after a move every replica sends the next turns to the new account."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from pathlib import Path

import httpx

from codexlb.testing.fake_upstream import FakeUpstream
from tests.support.cluster import Cluster, cluster

CONVERSATIONS, TURNS = 12, 6


def body(conversation: str, turn: int) -> dict[str, object]:
    return {"model": "gpt-5.5", "instructions": "", "stream": True, "store": False, "prompt_cache_key": conversation,
            "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": f"turn {turn}"}]}]}


async def turn(client: httpx.AsyncClient, url: str, conversation: str, n: int) -> str:
    """One turn; the label of the account that answered it."""
    response = await client.post(f"{url}/backend-api/codex/responses", json=body(conversation, n))
    assert response.status_code == 200, response.text
    assert "response.completed" in response.text
    return response.headers["x-codexlb-account"]


async def conversation_turns(lb: Cluster, conversation: str, first: int, count: int) -> list[tuple[str, str]]:
    """``count`` turns in order through nginx: (replica address, account label) each."""
    out = []
    for n in range(first, first + count):
        response = await lb.client.post("/backend-api/codex/responses", json=body(conversation, n))
        assert response.status_code == 200, response.text
        out.append((lb.replica_of(response).address, response.headers["x-codexlb-account"]))
    return out


async def test_turns_stay_on_one_account_and_follow_a_move_on_every_replica(
        tmp_path: Path, fake: FakeUpstream, database_url: str) -> None:
    async with cluster(tmp_path, fake, database_url, start=False) as lb:
        await lb.seed_accounts(3)
        await lb.start_all()
        names = [f"conversation-{i}" for i in range(CONVERSATIONS)]
        runs = await asyncio.gather(*(conversation_turns(lb, name, 0, TURNS) for name in names))
        placed: dict[str, str] = {}
        on_main = 0
        for name, turns in zip(names, runs, strict=True):
            accounts = Counter(account for _, account in turns)
            placed[name], count = accounts.most_common(1)[0]
            on_main += count
            assert len({replica for replica, _ in turns}) >= 2, f"{name} was not spread over the replicas"
        assert on_main / (CONVERSATIONS * TURNS) >= 0.99, runs

        label = Counter(placed.values()).most_common(1)[0][0]  # the account with most conversations runs out
        moved = [name for name, account in placed.items() if account == label]
        lb.accounts[int(label.removeprefix("acct")) - 1].set_usage(primary=100.0)  # acct<n> is the n-th stored
        after = await asyncio.gather(*(conversation_turns(lb, name, TURNS, 1) for name in moved))
        new_home = {name: turns[0][1] for name, turns in zip(moved, after, strict=True)}
        assert label not in new_home.values()

        where: dict[str, set[str]] = defaultdict(set)
        async with httpx.AsyncClient(timeout=30) as client:  # each replica, asked directly, agrees
            for replica in lb.replicas:
                for name in moved:
                    for n in range(2):
                        where[name].add(await turn(client, replica.url, name, TURNS + 1 + n))
        assert {name: sorted(found) for name, found in where.items()} == {
            name: [account] for name, account in new_home.items()}
