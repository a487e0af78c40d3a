"""OAuth side of the fake upstream: authorize, PKCE code exchange, refresh rotation, revoke, device code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from codexlb.testing.fake_accounts import CLIENT_ID
from codexlb.testing.fake_faults import Fault
from codexlb.testing.fake_sse import sample_request
from codexlb.testing.fake_upstream import FakeAccount, FakeUpstream, write_auth_files
from codexlb.testing.jwt import decode_jwt, make_jwt, pkce_challenge, verify_jwt

REDIRECT = "http://localhost:1455/auth/callback"
VERIFIER = "v" * 43


def authorize_params(**overrides: str) -> dict[str, str]:
    params = {"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": REDIRECT,
              "scope": "openid profile email offline_access", "code_challenge": pkce_challenge(VERIFIER),
              "code_challenge_method": "S256", "state": "st-123", "codex_cli_simplified_flow": "true"}
    params.update(overrides)
    return params


async def login_code(http: httpx.AsyncClient) -> str:
    response = await http.get("/oauth/authorize", params=authorize_params())
    assert response.status_code == 302
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["state"] == ["st-123"]
    return query["code"][0]


async def exchange(http: httpx.AsyncClient, code: str, verifier: str = VERIFIER) -> httpx.Response:
    return await http.post("/oauth/token", data={"grant_type": "authorization_code", "code": code,
                                                 "redirect_uri": REDIRECT, "client_id": CLIENT_ID,
                                                 "code_verifier": verifier})


async def refresh(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.post("/oauth/token", json={"client_id": CLIENT_ID, "grant_type": "refresh_token",
                                                 "refresh_token": token, "scope": "openid profile email"})


async def test_authorize_redirects_and_pkce_exchange_logs_in(fake: FakeUpstream,
                                                             fake_auth_client: httpx.AsyncClient) -> None:
    fake.next_login = fake.add_account("acct-login", email="login@example.com", plan_type="pro")
    response = await fake_auth_client.get("/oauth/authorize", params=authorize_params())
    location = urlsplit(response.headers["location"])
    assert (location.scheme, location.netloc, location.path) == ("http", "localhost:1455", "/auth/callback")
    code = parse_qs(location.query)["code"][0]
    tokens = (await exchange(fake_auth_client, code)).json()
    assert set(tokens) >= {"id_token", "access_token", "refresh_token"} and fake.next_login is None
    claims = decode_jwt(tokens["id_token"])
    auth = claims["https://api.openai.com/auth"]
    assert claims["email"] == "login@example.com" and claims["exp"] > claims["iat"]
    assert auth["chatgpt_account_id"] == "acct-login" and auth["chatgpt_plan_type"] == "pro"
    access = decode_jwt(tokens["access_token"])
    assert access["https://api.openai.com/auth"]["chatgpt_account_id"] == "acct-login" and "exp" in access
    assert fake.accounts["acct-login"].access_token == tokens["access_token"]


async def test_authorize_creates_an_account_when_none_is_pending(fake: FakeUpstream,
                                                                  fake_auth_client: httpx.AsyncClient) -> None:
    tokens = (await exchange(fake_auth_client, await login_code(fake_auth_client))).json()
    account_id = decode_jwt(tokens["id_token"])["https://api.openai.com/auth"]["chatgpt_account_id"]
    assert list(fake.accounts) == [account_id]


async def test_pkce_failure_and_single_use_code(fake_auth_client: httpx.AsyncClient) -> None:
    code = await login_code(fake_auth_client)
    wrong = await exchange(fake_auth_client, code, verifier="w" * 43)
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    assert (await exchange(fake_auth_client, code)).status_code == 200
    reused = await exchange(fake_auth_client, code)
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"client_id": "app_other"}, "invalid_client"),
        ({"redirect_uri": "https://evil.example/auth/callback"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"state": ""}, "invalid_request"),
    ],
)
async def test_authorize_validation(fake_auth_client: httpx.AsyncClient, overrides: dict, error: str) -> None:
    response = await fake_auth_client.get("/oauth/authorize", params=authorize_params(**overrides))
    assert response.status_code == 400 and response.json()["error"] == error


async def test_injected_access_denied(fake: FakeUpstream, fake_auth_client: httpx.AsyncClient) -> None:
    fake.inject(None, Fault.access_denied("missing_codex_entitlement"))
    response = await fake_auth_client.get("/oauth/authorize", params=authorize_params())
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query == {"error": ["access_denied"], "error_description": ["missing_codex_entitlement"],
                     "state": ["st-123"]}


async def test_refresh_rotates_and_refuses_reuse(fake: FakeUpstream, fake_account: FakeAccount,
                                                 fake_auth_client: httpx.AsyncClient) -> None:
    old_refresh, old_access = fake_account.refresh_token, fake_account.access_token
    first = await refresh(fake_auth_client, old_refresh)
    assert first.status_code == 200
    tokens = first.json()
    assert tokens["refresh_token"] != old_refresh and tokens["access_token"] != old_access
    reused = await refresh(fake_auth_client, old_refresh)
    assert reused.status_code == 401 and reused.json()["error"] == "refresh_token_reused"
    form = await fake_auth_client.post("/oauth/token", data={"client_id": CLIENT_ID, "grant_type": "refresh_token",
                                                        "refresh_token": tokens["refresh_token"]})
    assert form.status_code == 200
    assert fake.refresh_calls == 3 and fake_account.refresh_calls == 3
    async with httpx.AsyncClient(base_url=fake.base_url) as http:
        stale = await http.post("/codex/responses", json=sample_request(),
                                headers={"Authorization": f"Bearer {old_access}",
                                         "chatgpt-account-id": fake_account.chatgpt_account_id})
        fresh = await http.post("/codex/responses", json=sample_request(), headers=fake_account.headers())
    assert stale.status_code == 401 and stale.json()["error"]["code"] == "token_invalidated"
    assert fresh.status_code == 200


async def test_refresh_errors(fake: FakeUpstream, fake_account: FakeAccount,
                              fake_auth_client: httpx.AsyncClient) -> None:
    fake.inject(fake_account.chatgpt_account_id, Fault.refresh_token_expired())
    fake.inject(fake_account.chatgpt_account_id, Fault.refresh_token_invalidated())
    fake.inject(fake_account.chatgpt_account_id, Fault.server_error(503), endpoint="token")
    expired = await refresh(fake_auth_client, fake_account.refresh_token)
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "refresh_token_expired"
    invalidated = await refresh(fake_auth_client, fake_account.refresh_token)
    assert invalidated.json()["error"]["code"] == "refresh_token_invalidated"
    assert (await refresh(fake_auth_client, fake_account.refresh_token)).status_code == 503
    assert (await refresh(fake_auth_client, fake_account.refresh_token)).status_code == 200
    unknown = await refresh(fake_auth_client, "rt_unknown")
    assert unknown.status_code == 400 and unknown.json()["error"] == "invalid_grant"
    bad_grant = await fake_auth_client.post("/oauth/token", json={"grant_type": "password", "client_id": CLIENT_ID})
    assert bad_grant.json()["error"] == "unsupported_grant_type"


async def test_token_endpoint_hang(fake: FakeUpstream, fake_account: FakeAccount,
                                   fake_auth_client: httpx.AsyncClient) -> None:
    fake.inject(None, Fault.hang(), endpoint="token")
    with pytest.raises(httpx.ReadTimeout):
        await fake_auth_client.post("/oauth/token", json={"grant_type": "refresh_token", "client_id": CLIENT_ID,
                                                     "refresh_token": fake_account.refresh_token}, timeout=0.2)


async def test_revoked_refresh_token_is_invalidated(fake_account: FakeAccount,
                                                    fake_auth_client: httpx.AsyncClient) -> None:
    token = fake_account.refresh_token
    revoke = await fake_auth_client.post("/oauth/revoke", json={"token": token, "token_type_hint": "refresh_token",
                                                           "client_id": CLIENT_ID})
    assert revoke.status_code == 200
    response = await refresh(fake_auth_client, token)
    assert response.status_code == 401 and response.json()["error"]["code"] == "refresh_token_invalidated"


async def test_device_code_flow(fake: FakeUpstream, fake_auth_client: httpx.AsyncClient) -> None:
    start = (await fake_auth_client.post("/api/accounts/deviceauth/usercode", json={"client_id": CLIENT_ID})).json()
    assert start["interval"] == "5" and start["device_auth_id"].startswith("deviceauth_")
    poll_body = {"device_auth_id": start["device_auth_id"], "user_code": start["user_code"]}
    pending = await fake_auth_client.post("/api/accounts/deviceauth/token", json=poll_body)
    assert pending.status_code == 403
    fake_account = fake.approve_device(start["user_code"])
    granted = (await fake_auth_client.post("/api/accounts/deviceauth/token", json=poll_body)).json()
    assert pkce_challenge(granted["code_verifier"]) == granted["code_challenge"]
    tokens = await fake_auth_client.post("/oauth/token", data={
        "grant_type": "authorization_code", "code": granted["authorization_code"], "client_id": CLIENT_ID,
        "redirect_uri": f"{fake.auth_base_url}/deviceauth/callback", "code_verifier": granted["code_verifier"]})
    assert tokens.status_code == 200 and tokens.json()["access_token"] == fake_account.access_token
    assert (await fake_auth_client.get("/codex/device")).status_code == 200


async def test_device_code_denied_and_unknown(fake: FakeUpstream, fake_auth_client: httpx.AsyncClient) -> None:
    start = (await fake_auth_client.post("/api/accounts/deviceauth/usercode", json={"client_id": CLIENT_ID})).json()
    fake.deny_device(start["user_code"])
    denied = await fake_auth_client.post("/api/accounts/deviceauth/token", json={
        "device_auth_id": start["device_auth_id"], "user_code": start["user_code"]})
    assert denied.status_code == 400 and denied.json()["error"]["code"] == "access_denied"
    unknown = await fake_auth_client.post("/api/accounts/deviceauth/token",
                                     json={"device_auth_id": "x", "user_code": "NOPE-NOPE"})
    assert unknown.status_code == 400
    with pytest.raises(KeyError):
        fake.approve_device("NOPE-NOPE")


def test_jwt_helpers_and_auth_json() -> None:
    token = make_jwt({"sub": "x", "exp": 1})
    assert decode_jwt(token) == {"sub": "x", "exp": 1} and verify_jwt(token) and not verify_jwt(token + "A")
    with pytest.raises(ValueError):
        decode_jwt("not.a-jwt")
    fake = FakeUpstream()
    fake_account = fake.add_account("acct-json")
    doc = fake_account.auth_json()
    assert doc["auth_mode"] == "chatgpt" and doc["OPENAI_API_KEY"] is None
    assert doc["tokens"] == {"id_token": fake_account.id_token, "access_token": fake_account.access_token,
                             "refresh_token": fake_account.refresh_token, "account_id": "acct-json"}
    assert doc["last_refresh"].endswith("Z")


def test_write_auth_files(tmp_path: Path) -> None:
    fake = FakeUpstream()
    fake_account = fake.add_account("acct-file")
    [path] = write_auth_files(fake, tmp_path)
    assert path == tmp_path / "acct-file" / "auth.json" and path.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.read_text()) == fake_account.auth_json()


def test_run_forever_prints_urls_and_writes_auth_files(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "codexlb.testing.fake_upstream", "--port", "0", "--accounts", "2",
               "--auth-dir", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as process:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(4)]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    assert lines[0].startswith("UPSTREAM_BASE_URL=http://127.0.0.1:") and lines[0].strip().endswith("/backend-api")
    assert lines[1].startswith("AUTH_BASE_URL=http://127.0.0.1:")
    account_ids = [line.split()[1] for line in lines[2:]]
    for account_id in account_ids:
        doc = json.loads((tmp_path / account_id / "auth.json").read_text())
        assert doc["tokens"]["account_id"] == account_id
