"""The proxy killed with SIGKILL mid-stream, and the database gone for 30 s while serving.

Both run ``codexlb serve`` and ``codexlb fake-upstream`` as real processes. The outage uses a
throw-away PostgreSQL database: the database refuses new connections
(``ALTER DATABASE ... ALLOW_CONNECTIONS false``) and its open ones are terminated, which is what the
proxy sees when its database server restarts or fails over. SQLite has no such outage (the file is
local to the process); its crash safety is the SIGKILL case.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.reliability.procs import FakeProc, free_port, provision, start_fake, start_proxy
from tests.reliability.test_fault_matrix import ROUTES, assert_answer
from tests.support.postgres import postgres_base_url, temp_postgres_database

OUTAGE_SECONDS = 30.0
KEPT_TABLES_SKIPPED = {"request_log", "usage_snapshots", "alembic_version"}
"""Tables whose rows may legitimately change across a crash (appended logs, the migration marker)."""


def snapshot(db: Path) -> dict[str, Any]:
    """Row counts of every kept table and the accounts' identities and encrypted tokens."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        tables = [name for (name,) in conn.execute("select name from sqlite_master where type='table'")]
        counts = {t: conn.execute(f'select count(*) from "{t}"').fetchone()[0] for t in tables
                  if t not in KEPT_TABLES_SKIPPED}
        accounts = conn.execute("select id, email, chatgpt_account_id, access_token_enc, refresh_token_enc, "
                                "id_token_enc from accounts order by id").fetchall()
        return {"counts": counts, "accounts": accounts}


def integrity(db: Path) -> str:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return str(conn.execute("pragma integrity_check").fetchone()[0])


async def served_by(client: httpx.AsyncClient, fake: FakeProc, since: int) -> list[str]:
    log = (await client.get(f"{fake.control_url}requests", params={"since": since})).json()
    return [r["account_id"] for r in log if r["endpoint"] == "responses"]


async def test_kill_9_mid_stream_then_restart_keeps_accounts_and_tokens_and_the_database_opens_cleanly(
        tmp_path: Path) -> None:
    fake = start_fake(tmp_path / "fake", "--accounts", "0", "--events", "8")
    port = free_port()
    proxy, url = start_proxy(tmp_path / "proxy", fake, port=port)
    db = tmp_path / "proxy" / "data" / "store.db"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            accounts = await provision(client, fake)
            path, body = ROUTES["codex"]
            assert_answer("codex", await client.post(path, json=body))
            await asyncio.sleep(1.5)  # let the periodic account flush run once, as in a live server
            before = snapshot(db)
            await client.post(f"{fake.control_url}faults", json={"fault": "slow_events", "delay_s": 0.5})
            with pytest.raises(httpx.TransportError):
                async with client.stream("POST", path, json=body) as response:
                    assert response.status_code == 200
                    async for _ in response.aiter_raw():
                        proxy.kill9()  # the stream has started: kill the proxy under it
        assert integrity(db) == "ok"
        assert snapshot(db) == before
        proxy, url = start_proxy(tmp_path / "proxy", fake, port=port)
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            assert (await client.get("/readyz")).status_code == 200
            listed = (await client.get("/api/accounts")).json()["data"]
            assert sorted(a["id"] for a in listed) == sorted(a["id"] for a in accounts)
            assert {a["status"] for a in listed} == {"active"}
            for account, other in (accounts, accounts[::-1]):
                await client.patch(f"/api/accounts/{other['id']}", json={"status": "paused"})
                since = len((await client.get(f"{fake.control_url}requests")).json())
                assert_answer("codex", await client.post(path, json=body))
                assert await served_by(client, fake, since) == [account["chatgpt_account_id"]]
                await client.patch(f"/api/accounts/{other['id']}", json={"status": "active"})
    finally:
        proxy.stop()
        fake.stop()


async def _pg(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False))


async def _set_available(base_url: str, name: str, available: bool) -> None:
    """Let the database take connections again, or refuse new ones and end the open ones."""
    admin = await _pg(base_url)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(available).lower()}')
        if not available:
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
    finally:
        await admin.close()


async def _wait_for(check: Any, timeout: float) -> Any:
    async with asyncio.timeout(timeout):
        while not (result := await check()):
            await asyncio.sleep(0.25)
        return result


async def test_database_down_for_30_seconds_keeps_serving_and_buffered_writes_land_afterwards(
        tmp_path: Path) -> None:
    base = postgres_base_url()
    async with temp_postgres_database(base) as db_url:
        name = make_url(db_url).database
        assert name is not None
        fake = start_fake(tmp_path / "fake", "--accounts", "0", "--events", "8")
        proxy, url = start_proxy(tmp_path / "proxy", fake, database_url=db_url, database_pool_timeout_seconds=2)
        try:
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                await provision(client, fake)
                await client.post(f"{fake.control_url}usage", json={"primary_used_percent": 55.0})
                await _set_available(base, name, False)
                assert (await client.get("/readyz")).status_code == 503  # the outage is real
                served = 0
                deadline = asyncio.get_running_loop().time() + OUTAGE_SECONDS
                while asyncio.get_running_loop().time() < deadline:
                    for route, (path, body) in ROUTES.items():
                        assert_answer(route, await client.post(path, json=body))
                        served += 1
                    assert (await client.get("/healthz")).status_code == 200
                    await asyncio.sleep(1.0)
                await _set_available(base, name, True)

                async def landed() -> bool:
                    conn = await _pg(db_url)
                    try:
                        rows = await conn.fetchval("select count(*) from request_log where status = 200")
                        used = await conn.fetch("select primary_used_percent from accounts")
                    finally:
                        await conn.close()
                    return rows == served and max(r["primary_used_percent"] or 0 for r in used) >= 55.0

                assert await _wait_for(landed, 30)
                await _wait_for(lambda: _ready(client), 30)
        finally:
            proxy.stop()
            fake.stop()


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200
