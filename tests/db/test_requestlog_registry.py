"""Request log batches, the model registry cache and meta values."""

from __future__ import annotations

from types import MappingProxyType

import pytest
from sqlalchemy import String, event, exc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from codexlb.db.engine import is_unavailable
from codexlb.db.models import RequestLogRow
from codexlb.db.registry import get_meta, get_registry, put_meta, put_registry
from codexlb.db.requestlog import COLUMNS, insert_request_logs, recent_request_logs
from codexlb.db.store import AccountStore
from tests.support.refusals import allow_request_logs, refuse_request_logs

LENGTHS = {c.name: c.type.length for c in RequestLogRow.__table__.columns
           if isinstance(c.type, String) and c.type.length}


async def test_inserts_a_batch_of_request_logs(sessionmaker: async_sessionmaker[AsyncSession],
                                               store: AccountStore) -> None:
    account, _ = await store.upsert(chatgpt_account_id="c", email="e@x", plan_type="plus",
                                    access_token="a", refresh_token="r", id_token=None)
    full = {"time": 5.0, "account_id": account.id, "endpoint": "/backend-api/codex/responses",
            "model": "gpt-5", "status": 200, "error_code": None, "input_tokens": 10, "cached_tokens": 2,
            "output_tokens": 7, "reasoning_tokens": 3, "ttfb_ms": 120.5, "duration_ms": 900.0,
            "client_ip": "127.0.0.1", "session_key_hash": "ab" * 32, "route": "select_sticky:hit",
            "attempts": 2, "account_label": "work", "api_key_id": "k" * 32}
    assert set(full) == set(COLUMNS)
    rows = [full] + [{"time": float(t), "endpoint": "/v1/responses", "status": 429,
                      "error_code": "usage_limit_reached"} for t in range(1, 5)]
    await insert_request_logs(sessionmaker, rows)
    await insert_request_logs(sessionmaker, [])
    newest = await recent_request_logs(sessionmaker, limit=3)
    assert [r["time"] for r in newest] == [5.0, 4.0, 3.0]
    assert {k: v for k, v in newest[0].items() if k != "id"} == full
    assert newest[1]["attempts"] == 1 and newest[1]["account_id"] is None
    mine = await recent_request_logs(sessionmaker, account_id=account.id)
    assert [r["time"] for r in mine] == [5.0]
    assert [r["time"] for r in await recent_request_logs(sessionmaker, before=3.0)] == [2.0, 1.0]


async def test_rows_outlive_their_account(sessionmaker: async_sessionmaker[AsyncSession],
                                          store: AccountStore) -> None:
    account, _ = await store.upsert(chatgpt_account_id="c", email="e@x", plan_type="plus",
                                    access_token="a", refresh_token="r", id_token=None, label="work")
    row = {"time": 1.0, "endpoint": "/v1/responses", "account_id": account.id, "account_label": "work"}
    await insert_request_logs(sessionmaker, [row])
    assert await store.delete(account.id)
    await insert_request_logs(sessionmaker, [{**row, "time": 2.0}])  # buffered before the removal
    kept = await recent_request_logs(sessionmaker, account_id=account.id)
    assert [(r["time"], r["account_id"], r["account_label"]) for r in kept] == [
        (2.0, account.id, "work"), (1.0, account.id, "work")]


async def test_rejects_unknown_request_log_columns(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    with pytest.raises(ValueError, match="no column bogus"):
        await insert_request_logs(sessionmaker, [{"time": 1.0, "endpoint": "/x", "bogus": 1}])
    with pytest.raises(ValueError, match="needs time and endpoint"):
        await insert_request_logs(sessionmaker, [{"time": 1.0}])
    full = dict.fromkeys(COLUMNS) | {"time": 1.0, "endpoint": "/x"}
    with pytest.raises(ValueError, match="no column bogus"):  # as many keys as columns, one of them unknown
        await insert_request_logs(sessionmaker, [full, {k: v for k, v in full.items() if k != "model"} | {"bogus": 1}])
    with pytest.raises(ValueError, match="needs time and endpoint"):
        await insert_request_logs(sessionmaker, [full | {"endpoint": None}])
    assert await recent_request_logs(sessionmaker) == []


async def test_sqlite_batches_go_to_the_driver_in_one_executemany(
        backend: str, engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """SQLite: the insert bypasses SQLAlchemy's statement execution (the cheap path); PostgreSQL: one Core insert."""
    seen: list[str] = []
    event.listen(engine.sync_engine, "before_cursor_execute",
                 lambda _conn, _cursor, statement, *_rest: seen.append(statement.split(" (")[0]))
    await insert_request_logs(sessionmaker, [{"time": float(t), "endpoint": "/v1/responses"} for t in range(3)])
    inserts = [s for s in seen if s.startswith("INSERT")]
    assert inserts == ([] if backend == "sqlite" else ["INSERT INTO request_log"])
    assert {s.split()[0] for s in seen} <= {"BEGIN", "INSERT"}
    assert len(await recent_request_logs(sessionmaker)) == 3


async def test_long_strings_are_cut_to_their_columns(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """Every string column, full rows and partial ones, any mapping: both backends store the same cut values."""
    assert len(LENGTHS) == 9 and "endpoint" in LENGTHS
    texts = {name: chr(0x4E00 + i) * (length + 1) for i, (name, length) in enumerate(LENGTHS.items())}
    long = {"time": 1.0, "status": 200, **texts}
    exact = {"time": 2.0, "endpoint": "e" * LENGTHS["endpoint"], "model": "m" * LENGTHS["model"], "attempts": 3}
    await insert_request_logs(sessionmaker, [MappingProxyType(long), dict.fromkeys(COLUMNS) | exact])
    written = {r["time"]: r for r in await recent_request_logs(sessionmaker)}
    assert {name: written[1.0][name] for name in LENGTHS} == {name: texts[name][:length]
                                                              for name, length in LENGTHS.items()}
    assert written[1.0]["status"] == 200 and written[1.0]["attempts"] == 1
    assert (written[2.0]["endpoint"], written[2.0]["model"]) == (exact["endpoint"], exact["model"])
    assert written[2.0]["attempts"] == 3 and written[2.0]["status"] is None


async def test_database_errors_keep_their_sqlalchemy_class(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """A row the database refuses is an IntegrityError; a database that cannot be used now is "unavailable";
    either way nothing of the batch is written and the next batch is."""
    ok = {"time": 1.0, "endpoint": "/v1/responses", "status": 200}
    await refuse_request_logs(sessionmaker, status=999)
    with pytest.raises(exc.IntegrityError, match="refused by test trigger") as refused:
        await insert_request_logs(sessionmaker, [ok, ok | {"time": 2.0, "status": 999}])
    assert not is_unavailable(refused.value)
    await allow_request_logs(sessionmaker)
    await refuse_request_logs(sessionmaker, unavailable=True)
    with pytest.raises(exc.DBAPIError) as down:
        await insert_request_logs(sessionmaker, [ok])
    assert is_unavailable(down.value)
    await allow_request_logs(sessionmaker)
    assert await recent_request_logs(sessionmaker) == []
    await insert_request_logs(sessionmaker, [ok, ok | {"time": 2.0, "status": 999}])
    assert [r["status"] for r in await recent_request_logs(sessionmaker)] == [999, 200]


async def test_model_registry_cache_round_trip(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    assert await get_registry(sessionmaker, "0.101.0") is None
    payload = {"models": [{"slug": "gpt-5", "context_window": 272000}]}
    await put_registry(sessionmaker, "0.101.0", payload=payload, etag='W/"1"', fetched_at=10.0)
    entry = await get_registry(sessionmaker, "0.101.0")
    assert entry is not None and (entry.payload, entry.etag, entry.fetched_at) == (payload, 'W/"1"', 10.0)
    await put_registry(sessionmaker, "0.101.0", payload={"models": []}, etag=None, fetched_at=20.0)
    entry = await get_registry(sessionmaker, "0.101.0")
    assert entry is not None and (entry.payload, entry.etag, entry.fetched_at) == ({"models": []}, None, 20.0)


async def test_meta_get_put(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    assert await get_meta(sessionmaker, "k") is None
    await put_meta(sessionmaker, "k", "one")
    await put_meta(sessionmaker, "k", "two")
    assert await get_meta(sessionmaker, "k") == "two"
