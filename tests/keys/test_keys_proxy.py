"""Keys over real sockets: when a key is required, 401/429/403 answers, scope, concurrency, the request log."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from codexlb.db.models import ApiKeyRow
from codexlb.db.requestlog import recent_request_logs
from codexlb.testing.harness import proxy_server
from codexlb.testing.secrets import register_secret
from tests.keys.conftest import BODY, PATH, PIPELINE, SLOW_SYNC, bearer, make_key, plugin

STATIC = "sk-static-automation-key-000000000001"
register_secret(STATIC)


async def test_no_key_needed_until_one_exists_then_every_route_needs_one(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, pipeline=PIPELINE) as proxy:
        assert (await proxy.client.post(PATH, json=BODY)).status_code == 200
        key = await make_key(proxy, "alice")
        for method, path, body in (("POST", PATH, BODY), ("POST", "/v1/responses", BODY),
                                   ("GET", "/v1/models", None), ("GET", "/backend-api/codex/models", None)):
            refused = await proxy.client.request(method, path, json=body)
            assert refused.status_code == 401, path
            assert refused.json()["error"]["code"] == "invalid_api_key"
            assert refused.headers["www-authenticate"] == 'Bearer realm="codexlb"'
        ok = await proxy.client.post(PATH, json=BODY, headers=bearer(key))
        assert ok.status_code == 200 and b"response.completed" in ok.content
        assert key not in str(dict(proxy.fake.requests[-1].headers))  # never forwarded upstream
        also = await proxy.client.post(PATH, json=BODY, headers={"x-api-key": key})
        assert also.status_code == 200
        models = await proxy.client.get("/v1/models", headers=bearer(key))
        assert models.status_code != 401


async def test_wrong_revoked_and_expired_keys_get_the_same_answer(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, pipeline=PIPELINE) as proxy:
        revoked = await make_key(proxy, "gone")
        expiring = await make_key(proxy, "short", expires="1m")
        assert (await proxy.client.post(PATH, json=BODY, headers=bearer(revoked))).status_code == 200
        assert (await proxy.client.post("/api/keys/gone/revoke")).json()["state"] == "revoked"
        key = plugin(proxy).ring.by_id[(await proxy.client.get("/api/keys/short")).json()["id"]]
        key.expires_at = time.time() - 1  # what the clock does a minute later
        answers = []
        for presented in (revoked, expiring, revoked[:-1] + "x", "sk-clb-" + "A" * 43, None):
            r = await proxy.client.post(PATH, json=BODY, headers=bearer(presented) if presented else {})
            assert r.status_code == 401
            answers.append(r.json())
        assert all(answer == answers[0] for answer in answers)  # no hint whether a key exists


async def test_revoking_the_last_key_does_not_open_the_proxy(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, pipeline=PIPELINE) as proxy:
        await make_key(proxy, "only")
        await proxy.client.post("/api/keys/only/revoke")
        await plugin(proxy).sync()
        assert (await proxy.client.post(PATH, json=BODY)).status_code == 401


async def test_static_keys_work_without_limits_next_to_stored_keys(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, pipeline=PIPELINE, api_keys=(STATIC,)) as proxy:
        assert (await proxy.client.post(PATH, json=BODY)).status_code == 401
        for _ in range(3):
            assert (await proxy.client.post(PATH, json=BODY, headers={"x-api-key": STATIC})).status_code == 200
        key = await make_key(proxy, "bob", limits=["requests=1/day"])
        assert (await proxy.client.post(PATH, json=BODY, headers=bearer(key))).status_code == 200
        assert (await proxy.client.post(PATH, json=BODY, headers=bearer(STATIC))).status_code == 200


async def test_request_limit_answers_429_with_limit_and_reset(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, pipeline=PIPELINE) as proxy:
        key = await make_key(proxy, "carol", limits=["requests=2/day"])
        for _ in range(2):
            assert (await proxy.client.post(PATH, json=BODY, headers=bearer(key))).status_code == 200
        upstream_calls = len(proxy.fake.requests_for("responses"))
        r = await proxy.client.post("/v1/responses", json=BODY, headers=bearer(key))
        assert r.status_code == 429
        error = r.json()["error"]
        assert error["code"] == "api_key_limit_reached" and error["type"] == "rate_limit_error"
        assert error["limit"] == {"metric": "requests", "window": "day", "max": 2, "used": 2}
        tomorrow = (int(time.time()) // 86400 + 1) * 86400
        assert error["resets_at"] == tomorrow
        assert 1 <= int(r.headers["retry-after"]) <= 86400 and r.headers["x-should-retry"] == "false"
        assert len(proxy.fake.requests_for("responses")) == upstream_calls
        assert (await proxy.client.get("/v1/models", headers=bearer(key))).status_code != 429


async def test_token_limit_counts_tokens_when_the_stream_ends(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, pipeline=PIPELINE) as proxy:
        key = await make_key(proxy, "dave", limits=["tokens=5/5h", "requests=100/week"])
        first = await proxy.client.post(PATH, json=BODY, headers=bearer(key))
        assert first.status_code == 200
        await proxy.settle()  # flow_done counts the tokens after the last byte
        r = await proxy.client.post(PATH, json=BODY, headers=bearer(key))
        assert r.status_code == 429
        limit = r.json()["error"]["limit"]
        assert limit["metric"] == "total_tokens" and limit["window"] == "5h" and limit["used"] >= 5
        shown = (await proxy.client.get("/api/keys/dave")).json()
        await plugin(proxy).sync()
        shown = (await proxy.client.get("/api/keys/dave")).json()
        windows = {(w["metric"], w["window"]): w["used"] for w in shown["windows"]}
        assert windows[("requests", "week")] == 1 and windows[("total_tokens", "5h")] == limit["used"]


async def test_model_allowlist(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, pipeline=PIPELINE) as proxy:
        key = await make_key(proxy, "erin", models=["gpt-5"])
        assert (await proxy.client.post(PATH, json=BODY, headers=bearer(key))).status_code == 200
        r = await proxy.client.post(PATH, json={**BODY, "model": "gpt-5-codex"}, headers=bearer(key))
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "model_not_allowed" and "gpt-5-codex" in r.json()["error"]["message"]
        chat = await proxy.client.post("/v1/chat/completions", headers=bearer(key), json={
            "model": "o3", "messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 403 and chat.json()["error"]["code"] == "model_not_allowed"


async def test_account_scope(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, pipeline=PIPELINE, accounts=3) as proxy:
        key = await make_key(proxy, "frank", accounts=["acct2"])
        for n in range(6):
            r = await proxy.client.post(PATH, json={**BODY, "prompt_cache_key": f"c{n}"}, headers=bearer(key))
            assert r.status_code == 200 and r.headers["x-codexlb-account"] == "acct2"
        assert {q.account_id for q in proxy.fake.requests_for("responses")} == {proxy.accounts[1].chatgpt_account_id}
        bad = await proxy.client.post("/api/keys", json={"name": "x", "accounts": ["nobody"]})
        assert bad.status_code == 400 and "no account matches 'nobody'" in bad.json()["error"]["message"]
        pause = await proxy.client.patch(f"/api/accounts/{proxy.lb.pool.all()[1].id}", json={"status": "paused"})
        assert pause.status_code == 200
        r = await proxy.client.post(PATH, json=BODY, headers=bearer(key))
        assert r.status_code == 503 and "none of the accounts this API key may use" in r.json()["error"]["message"]


async def test_fifty_concurrent_requests_with_ten_left_serve_ten(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, pipeline=PIPELINE, plugin_options=SLOW_SYNC) as proxy:
        key = await make_key(proxy, "gina", limits=["requests=12/day"])
        for _ in range(2):
            assert (await proxy.client.post(PATH, json=BODY, headers=bearer(key))).status_code == 200
        replies = await asyncio.gather(*[proxy.client.post(PATH, json=BODY, headers=bearer(key)) for _ in range(50)])
        statuses = sorted(r.status_code for r in replies)
        assert statuses == [200] * 10 + [429] * 40


async def test_request_log_records_the_key_and_usage_reports_it(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, pipeline=PIPELINE, accounts=1, api_keys=(STATIC,)) as proxy:
        key = await make_key(proxy, "hana")
        assert (await proxy.client.post(PATH, json=BODY, headers=bearer(key))).status_code == 200
        assert (await proxy.client.post(PATH, json={"model": 1}, headers=bearer(key))).status_code == 400
        assert (await proxy.client.post(PATH, json=BODY, headers=bearer(STATIC))).status_code == 200
        key_id = (await proxy.client.get("/api/keys/hana")).json()["id"]
        await proxy.settle()
        rows = await recent_request_logs(proxy.lb.sessionmaker)
        assert len(rows) == 3
        ids = [r["api_key_id"] for r in rows]  # newest first
        assert ids[1:] == [key_id, key_id] and str(ids[0]).startswith("static:") and STATIC not in str(ids[0])
        report = (await proxy.client.get("/api/keys/usage", params={"since": "1d"})).json()["data"]
        hana = next(r for r in report if r["key"] == "hana")
        assert hana["requests"] == 2 and hana["errors"] == 1 and hana["account"] == "acct1"
        assert hana["input_tokens"] > 0 and hana["output_tokens"] > 0 and hana["last_used_at"] is not None
        assert 0.0 <= hana["cached_share"] <= 1.0
        assert any(r["key"] == "CODEX_LB_API_KEYS" and r["requests"] == 1 for r in report)
        only = (await proxy.client.get("/api/keys/usage", params={"name": "hana"})).json()["data"]
        assert [r["key"] for r in only] == ["hana"]


async def test_last_used_is_written_behind(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, pipeline=PIPELINE, plugin_options=SLOW_SYNC) as proxy:
        key = await make_key(proxy, "ivan")
        assert (await proxy.client.post(PATH, json=BODY, headers=bearer(key))).status_code == 200

        async def stored() -> float | None:
            async with proxy.lb.sessionmaker() as session:
                return (await session.scalars(select(ApiKeyRow.last_used_at))).one()

        assert await stored() is None  # not on the request path
        await plugin(proxy).sync()
        assert await stored() is not None


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"name": "bad name"}, 400, "key name 'bad name'"),
    ({"name": "usage"}, 400, "'usage' is reserved"),
    ({"name": "k", "limits": ["requests=5/hour"]}, 400, "unknown window 'hour'"),
    ({"name": "k", "limits": ["requests=5/day", "requests=6/day"]}, 400, "two limits for requests per day"),
    ({"name": "k", "limits": "requests=5/day"}, 400, "limits: expected a list"),
    ({"name": "k", "models": []}, 400, "models: give at least one"),
    ({"name": "k", "expires": "soon"}, 400, "expires 'soon'"),
    ({"name": "k", "colour": "red"}, 400, "unknown field(s) colour"),
    ([1, 2], 400, "expected a JSON object"),
])
async def test_api_rejects_bad_input(tmp_path: Path, body: object, status: int, message: str) -> None:
    async with proxy_server(tmp_path, pipeline=PIPELINE) as proxy:
        r = await proxy.client.post("/api/keys", json=body)
        assert r.status_code == status and message in r.json()["error"]["message"], r.text


async def test_api_list_show_rotate_and_conflicts(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, pipeline=PIPELINE) as proxy:
        old = await make_key(proxy, "judy", limits=["requests=10/day"])
        again = await proxy.client.post("/api/keys", json={"name": "judy"})
        assert again.status_code == 409 and again.json()["error"]["code"] == "api_key_exists"
        listed = (await proxy.client.get("/api/keys")).json()["data"]
        assert [k["name"] for k in listed] == ["judy"] and "key" not in listed[0]
        assert listed[0]["prefix"] == old[:11] and old not in str(listed)
        rotated = await proxy.client.post("/api/keys/judy/rotate")
        new = rotated.json()["key"]
        register_secret(new)
        assert new != old and new.startswith("sk-clb-")
        assert (await proxy.client.post(PATH, json=BODY, headers=bearer(old))).status_code == 401
        assert (await proxy.client.post(PATH, json=BODY, headers=bearer(new))).status_code == 200
        missing = await proxy.client.get("/api/keys/nobody")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "api_key_not_found"
        remote = await proxy.client.get("/api/keys", headers={"x-forwarded-for": "203.0.113.9"})
        assert remote.status_code == 403
