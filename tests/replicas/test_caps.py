"""Two ``codexlb serve`` processes on one PostgreSQL: they agree on placements and moves at once, and a
cap set through one is honoured by the other within seconds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from codexlb.testing.fake_upstream import FakeUpstream
from tests.replicas.test_stickiness import body
from tests.support.cluster import Replica, cluster

HONOURED_WITHIN = 5.0


async def turn(client: httpx.AsyncClient, replica: Replica, conversation: str, n: int) -> tuple[str, str]:
    """One turn sent to ``replica`` directly: (account label, route)."""
    response = await client.post(f"{replica.url}/backend-api/codex/responses", json=body(conversation, n))
    assert response.status_code == 200, response.text
    assert "response.completed" in response.text
    return response.headers["x-codexlb-account"], response.headers["x-codexlb-route"]


async def test_two_processes_agree_on_placements_and_honour_each_others_caps(
        tmp_path: Path, fake: FakeUpstream, database_url: str) -> None:
    loop = asyncio.get_running_loop()
    async with cluster(tmp_path, fake, database_url, replicas=2, start=False) as lb, \
            httpx.AsyncClient(timeout=30) as client:
        fakes = await lb.seed_accounts(2)
        await lb.start_all()
        one, two = lb.replicas
        homes = {}
        for n in range(8):  # placed by one process, asked by the other on the very next turn
            first, route = await turn(client, one, f"conv-{n}", 0)
            assert route == "sticky:new"
            assert await turn(client, two, f"conv-{n}", 1) == (first, "sticky:hit")
            homes[f"conv-{n}"] = first
        assert len(set(homes.values())) == 2, homes  # placement spreads the conversations

        home = homes["conv-0"]
        fakes[int(home.removeprefix("acct")) - 1].set_usage(primary=60.0)
        for replica in (one, two):  # each learns the 60 % from its answer's headers
            assert (await turn(client, replica, "conv-0", 2))[0] == home
        accounts = (await client.get(f"{one.url}/api/accounts")).json()["data"]
        home_id = next(a["id"] for a in accounts if a["label"] == home)
        other_id = next(a["id"] for a in accounts if a["label"] != home)
        set_at = loop.time()
        patched = await client.patch(f"{one.url}/api/accounts/{home_id}", json={"max_primary_percent": 50})
        assert patched.status_code == 200, patched.text

        n = 3
        while (moved := await turn(client, two, "conv-0", n))[0] == home:  # the cap reaches process two
            assert moved[1] == "sticky:hit"
            assert loop.time() - set_at <= HONOURED_WITHIN, "process two still routes to the capped account"
            n += 1
            await asyncio.sleep(0.2)
        assert moved[1] == f"sticky:moved-cap from={home_id[:8]} to={other_id[:8]}"
        # process one follows the move process two made, and neither places new conversations there
        assert (await turn(client, one, "conv-0", n + 1))[0] == moved[0]
        assert (await turn(client, two, "conv-0", n + 2)) == (moved[0], "sticky:hit")
        for replica in (one, two):
            for k in range(3):
                assert (await turn(client, replica, f"new-{replica.index}-{k}", 0))[0] != home
