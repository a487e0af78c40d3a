"""Stickiness across replicas: a conversation's turns, spread over the replicas by nginx, stay on one
account while it has quota, and after a move every replica sends the next turns to the new account."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx

from codexlb.testing.fake_upstream import FakeUpstream
from tests.support.cluster import Cluster, cluster

CONVERSATIONS, TURNS = 13, 6
"""13, not a multiple of the 3 replicas: nginx deals turns out in turn, and with 12 conversations in
lockstep each one's turns would land on the same replica every round (k + 12 r = k mod 3)."""


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


async def test_turns_spread_over_the_replicas_stay_on_one_account(
        tmp_path: Path, fake: FakeUpstream, database_url: str) -> None:
    async with cluster(tmp_path, fake, database_url, start=False) as lb:
        await lb.seed_accounts(3)
        await lb.start_all()
        names = [f"conversation-{i}" for i in range(CONVERSATIONS)]
        runs = await asyncio.gather(*(conversation_turns(lb, name, 0, TURNS) for name in names))
    on_main = 0
    for name, turns in zip(names, runs, strict=True):
        on_main += Counter(account for _, account in turns).most_common(1)[0][1]
        assert len({replica for replica, _ in turns}) >= 2, f"{name} was not spread over the replicas"
    assert on_main / (CONVERSATIONS * TURNS) >= 0.99, runs


async def test_first_turns_racing_on_every_replica_agree(
        tmp_path: Path, fake: FakeUpstream, database_url: str) -> None:
    async with cluster(tmp_path, fake, database_url, start=False) as lb, httpx.AsyncClient(timeout=30) as client:
        await lb.seed_accounts(3)
        await lb.start_all()
        for n in range(CONVERSATIONS):  # the same first turn reaches every replica at once
            first = await asyncio.gather(*(turn(client, r.url, f"race-{n}", 0) for r in lb.replicas))
            assert len(set(first)) == 1, f"race-{n} was placed on {first}"
            later = await conversation_turns(lb, f"race-{n}", 1, len(lb.replicas))
            assert {account for _, account in later} == set(first)


async def test_after_a_move_every_replica_sends_the_next_turns_to_the_new_account(
        tmp_path: Path, fake: FakeUpstream, database_url: str) -> None:
    loop = asyncio.get_running_loop()
    async with cluster(tmp_path, fake, database_url, start=False) as lb, httpx.AsyncClient(timeout=30) as client:
        await lb.seed_accounts(3)
        await lb.start_all()
        turns = iter(range(1000))

        async def everywhere(name: str) -> set[str]:
            """The account each replica, asked directly, answers the conversation's next turn from."""
            return set(await asyncio.gather(*(turn(client, r.url, name, next(turns)) for r in lb.replicas)))

        async def agreed(name: str, within: float) -> str:
            since = loop.time()
            while len(found := await everywhere(name)) != 1:
                assert loop.time() - since <= within, f"replicas still disagree on {name}: {found}"
                await asyncio.sleep(0.2)
            return found.pop()

        home = await agreed("moving", 0)  # placed once, read by the others from the shared table
        lb.accounts[int(home.removeprefix("acct")) - 1].set_usage(primary=100.0)  # acct<n>: the n-th stored
        [(_, moved_to)] = await conversation_turns(lb, "moving", next(turns), 1)
        assert moved_to != home
        assert await agreed("moving", 5) == moved_to
        for _ in range(3):  # and they stay there
            assert await everywhere("moving") == {moved_to}
