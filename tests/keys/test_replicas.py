"""Two replicas on one PostgreSQL database share key counters through it; the overshoot stays in its bound."""

from __future__ import annotations

from pathlib import Path

from codexlb.testing.fake_upstream import FakeUpstream
from codexlb.testing.harness import ProxyHarness, proxy_server
from tests.keys.conftest import BODY, PATH, PIPELINE, SLOW_SYNC, bearer, make_key, plugin
from tests.support.postgres import postgres_base_url, temp_postgres_database

LIMIT = 10


async def served(proxy: ProxyHarness, key: str, tries: int) -> int:
    ok = 0
    for _ in range(tries):
        r = await proxy.client.post(PATH, json=BODY, headers=bearer(key))
        assert r.status_code in (200, 429), r.text
        ok += r.status_code == 200
    return ok


async def test_replicas_share_counters_and_overshoot_at_most_what_others_spent_between_syncs(
        tmp_path: Path) -> None:
    base = postgres_base_url()
    async with temp_postgres_database(base) as url, FakeUpstream() as fake, \
            proxy_server(tmp_path / "a", fake=fake, pipeline=PIPELINE, database_url=url,
                         plugin_options=SLOW_SYNC) as one, \
            proxy_server(tmp_path / "a", accounts=0, fake=fake, pipeline=PIPELINE, database_url=url,
                         plugin_options=SLOW_SYNC) as two:
        two.lb.pool.sync(await two.lb.store.list())
        key = await make_key(one, "shared", limits=[f"requests={LIMIT}/day"])
        await plugin(two).sync()  # the key reaches the other replica with its sync
        assert await served(one, key, 6) == 6
        await plugin(one).sync()
        await plugin(two).sync()
        assert await served(two, key, 10) == LIMIT - 6  # counts shared: only the remaining 4

        await plugin(two).sync()
        await plugin(one).sync()
        assert await served(one, key, 3) == 0  # both know the key is spent

    async with temp_postgres_database(base) as url, FakeUpstream() as fake, \
            proxy_server(tmp_path / "b", fake=fake, pipeline=PIPELINE, database_url=url,
                         plugin_options=SLOW_SYNC) as one, \
            proxy_server(tmp_path / "b", accounts=0, fake=fake, pipeline=PIPELINE, database_url=url,
                         plugin_options=SLOW_SYNC) as two:
        two.lb.pool.sync(await two.lb.store.list())
        key = await make_key(one, "burst", limits=[f"requests={LIMIT}/day"])
        assert await served(one, key, 6) == 6
        await plugin(one).sync()
        await plugin(two).sync()
        remaining = LIMIT - 6
        # the worst case: between two syncs each replica spends the whole remaining budget it knows of
        total = 6 + await served(one, key, 10) + await served(two, key, 10)
        replicas = 2
        assert total == LIMIT + (replicas - 1) * remaining  # the documented bound, reached exactly
        await plugin(one).sync()
        await plugin(two).sync()
        await plugin(one).sync()
        assert await served(one, key, 2) == 0 and await served(two, key, 2) == 0
        shown = (await one.client.get("/api/keys/burst")).json()
        assert shown["windows"][0]["used"] == total
