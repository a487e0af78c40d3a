"""Per-account usage caps over real sockets: set through the admin API, honoured by routing, shared by replicas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from codexlb.testing.fake_upstream import FakeUpstream
from codexlb.testing.harness import ProxyHarness, proxy_server
from codexlb.types import AccountStatus
from tests.proxy.conftest import PIPELINE
from tests.support.postgres import postgres_base_url, temp_postgres_database

BODY = {"model": "gpt-5.5", "instructions": "", "stream": True, "store": False, "prompt_cache_key": "conv-cap",
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]}


async def turn(proxy: ProxyHarness, body: dict[str, Any] | None = None) -> tuple[str, str]:
    response = await proxy.client.post("/backend-api/codex/responses", json=body or BODY)
    assert response.status_code == 200, response.text
    return response.headers["x-codexlb-account"], response.headers["x-codexlb-route"]


async def test_cap_moves_the_conversation_and_takes_no_new_ones(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, accounts=2, pipeline=PIPELINE) as proxy:
        home_label, route = await turn(proxy)
        assert route == "sticky:new"
        home = next(a for a in proxy.lb.pool.all() if a.label == home_label)
        fake = next(f for f in proxy.accounts if f.chatgpt_account_id == home.chatgpt_account_id)
        fake.set_usage(primary=50.0)
        assert (await turn(proxy))[0] == home_label  # learns 50 % from the answer's headers

        bad = await proxy.client.patch(f"/api/accounts/{home.id}", json={"max_primary_percent": 150})
        assert bad.status_code == 400 and "max_primary_percent" in bad.json()["error"]["message"]
        form = await proxy.client.patch(f"/api/accounts/{home.id}", data={"max_primary_percent": "40"})
        assert form.status_code == 415  # the admin guard: JSON only
        assert home.max_primary_percent is None
        patched = await proxy.client.patch(f"/api/accounts/{home.id}", json={"max_primary_percent": 40})
        assert patched.status_code == 200 and patched.json()["max_primary_percent"] == 40.0

        label, route = await turn(proxy)
        assert label != home_label
        other = next(a for a in proxy.lb.pool.all() if a.id != home.id)
        assert route == f"sticky:moved-cap from={home.id[:8]} to={other.id[:8]}"
        assert home.status is AccountStatus.RATE_LIMITED and (home.status_reason or "").startswith("cap:")
        new_label, new_route = await turn(proxy, {**BODY, "prompt_cache_key": "another"})
        assert (new_label, new_route) == (label, "sticky:new")  # capped: no new conversations either

        lifted = await proxy.client.patch(f"/api/accounts/{home.id}", json={"max_primary_percent": None})
        assert lifted.status_code == 200 and lifted.json()["max_primary_percent"] is None
        assert home in proxy.lb.pool.usable()  # the cap no longer holds: routable again


async def test_a_pool_all_at_its_caps_answers_429_with_the_reset(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, accounts=1, pipeline=PIPELINE) as proxy:
        proxy.accounts[0].set_usage(primary=30.0)
        await turn(proxy)
        account = proxy.lb.pool.all()[0]
        await proxy.client.patch(f"/api/accounts/{account.id}", json={"max_primary_percent": 25})
        response = await proxy.client.post("/backend-api/codex/responses", json=BODY)
        assert response.status_code == 429
        error = response.json()["error"]
        assert error["code"] == "usage_limit_reached" and error["resets_at"] == int(account.primary.resets_at or 0)


async def test_replicas_share_caps_and_placements_through_postgres(tmp_path: Path) -> None:
    async with temp_postgres_database(postgres_base_url()) as url, FakeUpstream() as fake, \
            proxy_server(tmp_path, accounts=2, fake=fake, pipeline=PIPELINE, database_url=url) as one, \
            proxy_server(tmp_path, accounts=0, fake=fake, pipeline=PIPELINE, database_url=url) as two:
        two.lb.pool.sync(await two.lb.store.list())
        home_label, _ = await turn(one)
        home = next(a for a in one.lb.pool.all() if a.label == home_label)
        assert await turn(two) == (home_label, "sticky:hit")  # the other replica asks the shared table once
        for fake_account in one.accounts:
            fake_account.set_usage(primary=60.0)
        for proxy in (one, two):  # each learns 60 % from its answer's headers
            assert (await turn(proxy))[0] == home_label

        # a cap set through replica one reaches replica two, which moves the conversation
        assert (await one.client.patch(f"/api/accounts/{home.id}", json={"max_primary_percent": 50})).status_code == 200
        two.lb.pool.sync(await two.lb.store.list())  # what its background loop does every few seconds
        assert two.lb.pool.get(home.id).max_primary_percent == 50.0
        label, route = await turn(two)
        assert label != home_label and route.startswith("sticky:moved-cap from=")
        assert (await turn(one))[0] == label  # and replica one sends it there too
