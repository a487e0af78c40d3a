"""`codexlb accounts login`: browser (callback listener), --manual and --device against the fake, over sockets."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from codexlb.accounts.oauth import LoginError, check_callback, parse_callback
from codexlb.settings import Settings
from codexlb.testing.fake_faults import Fault
from codexlb.testing.fake_upstream import FakeUpstream
from codexlb.testing.jwt import codex_claims, make_jwt, pkce_challenge
from tests.accounts.conftest import (
    URL_RE,
    ScriptedStdin,
    assert_no_secrets,
    authorize,
    browser,
    get,
    make_settings,
    stored,
)

AUTH_PARAMS = {"response_type", "client_id", "redirect_uri", "scope", "code_challenge", "code_challenge_method",
               "id_token_add_organizations", "codex_cli_simplified_flow", "state", "originator"}




async def test_browser_login_stores_the_account(fake: FakeUpstream, settings: Settings, cli, caplog) -> None:
    account = fake.next_login = fake.add_account("acct-browser", email="browser@example.com", plan_type="pro")
    run = cli(settings, "accounts", "login", "--label", "work")
    url = (await run.wait_for(URL_RE)).group(0)
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert set(query) == AUTH_PARAMS
    assert query["response_type"] == "code" and query["client_id"] == settings.oauth_client_id
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["scope"] == settings.oauth_scope and query["originator"] == "codex_cli_rs"
    assert query["id_token_add_organizations"] == query["codex_cli_simplified_flow"] == "true"
    assert len(query["state"]) == 43
    redirect = urlsplit(query["redirect_uri"])
    assert (redirect.hostname, redirect.path) == ("127.0.0.1", "/auth/callback") and redirect.port != 0

    _, callback = await browser(url)
    assert callback.status_code == 200 and "Login complete" in callback.text
    assert await run.result() == 0
    assert "added account work <browser@example.com> (plan pro" in run.out

    exchange = fake.requests_for("token")[-1]
    assert exchange.body.decode().startswith("grant_type=authorization_code")
    verifier = parse_qs(exchange.body.decode())["code_verifier"][0]
    assert pkce_challenge(verifier) == query["code_challenge"] and len(verifier) == 86
    [row] = await stored(settings)
    assert (row.label, row.email, row.chatgpt_account_id, row.plan_type) == (
        "work", "browser@example.com", "acct-browser", "pro")
    assert (row.access_token, row.refresh_token, row.id_token) == (
        account.access_token, account.refresh_token, account.id_token)
    with pytest.raises(httpx.ConnectError):  # the callback listener is gone
        async with httpx.AsyncClient() as http:
            await http.get(query["redirect_uri"])
    assert_no_secrets(fake, run.output, callback.text, caplog=caplog)


async def test_login_again_updates_the_same_account(fake: FakeUpstream, settings: Settings, cli) -> None:
    account = fake.add_account("acct-again")
    for expected in ("added", "updated"):
        fake.next_login = account
        run = cli(settings, "accounts", "login")
        await browser((await run.wait_for(URL_RE)).group(0))
        assert await run.result() == 0 and f"{expected} account" in run.out
    [row] = await stored(settings)
    assert row.access_token == account.access_token


async def test_port_in_use_suggests_device(fake: FakeUpstream, tmp_path: Path, cli, caplog) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        settings = make_settings(tmp_path, fake, oauth_callback_port=busy.getsockname()[1])
        run = cli(settings, "accounts", "login")
        assert await run.result() == 1
    assert "already in use" in run.err and "--device" in run.err and "--manual" in run.err
    assert "oauth/authorize" not in run.out
    assert await stored(settings) == []


async def test_state_mismatch_stores_nothing(fake: FakeUpstream, settings: Settings, cli, caplog) -> None:
    run = cli(settings, "accounts", "login")
    url = (await run.wait_for(URL_RE)).group(0)
    location = await authorize(url)
    callback = await get(re.sub(r"state=[^&]+", "state=forged", location))
    assert callback.status_code == 400 and "does not match" in callback.text
    assert await run.result() == 1
    assert "state does not match" in run.err and "nothing was stored" in run.err
    assert fake.requests_for("token") == [] and await stored(settings) == []
    assert_no_secrets(fake, run.output, caplog=caplog)


async def test_provider_error_is_reported(fake: FakeUpstream, settings: Settings, cli) -> None:
    fake.inject(None, Fault.access_denied("missing_codex_entitlement"))
    run = cli(settings, "accounts", "login")
    _, callback = await browser((await run.wait_for(URL_RE)).group(0))
    assert callback.status_code == 400
    assert await run.result() == 1
    assert "'access_denied'" in run.err and "no Codex access" in run.err
    assert await stored(settings) == []


async def test_timeout_without_callback(fake: FakeUpstream, settings: Settings, cli) -> None:
    run = cli(settings, "accounts", "login", "--timeout", "0.05")
    assert await run.result() == 1
    assert "timed out" in run.err and "nothing was stored" in run.err
    assert await stored(settings) == []


@pytest.mark.parametrize(("fault", "message"), [
    (Fault.server_error(500), "refused the code (HTTP 500"),
    (Fault.hang(), "did not answer within 0.2 s"),
])
async def test_failed_exchange(fake: FakeUpstream, tmp_path: Path, cli, caplog, fault: Fault, message: str) -> None:
    settings = make_settings(tmp_path, fake, oauth_timeout_seconds=0.2)
    fake.inject(None, fault, endpoint="token")
    run = cli(settings, "accounts", "login", "--timeout", "10")
    _, callback = await browser((await run.wait_for(URL_RE)).group(0))
    assert callback.status_code == 400 and "Login failed" in callback.text
    assert await run.result() == 1
    assert message in run.err and await stored(settings) == []
    assert_no_secrets(fake, run.output, callback.text, caplog=caplog)


async def test_manual_login_with_pasted_url(fake: FakeUpstream, settings: Settings, cli, caplog) -> None:
    account = fake.next_login = fake.add_account("acct-manual", email="manual@example.com")
    stdin = ScriptedStdin()
    run = cli(settings, "accounts", "login", "--manual", stdin=stdin)
    url = (await run.wait_for(URL_RE)).group(0)
    await run.wait_for("paste it here")
    location = await authorize(url)
    assert urlsplit(location).netloc == "127.0.0.1:1455"  # the configured redirect: nothing listens there
    stdin.feed(location + "\n")
    assert await run.result() == 0
    [row] = await stored(settings)
    assert row.chatgpt_account_id == "acct-manual" and row.refresh_token == account.refresh_token
    assert_no_secrets(fake, run.output, caplog=caplog)


async def test_manual_login_rejects_a_foreign_url(fake: FakeUpstream, settings: Settings, cli) -> None:
    stdin = ScriptedStdin()
    run = cli(settings, "accounts", "login", "--manual", stdin=stdin)
    await run.wait_for("paste it here")
    stdin.feed("http://localhost:1455/auth/callback?code=ac_x&state=other\n")
    assert await run.result() == 1 and "state does not match" in run.err
    stdin = ScriptedStdin()
    run = cli(settings, "accounts", "login", "--manual", stdin=stdin)
    await run.wait_for("paste it here")
    stdin.feed("\n")
    assert await run.result() == 1 and "no callback URL" in run.err
    assert await stored(settings) == []


async def test_login_without_refresh_token_warns(fake: FakeUpstream, settings: Settings, cli) -> None:
    common = {"chatgpt_account_id": "acct-norefresh", "email": "nr@example.com", "iat": 1, "exp": 4_000_000_000}
    body = {"access_token": make_jwt(codex_claims(**common, kind="access")),  # type: ignore[arg-type]
            "id_token": make_jwt(codex_claims(**common))}  # type: ignore[arg-type]
    fake.inject(None, Fault.status(200, body), endpoint="token")
    run = cli(settings, "accounts", "login")
    await browser((await run.wait_for(URL_RE)).group(0))
    assert await run.result() == 0
    assert "no refresh token" in run.err and "offline_access" in run.err
    [row] = await stored(settings)
    assert row.chatgpt_account_id == "acct-norefresh" and row.refresh_token is None


def test_check_callback_rejects_odd_state() -> None:
    with pytest.raises(LoginError) as info:
        check_callback({"state": "sté", "code": "c"}, "state")
    assert info.value.code == "state_mismatch"
    assert check_callback(parse_callback("?code=c&state=s"), "s") == "c"
