"""The Accounts page's forms over real sockets: browser OAuth, device code, auth.json upload,
pause/resume/remove; the same services as /api (no password set: this machine only)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from codexlb.testing.fake_upstream import FakeUpstream
from codexlb.testing.harness import ProxyHarness, proxy_server
from tests.accounts.conftest import assert_no_secrets, browser
from tests.dashboard.conftest import csrf_of

CALLBACK = {"oauth_callback_host": "127.0.0.1", "oauth_callback_port": 0,
            "oauth_redirect_uri": "http://127.0.0.1:1455/auth/callback", "oauth_timeout_seconds": 5.0}


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(events=3, device_interval=0) as server:
        yield server


@pytest.fixture
async def empty(tmp_path: Path, fake: FakeUpstream) -> AsyncIterator[ProxyHarness]:
    async with proxy_server(tmp_path, accounts=0, fake=fake, **CALLBACK) as harness:
        yield harness


async def _token(proxy: ProxyHarness) -> str:
    return csrf_of((await proxy.client.get("/dashboard/accounts")).text)


async def test_browser_login_from_the_page(empty: ProxyHarness, caplog) -> None:
    empty.fake.next_login = empty.fake.add_account("acct-web", email="web@example.com")
    started = await empty.client.post("/dashboard/accounts/oauth", data={"csrf_token": await _token(empty),
                                                                           "label": "web"})
    assert started.status_code == 200
    link = re.search(r'href="([^"]+)"[^>]*id="authorize"', started.text)
    assert link, started.text
    _, callback = await browser(link.group(1).replace("&amp;", "&"))
    assert callback.status_code == 200
    async with asyncio.timeout(10):
        while (await empty.client.get("/api/accounts/oauth/status")).json()["status"] == "pending":
            await asyncio.sleep(0.01)
    listing = await empty.client.get("/dashboard/accounts")
    assert 'data-account="web"' in listing.text
    assert [a.label for a in empty.lb.pool.all()] == ["web"]
    assert_no_secrets(empty.fake, started.text, listing.text, caplog=caplog)


async def test_device_code_from_the_page(empty: ProxyHarness) -> None:
    page = await empty.client.post("/dashboard/accounts/device", data={"csrf_token": await _token(empty),
                                                                        "label": "tv"})
    assert page.status_code == 200
    code = re.search(r'class="code-big">([^<]+)<', page.text)
    assert code and "pending" in page.text
    empty.fake.approve_device(code.group(1))
    async with asyncio.timeout(10):
        while (state := (await empty.client.get("/api/accounts/device/status")).json())["status"] == "pending":
            await asyncio.sleep(0.01)
    assert state["status"] == "success" and state["account"]["label"] == "tv"
    assert "tv is in the pool" in (await empty.client.get("/dashboard/accounts/device")).text
    assert [a.label for a in empty.lb.pool.all()] == ["tv"]


async def test_upload_auth_json(empty: ProxyHarness) -> None:
    token = await _token(empty)
    bad = await empty.client.post("/dashboard/accounts/upload", data={"csrf_token": token},
                                  files={"auth_json": ("auth.json", b"{not json", "application/json")})
    assert bad.status_code == 400 and "not JSON" in bad.text
    incomplete = await empty.client.post("/dashboard/accounts/upload", data={"csrf_token": token},
                                         files={"auth_json": ("auth.json", b'{"tokens": {}}', "application/json")})
    assert incomplete.status_code == 400 and empty.lb.pool.all() == []
    document = json.dumps(empty.fake.add_account("acct-file").auth_json()).encode()
    done = await empty.client.post("/dashboard/accounts/upload", data={"csrf_token": token},
                                   files={"auth_json": ("auth.json", document, "application/json")})
    assert done.status_code == 303 and "Imported" in done.headers["location"]
    assert len(empty.lb.pool.all()) == 1


async def test_pause_resume_remove(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, accounts=2) as proxy:
        first, second = proxy.lb.pool.all()
        token = await _token(proxy)
        for action, status in (("pause", "paused"), ("resume", "active")):
            answer = await proxy.client.post(f"/dashboard/accounts/{first.id}/{action}", data={"csrf_token": token})
            assert answer.status_code == 303 and first.status.value == status
        gone = await proxy.client.post(f"/dashboard/accounts/{second.id}/remove", data={"csrf_token": token})
        assert gone.status_code == 303 and proxy.lb.pool.get(second.id) is None
        missing = await proxy.client.post(f"/dashboard/accounts/{second.id}/pause", data={"csrf_token": token})
        assert missing.status_code == 404 and "no account matches" in missing.text
        detail = await proxy.client.get(f"/dashboard/accounts/{first.id}")
        assert detail.status_code == 200 and "Recent requests" in detail.text
