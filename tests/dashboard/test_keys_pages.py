"""The API keys page over real sockets: create (shown once), revoke, rotate, limits and scope, usage per key."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

import httpx
from sqlalchemy import delete, func, select

from codexlb.db.models import ApiKeyRow, RequestLogRow
from codexlb.testing.harness import ProxyHarness
from plugins.api_keys import ApiKeys
from tests.dashboard.conftest import REMOTE, browser, csrf_of, secret_of, sign_in

BODY = {"model": "gpt-5", "input": "hi", "store": False, "stream": True}
PATH = "/backend-api/codex/responses"


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def sync(proxy: ProxyHarness) -> None:
    """Share the key counters with the database now (the background sync is slowed down in these tests)."""
    plugin = proxy.lb.pm.get_plugin("api_keys")
    assert isinstance(plugin, ApiKeys)
    await plugin.sync()


@contextlib.asynccontextmanager
async def admin(proxy: ProxyHarness) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A signed-in admin browser and its CSRF token."""
    async with browser(proxy) as client:
        assert (await sign_in(client)).status_code == 303
        page = await client.get("/dashboard/keys")
        assert page.status_code == 200
        yield client, csrf_of(page.text)


async def create(client: httpx.AsyncClient, token: str, name: str, **fields: str | list[str]) -> httpx.Response:
    return await client.post("/dashboard/keys", data={"csrf_token": token, "name": name, **fields})


async def test_create_shows_the_key_once_and_never_again(keyed: ProxyHarness) -> None:
    async with admin(keyed) as (client, token):
        made = await create(client, token, "alice", expires="30d", **{"limit-requests-day": "500"})
        assert made.status_code == 200 and made.headers["cache-control"] == "no-store"
        secret = secret_of(made.text)
        assert "shown <strong>only this once</strong>" in made.text
        assert (await keyed.client.post(PATH, json=BODY, headers=bearer(secret))).status_code == 200
        pages = [await client.get("/dashboard/keys"), await client.get("/dashboard/keys/alice"),
                 await client.get("/api/keys", headers=REMOTE), await client.get("/api/keys/alice", headers=REMOTE)]
        for answer in pages:
            assert answer.status_code == 200 and "alice" in answer.text
            assert secret not in answer.text and secret[len("sk-clb-") + 4:] not in answer.text
        listed = pages[0].text
        assert f"<code>{secret[:11]}…</code>" in listed and "500 requests per day" in listed
        assert "expires" in listed
        again = await create(client, token, "alice")
        assert again.status_code == 409 and "already exists" in again.text
        bad = await create(client, token, "no spaces allowed", **{"limit-requests-day": "500"})
        assert bad.status_code == 400 and "key name" in bad.text
        assert 'value="500"' in bad.text  # the form keeps what was typed
    assert keyed.lb.sessionmaker is not None
    async with keyed.lb.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(ApiKeyRow)) == 1


async def test_revoke_makes_the_proxy_refuse_the_key(keyed: ProxyHarness) -> None:
    async with admin(keyed) as (client, token):
        secret = secret_of((await create(client, token, "bob")).text)
        assert (await keyed.client.post(PATH, json=BODY, headers=bearer(secret))).status_code == 200
        revoked = await client.post("/dashboard/keys/bob/revoke", data={"csrf_token": token})
        assert revoked.status_code == 303 and "notice=Revoked" in revoked.headers["location"]
        refused = await keyed.client.post(PATH, json=BODY, headers=bearer(secret))
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        row = re.search(r'<tr data-key="bob">.*?</tr>', (await client.get("/dashboard/keys")).text, re.S)
        assert row and 'class="status revoked"' in row.group(0) and "Rotate" not in row.group(0)
        missing = await client.post("/dashboard/keys/nobody/revoke", data={"csrf_token": token})
        assert missing.status_code == 404


async def test_rotate_shows_a_new_key_once_and_the_old_one_stops(keyed: ProxyHarness) -> None:
    async with admin(keyed) as (client, token):
        old = secret_of((await create(client, token, "carol")).text)
        rotated = await client.post("/dashboard/keys/carol/rotate", data={"csrf_token": token})
        assert rotated.status_code == 200 and rotated.headers["cache-control"] == "no-store"
        new = secret_of(rotated.text)
        assert new != old and "the previous key no longer works" in rotated.text
        assert (await keyed.client.post(PATH, json=BODY, headers=bearer(old))).status_code == 401
        assert (await keyed.client.post(PATH, json=BODY, headers=bearer(new))).status_code == 200
        detail = await client.get("/dashboard/keys/carol")
        assert new not in detail.text and "Rotated" in detail.text


async def test_limits_and_scope_are_saved_and_enforced(keyed: ProxyHarness) -> None:
    accounts = sorted(keyed.lb.pool.all(), key=lambda a: a.label)
    async with admin(keyed) as (client, token):
        secret = secret_of((await create(client, token, "dave")).text)
        for _ in range(2):
            assert (await keyed.client.post(PATH, json=BODY, headers=bearer(secret))).status_code == 200
        await sync(keyed)
        saved = await client.post("/dashboard/keys/dave/limits", data={
            "csrf_token": token, "limit-requests-day": "2", "limit-total_tokens-month": "1,000,000",
            "models": "gpt-5, gpt-5-codex", "accounts": [accounts[1].id]})
        assert saved.status_code == 303 and saved.headers["location"].startswith("/dashboard/keys/dave")
        detail = (await client.get("/dashboard/keys/dave")).text
        assert "2 / 2 requests per day" in detail
        assert re.search(r"[1-9]\d* / 1M tokens \(input \+ output\) per month", detail)  # tokens counted too
        assert "gpt-5, gpt-5-codex" in detail and accounts[1].label in detail
        over = await keyed.client.post(PATH, json=BODY, headers=bearer(secret))  # the 2 made before count
        assert over.status_code == 429 and over.json()["error"]["limit"]["used"] == 2
        shown = (await client.get("/api/keys/dave", headers=REMOTE)).json()
        assert shown["limits"] == [{"metric": "requests", "window": "day", "max": 2},
                                   {"metric": "total_tokens", "window": "month", "max": 1000000}]
        assert shown["models"] == ["gpt-5", "gpt-5-codex"] and [a["id"] for a in shown["accounts"]] == [accounts[1].id]

        wrong = await client.post("/dashboard/keys/dave/limits", data={"csrf_token": token,
                                                                        "limit-requests-5h": "0"})
        assert wrong.status_code == 400 and "at least 1" in wrong.text
        cleared = await client.post("/dashboard/keys/dave/limits", data={"csrf_token": token})
        assert cleared.status_code == 303
        shown = (await client.get("/api/keys/dave", headers=REMOTE)).json()
        assert shown["limits"] == [] and shown["models"] is None and shown["accounts"] is None
        assert (await keyed.client.post(PATH, json=BODY, headers=bearer(secret))).status_code == 200


async def test_usage_per_key_comes_from_the_key_counters(keyed: ProxyHarness) -> None:
    async with admin(keyed) as (client, token):
        erin = secret_of((await create(client, token, "erin")).text)
        secret_of((await create(client, token, "frank")).text)
        for _ in range(3):
            assert (await keyed.client.post(PATH, json=BODY, headers=bearer(erin))).status_code == 200
        await sync(keyed)
        assert keyed.lb.sessionmaker is not None
        async with keyed.lb.sessionmaker() as session, session.begin():
            await session.execute(delete(RequestLogRow))  # usage does not come from the request log
        listed = (await client.get("/dashboard/keys")).text
        erin_row = re.search(r'<tr data-key="erin">.*?</tr>', listed, re.S)
        frank_row = re.search(r'<tr data-key="frank">.*?</tr>', listed, re.S)
        assert erin_row and frank_row
        assert erin_row.group(0).count("3 req.") == 2  # today and this month
        assert "0 req." in frank_row.group(0)
        detail = (await client.get("/dashboard/keys/erin")).text
        week = re.search(r'<tr data-window="week"><td>this week</td><td>(\d+)</td><td>(\d+)</td>', detail)
        assert week and week.group(1) == "3" and int(week.group(2)) > 0  # requests and input tokens


async def test_key_forms_refuse_a_missing_csrf_token(keyed: ProxyHarness) -> None:
    async with admin(keyed) as (client, token):
        secret = secret_of((await create(client, token, "gina")).text)
        assert (await client.post("/dashboard/keys", data={"name": "henry"})).status_code == 403
        for action in ("revoke", "rotate", "limits"):
            answer = await client.post(f"/dashboard/keys/gina/{action}", data={"csrf_token": "0" * 43,
                                                                               "limit-requests-day": "1"})
            assert answer.status_code == 403, action
        assert (await keyed.client.post(PATH, json=BODY, headers=bearer(secret))).status_code == 200
        shown = (await client.get("/api/keys/gina", headers=REMOTE)).json()
        assert shown["state"] == "active" and shown["limits"] == [] and shown["rotated_at"] is None
        assert "henry" not in (await client.get("/dashboard/keys")).text


async def test_the_page_says_when_keys_are_not_checked(secured: ProxyHarness) -> None:
    async with browser(secured) as client:
        await sign_in(client)
        page = await client.get("/dashboard/keys")
        assert page.status_code == 200 and 'id="keys-unchecked"' in page.text


async def test_the_page_is_quiet_when_keys_are_checked(keyed: ProxyHarness) -> None:
    async with admin(keyed) as (client, _):
        assert 'id="keys-unchecked"' not in (await client.get("/dashboard/keys")).text
