"""Routing state shared by replicas, on both backends: the pin table (claims, compare-and-set moves,
reads since, touches, pruning) and the spend totals."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from codexlb.db.pins import (
    claim_pin,
    get_pin,
    move_pin,
    pins_changed_since,
    pins_used_since,
    prune_pins,
    touch_pins,
)
from codexlb.db.spend import add_spend

Sessions = async_sessionmaker[AsyncSession]


async def test_the_first_claim_wins_and_later_claims_read_it_back(sessionmaker: Sessions) -> None:
    assert await get_pin(sessionmaker, "conv") is None
    pin, won = await claim_pin(sessionmaker, "conv", "acct-a", 100.0)
    assert won and (pin.account_id, pin.moves, pin.changed_at) == ("acct-a", 0, 100.0)
    again, won = await claim_pin(sessionmaker, "conv", "acct-b", 101.0)
    assert not won and again == pin
    assert await get_pin(sessionmaker, "conv") == pin


async def test_concurrent_claims_agree_on_one_account(sessionmaker: Sessions) -> None:
    results = await asyncio.gather(*(claim_pin(sessionmaker, f"conv-{n % 4}", f"acct-{n}", 100.0 + n)
                                     for n in range(16)))
    for key in range(4):
        mine = [(pin, won) for n, (pin, won) in enumerate(results) if n % 4 == key]
        assert sum(won for _, won in mine) == 1
        assert len({pin.account_id for pin, _ in mine}) == 1
        assert (await get_pin(sessionmaker, f"conv-{key}")) == mine[0][0]


async def test_a_move_is_compare_and_set(sessionmaker: Sessions) -> None:
    await claim_pin(sessionmaker, "conv", "acct-a", 100.0)
    moved, won = await move_pin(sessionmaker, "conv", "acct-a", "acct-b", 110.0)
    assert won and (moved.account_id, moved.moves, moved.changed_at) == ("acct-b", 1, 110.0)
    late, won = await move_pin(sessionmaker, "conv", "acct-a", "acct-c", 111.0)  # decided on a stale view
    assert not won and late == moved
    same, won = await move_pin(sessionmaker, "conv", "acct-a", "acct-b", 112.0)  # raced to the same account
    assert won and same == moved
    gone, won = await move_pin(sessionmaker, "conv-pruned", "acct-a", "acct-c", 113.0)
    assert won and (gone.account_id, gone.moves) == ("acct-c", 0)


async def test_changed_and_used_since_oldest_first(sessionmaker: Sessions) -> None:
    for n, key in enumerate(("one", "two", "three")):
        await claim_pin(sessionmaker, key, "acct-a", 100.0 + n)
    await move_pin(sessionmaker, "one", "acct-a", "acct-b", 200.0)
    assert [p.key_hash for p in await pins_changed_since(sessionmaker, 101.0, 10)] == ["two", "three", "one"]
    assert [p.key_hash for p in await pins_changed_since(sessionmaker, 0.0, 2)] == ["three", "one"]
    await touch_pins(sessionmaker, ["two", "missing"], 300.0)
    assert [p.key_hash for p in await pins_used_since(sessionmaker, 150.0, 10)] == ["one", "two"]
    assert await get_pin(sessionmaker, "missing") is None


async def test_prune_deletes_only_idle_pins(sessionmaker: Sessions) -> None:
    await claim_pin(sessionmaker, "idle", "acct-a", 100.0)
    await claim_pin(sessionmaker, "busy", "acct-a", 100.0)
    await touch_pins(sessionmaker, ["busy"], 500.0)
    assert await prune_pins(sessionmaker, 400.0) == 1
    assert await get_pin(sessionmaker, "idle") is None
    assert (await get_pin(sessionmaker, "busy")) is not None


async def test_spend_totals_add_up_across_concurrent_writers(sessionmaker: Sessions) -> None:
    assert await add_spend(sessionmaker, {}) == {}
    await asyncio.gather(*(add_spend(sessionmaker, {"acct-b": 10.0, "acct-a": 1.5}) for _ in range(8)))
    assert await add_spend(sessionmaker, {"acct-c": 2.0}) == {"acct-a": 12.0, "acct-b": 80.0, "acct-c": 2.0}
