"""My usage over real sockets: a key holder signs in with the key and sees only that key and the pool's headroom."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from codexlb.app import create_app
from codexlb.db.models import DashboardSessionRow
from codexlb.testing.harness import ProxyHarness
from codexlb.web.dashboard import KEY_ENDPOINTS, LOGIN_ENDPOINTS
from tests.dashboard.conftest import PASSWORD, REMOTE, browser, csrf_of, key_sign_in, sign_in
from tests.dashboard.test_keys_pages import BODY, PATH, bearer, sync
from tests.keys.conftest import make_key

OPEN_TO_ALL = LOGIN_ENDPOINTS | KEY_ENDPOINTS | {"dashboard.static", "dashboard_root"}


async def key_sessions(proxy: ProxyHarness) -> int:
    assert proxy.lb.sessionmaker is not None
    async with proxy.lb.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(DashboardSessionRow)
                                        .where(DashboardSessionRow.kind == "key")) or 0)


async def test_key_holder_sees_own_usage_limits_and_pool_headroom(keyed: ProxyHarness) -> None:
    alice = await make_key(keyed, "alice", limits=["requests=5/day"], models=["gpt-5"])
    bob = await make_key(keyed, "bob-the-other")
    for key, times in ((alice, 2), (bob, 1)):
        for _ in range(times):
            assert (await keyed.client.post(PATH, json=BODY, headers=bearer(key))).status_code == 200
    await sync(keyed)
    async with browser(keyed) as client:
        signed = await key_sign_in(client, alice)
        assert signed.status_code == 303 and signed.headers["location"] == "/dashboard/my"
        page = await client.get("/dashboard/my")
        assert page.status_code == 200
        html = page.text
        assert "alice" in html and f"<code>{alice[:11]}…</code>" in html and alice not in html
        assert "2 / 5 requests per day" in html
        today = re.search(r'<tr data-window="day"><td>this day</td><td>(\d+)</td>', html)
        assert today and today.group(1) == "2"
        assert 'id="headroom"' in html and "2 / 2</strong>" in html  # both accounts usable, counted not named
        for account in keyed.lb.pool.all():
            assert account.label not in html and account.id not in html
            assert account.email is None or account.email not in html
        assert "bob-the-other" not in html
        assert 'href="/dashboard/accounts"' not in html and 'href="/dashboard/keys"' not in html  # no admin nav
        out = await client.post("/dashboard/logout", data={"csrf_token": csrf_of(html)})
        assert out.status_code == 303 and out.headers["location"] == "/dashboard/my/login"
        assert (await client.get("/dashboard/my")).status_code == 302


async def test_a_key_session_opens_no_admin_page_and_no_api(keyed: ProxyHarness) -> None:
    key = await make_key(keyed, "carol")
    account = keyed.lb.pool.all()[0]
    values = {"account_id": account.id, "ref": account.id, "name": "carol", "ident": 1}
    routes = [(rule.rule, method, rule.endpoint) for rule in create_app(keyed.lb.settings).url_map.iter_rules()
              if rule.rule.startswith(("/dashboard", "/api")) and rule.endpoint not in OPEN_TO_ALL
              for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})]
    assert len([r for r in routes if r[0].startswith("/dashboard")]) >= 20 and any("/api/keys" in r[0] for r in routes)
    async with browser(keyed) as client:
        assert (await key_sign_in(client, key)).status_code == 303
        token = csrf_of((await client.get("/dashboard/my")).text)
        for rule, method, endpoint in routes:
            path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(values[m.group(1)]), rule)
            headers = {**REMOTE, "x-csrf-token": token}
            if path.startswith("/api"):
                answer = await client.request(method, path, json={} if method != "GET" else None, headers=headers)
            else:
                answer = await client.request(method, path, data={"csrf_token": token} if method != "GET" else None,
                                              headers=headers)
            assert answer.status_code == 403, (method, path, endpoint, answer.status_code)
            assert account.label not in answer.text, (method, path)
        assert (await client.get("/dashboard/my")).status_code == 200  # still signed in to its own page
    assert account.status.value == "active"
    assert (await keyed.client.post(PATH, json=BODY, headers=bearer(key))).status_code == 200


async def test_revoking_or_rotating_the_key_ends_its_session(keyed: ProxyHarness) -> None:
    dave = await make_key(keyed, "dave")
    erin = await make_key(keyed, "erin")
    async with browser(keyed) as first, browser(keyed) as second:
        assert (await key_sign_in(first, dave)).status_code == 303
        assert (await key_sign_in(second, erin)).status_code == 303
        assert (await first.get("/dashboard/my")).status_code == 200
        assert (await second.get("/dashboard/my")).status_code == 200
        assert await key_sessions(keyed) == 2
        assert (await keyed.client.post("/api/keys/dave/revoke")).status_code == 200
        assert (await keyed.client.post("/api/keys/erin/rotate")).status_code == 200
        for client in (first, second):
            ended = await client.get("/dashboard/my")
            assert ended.status_code == 302 and ended.headers["location"] == "/dashboard/my/login"
        assert await key_sessions(keyed) == 0
        refused = await key_sign_in(first, dave)
        assert refused.status_code == 401 and "not valid" in refused.text
        assert (await key_sign_in(second, erin)).status_code == 401  # the old key, rotated away


async def test_key_sign_in_is_throttled_like_the_password(keyed: ProxyHarness) -> None:
    key = await make_key(keyed, "frank")
    attempts = keyed.lb.settings.dashboard_login_attempts
    async with browser(keyed) as client:
        assert (await sign_in(client, "not the password")).status_code == 401  # failures of both kinds add up
        for _ in range(attempts - 1):
            assert (await key_sign_in(client, "sk-clb-" + "x" * 43)).status_code == 401
        locked = await key_sign_in(client, key)  # even the right key waits
        assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
        assert (await sign_in(client, PASSWORD)).status_code == 429
        assert "codexlb_session" not in client.cookies
    assert await key_sessions(keyed) == 0


async def test_key_sign_in_needs_the_form_token_and_an_admin_sees_the_keys_page(keyed: ProxyHarness) -> None:
    key = await make_key(keyed, "gina")
    async with browser(keyed) as client:
        refused = await client.post("/dashboard/my/login", data={"api_key": key})
        assert refused.status_code == 403 and await key_sessions(keyed) == 0
        assert (await sign_in(client, key)).status_code == 401  # a key is not the admin password
        assert (await sign_in(client)).status_code == 303
        mine = await client.get("/dashboard/my")
        assert mine.status_code == 302 and mine.headers["location"] == "/dashboard/keys"
