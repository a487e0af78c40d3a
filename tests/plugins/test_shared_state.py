"""Sticky replicas agreeing through the shared pin table: placements, moves, an away database.

Two :class:`SelectSticky` objects stand for two replicas; each has its own view of the same accounts
(its own :class:`Account` objects), so left alone they would place a conversation differently.
The table runs on SQLite here (the logic is the same; serving processes use it only on PostgreSQL);
``tests/replicas`` and ``tests/proxy/test_caps.py`` run it on PostgreSQL with real processes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from codexlb.db.engine import make_engine, make_sessionmaker
from codexlb.db.migrate import prepare_database
from codexlb.flow import session_key_hash
from codexlb.settings import Settings
from codexlb.testing import make_account, make_flow
from codexlb.testing.harness import proxy_server
from codexlb.types import Account
from plugins import _shared_state
from plugins.select_sticky import SelectSticky

IDS = ("acct-a", "acct-b", "acct-c")
PIPELINE = ("select_sticky", "select_least_used", "select_round_robin", "upstream")
BODY = {"model": "gpt-5.5", "stream": True, "store": False, "prompt_cache_key": "conv-pg",
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]}


@pytest.fixture(name="sessions")
async def _sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'pins.db'}", data_dir=str(tmp_path),
                        encryption_key_file=str(tmp_path / "key"))
    engine = make_engine(settings)
    await prepare_database(settings, engine)
    yield make_sessionmaker(engine)
    await engine.dispose()


class Replica:
    """One replica's plugin and its own account objects; ``favour`` is what it would pick alone."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], favour: str) -> None:
        self.accounts = {i: make_account(i, short_used_pct=10.0 if i == favour else 60.0) for i in IDS}
        self.app: Any = type("App", (), {"pool": type("Pool", (), {"accounts": self.accounts})()})()
        self.plugin = SelectSticky()
        self.plugin.configure({})
        self.plugin.shared = _shared_state.SharedState(sessions)

    async def turn(self, key: str, without: tuple[str, ...] = ()) -> tuple[str, str]:
        flow = make_flow(payload={"model": "m", "input": "hi", "prompt_cache_key": key})
        candidates = [a for i, a in self.accounts.items() if i not in without]
        chosen: Account | None = await self.plugin.select_account(flow, candidates, self.app)
        assert chosen is not None
        return chosen.id, str(flow.route)


def count_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list[str]:
    calls: list[str] = []
    real = getattr(_shared_state.table, name)

    async def counted(sessionmaker: Any, key: str, *args: Any) -> Any:
        calls.append(key)
        return await real(sessionmaker, key, *args)

    monkeypatch.setattr(_shared_state.table, name, counted)
    return calls


async def test_a_replica_asks_once_then_serves_the_pin_from_memory(
        sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch) -> None:
    one, two = Replica(sessions, "acct-a"), Replica(sessions, "acct-b")
    assert await one.turn("conv") == ("acct-a", "sticky:new")
    lookups = count_calls(monkeypatch, "get_pin_and_changes")
    for _ in range(5):
        assert await two.turn("conv") == ("acct-a", "sticky:hit")  # not acct-b, its own favourite
    assert lookups == [session_key_hash("conv")]  # one round-trip for the conversation, none per turn
    assert await two.turn("other") == ("acct-b", "sticky:new")


async def test_first_turns_racing_on_two_replicas_agree(sessions: async_sessionmaker[AsyncSession]) -> None:
    import asyncio

    one, two = Replica(sessions, "acct-a"), Replica(sessions, "acct-b")
    for n in range(10):
        (first, _), (second, _) = await asyncio.gather(one.turn(f"race-{n}"), two.turn(f"race-{n}"))
        assert first == second
        assert await one.turn(f"race-{n}") == await two.turn(f"race-{n}") == (first, "sticky:hit")


async def test_a_move_wins_once_and_every_replica_follows_it(sessions: async_sessionmaker[AsyncSession]) -> None:
    one, two = Replica(sessions, "acct-a"), Replica(sessions, "acct-b")
    await one.turn("conv")
    await two.turn("conv")
    # replica two sees acct-a capped and moves the conversation to its favourite
    assert await two.turn("conv", without=("acct-a",)) == (
        "acct-b", f"sticky:moved-unavailable from={'acct-a'[:8]} to={'acct-b'[:8]}")
    # replica one, on its own stale view, would move it to acct-c: its compare-and-set loses, it follows
    one.accounts["acct-c"].primary.used_percent = 0.0
    assert await one.turn("conv", without=("acct-a",)) == ("acct-b", "sticky:moved-unavailable from=acct-a to=acct-b")
    # a third replica that still pins acct-a in memory catches up at its next read of the table
    three = Replica(sessions, "acct-c")
    three.plugin._pin(session_key_hash("conv") or "", "acct-a", 0.0)
    await three.plugin.follow(three.accounts)
    assert await three.turn("conv") == ("acct-b", "sticky:hit")
    assert session_key_hash("conv") in three.plugin._moved  # moved once: no early move again


async def test_decisions_made_while_the_table_is_away_are_reconciled(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    one, two = Replica(sessions, "acct-a"), Replica(sessions, "acct-b")
    shared = one.plugin.shared
    assert shared is not None

    def away() -> Any:
        raise OSError("connection refused")

    shared.sessionmaker = away  # type: ignore[assignment]
    assert await one.turn("conv") == ("acct-a", "sticky:new")  # decided alone, kept for later
    assert not shared.available()  # the breaker is open: the next turns do not wait for the database
    assert await one.turn("conv") == ("acct-a", "sticky:hit")
    with pytest.raises(OSError):
        await one.plugin.follow(one.accounts)
    assert await two.turn("conv") == ("acct-b", "sticky:new")  # the other replica placed it meanwhile

    shared.sessionmaker = sessions
    await one.plugin.follow(one.accounts)  # writes what it kept: the table's row wins
    assert shared.available()
    assert await one.turn("conv") == ("acct-b", "sticky:hit")


async def test_one_process_on_sqlite_never_uses_the_table(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, accounts=2, pipeline=PIPELINE) as proxy:
        statements = watch_pin_statements(proxy.lb.engine)
        sticky = proxy.lb.pm.get_plugin("select_sticky")
        assert sticky.shared is None
        for _ in range(3):
            response = await proxy.client.post("/backend-api/codex/responses", json=BODY)
            assert response.status_code == 200 and response.headers["x-codexlb-route"] in ("sticky:new", "sticky:hit")
        assert statements == []


async def test_on_postgresql_only_a_new_conversation_waits_for_the_table(tmp_path: Path) -> None:
    from tests.support.postgres import postgres_base_url, temp_postgres_database

    async with temp_postgres_database(postgres_base_url()) as url, \
            proxy_server(tmp_path, accounts=2, pipeline=PIPELINE, database_url=url) as proxy:
        statements = watch_pin_statements(proxy.lb.engine, session_key_hash("conv-pg"))
        routes = []
        for _ in range(4):
            response = await proxy.client.post("/backend-api/codex/responses", json=BODY)
            assert response.status_code == 200
            routes.append(response.headers["x-codexlb-route"])
        assert routes == ["sticky:new"] + ["sticky:hit"] * 3
        assert [s.split()[0] for s in statements] == ["SELECT", "INSERT"]  # ask, claim; then memory only


def watch_pin_statements(engine: Any, key: str | None = None) -> list[str]:
    """Statements on ``conversation_pins`` the engine sends from now on (about ``key`` only, if given)."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "conversation_pins" in statement and (key is None or key in repr(parameters)):
            seen.append(statement.strip())

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    return seen
