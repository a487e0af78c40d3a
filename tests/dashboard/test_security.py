"""Dashboard security over real sockets: who may see what, sessions, CSRF, throttling, cookie flags."""

from __future__ import annotations

import re
import time

import pyotp
from sqlalchemy import update

from codexlb.db.models import DashboardSessionRow
from codexlb.testing.harness import ProxyHarness
from tests.dashboard.conftest import PASSWORD, browser, csrf_of, run_cli, sign_in

REMOTE = {"x-forwarded-for": "203.0.113.9"}


async def test_without_password_only_this_machine(proxy: ProxyHarness) -> None:
    async with browser(proxy) as client:
        local = await client.get("/dashboard/")
        assert local.status_code == 200
        assert "codexlb dashboard set-password" in local.text
        remote = await client.get("/dashboard/", headers=REMOTE)
        assert remote.status_code == 403
        assert "set-password" in remote.text
        assert "acct1" not in remote.text


async def test_no_session_is_refused(secured: ProxyHarness) -> None:
    account = secured.lb.pool.all()[0]
    async with browser(secured) as client:
        page = await client.get("/dashboard/accounts")
        assert page.status_code == 302 and page.headers["location"].startswith("/dashboard/login")
        action = await client.post(f"/dashboard/accounts/{account.id}/pause", data={"csrf_token": "x"})
        assert action.status_code == 401
        api = await client.get("/api/accounts", headers=REMOTE)
        assert api.status_code == 403
    assert account.status.value == "active"


async def test_sign_in_session_cookie_and_sign_out(secured: ProxyHarness) -> None:
    async with browser(secured) as client:
        answer = await sign_in(client)
        assert answer.status_code == 303 and answer.headers["location"] == "/dashboard/"
        cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
        overview = await client.get("/dashboard/")
        assert overview.status_code == 200 and "acct1" in overview.text
        remote_api = await client.get("/api/accounts", headers=REMOTE)  # a session opens /api from anywhere
        assert remote_api.status_code == 200 and len(remote_api.json()["data"]) == 2
        out = await client.post("/dashboard/logout", data={"csrf_token": csrf_of(overview.text)})
        assert out.status_code == 303
    async with browser(secured, headers={"cookie": cookie.split(";")[0]}) as replay:  # the old cookie, replayed
        stale = await replay.get("/dashboard/")
        assert stale.status_code == 302


async def test_cookie_is_secure_behind_a_trusted_tls_proxy(tmp_path) -> None:
    from codexlb.db.dashboard_auth import set_password
    from codexlb.testing.harness import proxy_server

    async with proxy_server(tmp_path, accounts=1, firewall_trust_proxy_headers=True) as proxy:
        assert proxy.lb.sessionmaker is not None
        await set_password(proxy.lb.sessionmaker, PASSWORD)
        async with browser(proxy, headers={"x-forwarded-proto": "https", "x-forwarded-for": "198.51.100.7"}) as c:
            answer = await sign_in(c)
            assert answer.status_code == 303
            assert "Secure" in answer.headers["set-cookie"]


async def test_expired_session_is_refused(secured: ProxyHarness) -> None:
    async with browser(secured) as client:
        await sign_in(client)
        assert (await client.get("/dashboard/")).status_code == 200
        assert secured.lb.sessionmaker is not None
        async with secured.lb.sessionmaker() as session, session.begin():
            await session.execute(update(DashboardSessionRow).values(expires_at=time.time() - 1))
        assert (await client.get("/dashboard/")).status_code == 302


async def test_csrf_refused_on_forms_and_api(secured: ProxyHarness) -> None:
    account = secured.lb.pool.all()[0]
    async with browser(secured) as client:
        await sign_in(client)
        page = await client.get("/dashboard/accounts")
        token = csrf_of(page.text)
        missing = await client.post(f"/dashboard/accounts/{account.id}/pause", data={})
        wrong = await client.post(f"/dashboard/accounts/{account.id}/pause", data={"csrf_token": "0" * 43})
        assert missing.status_code == 403 and wrong.status_code == 403
        assert account.status.value == "active"
        api = await client.patch(f"/api/accounts/{account.id}", json={"status": "paused"}, headers=REMOTE)
        assert api.status_code == 403 and api.json()["error"]["code"] == "csrf_failed"
        assert account.status.value == "active"
        ok = await client.post(f"/dashboard/accounts/{account.id}/pause", data={"csrf_token": token})
        assert ok.status_code == 303 and account.status.value == "paused"
        api_ok = await client.patch(f"/api/accounts/{account.id}", json={"status": "active"},
                                    headers={**REMOTE, "x-csrf-token": token})
        assert api_ok.status_code == 200 and account.status.value == "active"


async def test_wrong_password_is_throttled(secured: ProxyHarness) -> None:
    attempts = secured.lb.settings.dashboard_login_attempts
    async with browser(secured) as client:
        for _ in range(attempts):
            assert (await sign_in(client, "not the password")).status_code == 401
        locked = await sign_in(client, "not the password")
        assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
        still_locked = await sign_in(client, PASSWORD)  # even the right password waits
        assert still_locked.status_code == 429
        assert "codexlb_session" not in client.cookies


async def test_proxy_api_key_never_opens_admin_pages(tmp_path) -> None:
    from codexlb.db.dashboard_auth import set_password
    from codexlb.testing.harness import proxy_server

    key = "sk-test-dashboard-key"
    pipeline = ("firewall", "select_round_robin", "upstream")
    async with proxy_server(tmp_path, accounts=1, pipeline=pipeline, api_keys=(key,)) as proxy:
        assert proxy.lb.sessionmaker is not None
        await set_password(proxy.lb.sessionmaker, PASSWORD)
        auth = {"authorization": f"Bearer {key}", "x-api-key": key}
        async with browser(proxy, headers=auth) as client:
            assert (await client.post("/v1/responses", json={"model": "gpt-5", "input": "hi"})).status_code == 200
            for path in ("/dashboard/", "/dashboard/accounts", "/dashboard/settings", "/dashboard/requests"):
                answer = await client.get(path)
                assert answer.status_code == 302 and "/dashboard/login" in answer.headers["location"], path
            assert (await client.get("/api/accounts", headers=REMOTE)).status_code == 403
            assert (await sign_in(client, key)).status_code == 401


async def test_cli_password_and_totp(proxy: ProxyHarness, tmp_path) -> None:
    data = tmp_path / "data"
    short = await run_cli(data, "dashboard", "set-password", stdin="short\n")
    assert short.returncode == 1 and "at least 8" in short.stderr
    done = await run_cli(data, "dashboard", "set-password", stdin=f"{PASSWORD}\n")
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    totp = await run_cli(data, "dashboard", "totp", "enable")
    assert totp.returncode == 0, totp.stderr
    secret = re.search(r"secret=([A-Z2-7]+)", totp.stdout)
    assert secret and "\u2580" in totp.stdout + "\u2580"  # the QR code is drawn with block characters
    async with browser(proxy) as client:
        assert (await sign_in(client, PASSWORD)).status_code == 401  # the code is now required
        ok = await sign_in(client, PASSWORD, code=pyotp.TOTP(secret.group(1)).now())
        assert ok.status_code == 303
        settings = await client.get("/dashboard/settings")
        qr = await client.post("/dashboard/settings/totp-qr", data={"csrf_token": csrf_of(settings.text)})
        assert qr.status_code == 200 and "<svg" in qr.text
    off = await run_cli(data, "dashboard", "totp", "disable")
    assert off.returncode == 0
