"""Changing a key's limits and scope (``PATCH /api/keys/NAME``), and the counters every key has."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from codexlb.keys.limits import WINDOWS, parse_limit, window_bounds
from codexlb.keys.store import ApiKey
from codexlb.keys.usage import Counters
from codexlb.testing.harness import proxy_server
from codexlb.types import TokenUsage
from tests.keys.conftest import BODY, PATH, PIPELINE, SLOW_SYNC, bearer, make_key, plugin
from tests.keys.test_cli import run

NOON = datetime(2026, 3, 4, 12, 0, tzinfo=UTC).timestamp()


def test_every_window_of_every_stored_key_is_counted() -> None:
    counters = Counters()
    key = ApiKey(id="k1", name="alice", key_hash="h", key_prefix="sk-clb-abcd")
    static = ApiKey(id="static:0123456789ab", name="CODEX_LB_API_KEYS", key_hash="s", key_prefix="static")
    for _ in range(3):
        assert counters.admit(key, NOON) is None
        assert counters.admit(static, NOON) is None
    counters.add_tokens(key, TokenUsage(input=100, cached=40, output=7), NOON)
    for window in WINDOWS:
        assert counters.used("k1", window, window_bounds(window, NOON)[0]) == [3, 100, 40, 7]
    assert not any(slot[0].startswith("static:") for slot in counters.pending)
    limited = ApiKey(id="k1", name="alice", key_hash="h", key_prefix="sk-clb-abcd",
                     limits=(parse_limit("requests=3/day"),))
    refusal = counters.admit(limited, NOON)  # a limit set later sees what was used before it
    assert refusal is not None and refusal.used == 3
    assert counters.admit(limited, window_bounds("day", NOON)[1]) is None  # the next day starts again


class GatedStore:
    """A key store whose ``sync_counters`` waits for the test (or fails), to look inside a sync."""

    def __init__(self, fail: bool = False) -> None:
        self.entered, self.gate, self.fail = asyncio.Event(), asyncio.Event(), fail

    async def sync_counters(self, deltas: dict[Any, Any], last_used: object, key_ids: object,
                            now: float) -> dict[Any, Any]:
        self.entered.set()
        await self.gate.wait()
        if self.fail:
            raise OSError("database gone")
        return {slot: counts for slot, (_, counts) in deltas.items()}


@pytest.mark.parametrize("fail", [False, True])
async def test_counts_being_written_still_count_for_admission(fail: bool) -> None:
    counters = Counters()
    key = ApiKey(id="k1", name="alice", key_hash="h", key_prefix="sk-clb-abcd",
                 limits=(parse_limit("requests=2/day"),))
    assert counters.admit(key, NOON) is None and counters.admit(key, NOON) is None
    store = GatedStore(fail)
    sync = asyncio.create_task(counters.sync(store, ["k1"], NOON))  # type: ignore[arg-type]
    await store.entered.wait()
    during = counters.admit(key, NOON)  # while the two are on their way to the database
    assert during is not None and during.used == 2
    store.gate.set()
    with contextlib.suppress(OSError):
        await sync
    after = counters.admit(key, NOON)  # in the totals read back, or pending again after a failure
    assert after is not None and after.used == 2
    assert counters.used("k1", "day", window_bounds("day", NOON)[0])[0] == 2


async def test_patch_changes_limits_and_scope_and_counts_what_was_used(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, pipeline=PIPELINE, accounts=2, plugin_options=SLOW_SYNC) as proxy:
        key = await make_key(proxy, "alice")
        for _ in range(3):
            assert (await proxy.client.post(PATH, json=BODY, headers=bearer(key))).status_code == 200
        await plugin(proxy).sync()
        shown = (await proxy.client.get("/api/keys/alice")).json()
        assert shown["limits"] == [] and shown["usage"]["day"]["requests"] == 3
        assert shown["usage"]["month"]["input_tokens"] > 0

        changed = await proxy.client.patch("/api/keys/alice", json={"limits": ["requests=3/day"]})
        assert changed.status_code == 200
        [window] = changed.json()["windows"]
        assert {k: window[k] for k in ("metric", "window", "max", "used")} == {
            "metric": "requests", "window": "day", "max": 3, "used": 3}
        over = await proxy.client.post(PATH, json=BODY, headers=bearer(key))
        assert over.status_code == 429 and over.json()["error"]["limit"]["used"] == 3

        scoped = await proxy.client.patch("/api/keys/alice", json={"limits": [], "models": ["gpt-5-codex"],
                                                                   "accounts": ["acct2"]})
        assert scoped.status_code == 200
        assert scoped.json()["models"] == ["gpt-5-codex"] and scoped.json()["accounts"][0]["label"] == "acct2"
        assert (await proxy.client.post(PATH, json=BODY, headers=bearer(key))).status_code == 403
        answer = await proxy.client.post(PATH, json={**BODY, "model": "gpt-5-codex"}, headers=bearer(key))
        assert answer.status_code == 200 and answer.headers["x-codexlb-account"] == "acct2"

        opened = await proxy.client.patch("/api/keys/alice", json={"models": None})
        assert opened.status_code == 200 and opened.json()["models"] is None
        assert opened.json()["accounts"][0]["label"] == "acct2"  # fields left out stay as they were
        assert (await proxy.client.post(PATH, json=BODY, headers=bearer(key))).status_code == 200


@pytest.mark.parametrize(("body", "status", "message"), [
    ({}, 400, "limits, models and/or accounts"),
    ([], 400, "limits, models and/or accounts"),
    ({"name": "bob"}, 400, "unknown field(s) name"),
    ({"limits": "requests=1/day"}, 400, "expected a list"),
    ({"limits": ["requests=0/day"]}, 400, "at least 1"),
    ({"limits": ["requests=1/day", "requests=2/day"]}, 400, "two limits"),
    ({"models": []}, 400, "at least one name"),
    ({"accounts": ["nobody"]}, 400, "no account matches"),
])
async def test_patch_rejects_bad_input(tmp_path: Path, body: object, status: int, message: str) -> None:
    async with proxy_server(tmp_path, pipeline=PIPELINE, accounts=1) as proxy:
        await make_key(proxy, "alice", limits=["requests=9/day"])
        r = await proxy.client.patch("/api/keys/alice", json=body)
        assert r.status_code == status and message in r.json()["error"]["message"]
        assert (await proxy.client.get("/api/keys/alice")).json()["limits"][0]["max"] == 9
        missing = await proxy.client.patch("/api/keys/nobody", json={"limits": []})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "api_key_not_found"


async def test_cli_set_changes_a_running_servers_key(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, pipeline=PIPELINE, accounts=2, plugin_options=SLOW_SYNC) as proxy:
        key = await make_key(proxy, "bob", models=["gpt-5-codex"])
        assert (await proxy.client.post(PATH, json={**BODY, "model": "gpt-5-codex"},
                                        headers=bearer(key))).status_code == 200
        done = await run(tmp_path, "keys", "set", "bob", "--limit", "requests=1/day", "--any-model", "--json")
        assert done.returncode == 0, done.stderr
        data = json.loads(done.stdout)
        assert data["limits"] == [{"metric": "requests", "window": "day", "max": 1}] and data["models"] is None
        await plugin(proxy).sync()  # what the running proxy does every sync interval
        assert (await proxy.client.post(PATH, json=BODY, headers=bearer(key))).status_code == 429
        shown = await run(tmp_path, "keys", "show", "bob")
        assert "requests per day: 1 of 1" in shown.stdout and "this day: 1 requests" in shown.stdout
        nothing = await run(tmp_path, "keys", "set", "bob")
        assert nothing.returncode == 1 and "nothing to change" in nothing.stderr
        both = await run(tmp_path, "keys", "set", "bob", "--no-limits", "--limit", "requests=2/day")
        assert both.returncode == 2 and "not allowed with" in both.stderr
        cleared = await run(tmp_path, "keys", "set", "bob", "--no-limits")
        assert cleared.returncode == 0 and "limits -" in cleared.stdout
        await plugin(proxy).sync()
        assert (await proxy.client.post(PATH, json=BODY, headers=bearer(key))).status_code == 200
