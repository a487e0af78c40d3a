"""No token, key or Authorization value reaches the logs or error bodies, even when requests fail.

The whole session is checked by the ``log_capture`` fixture in ``tests/conftest.py``; these tests
provoke the failures that carry credentials and check right away.
"""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from codexlb.testing.fake_upstream import Fault
from codexlb.testing.harness import proxy_server
from codexlb.testing.secrets import register_secret
from tests.support.logleaks import LogCapture, find_leaks

pytest_plugins = ["pytester"]

KEY = "sk-codexlb-client-key-for-leak-tests-0001"
WRONG_KEY = "sk-codexlb-wrong-key-for-leak-tests-0002"
register_secret(KEY, WRONG_KEY)
PIPELINE = ("firewall", "api_keys", "decompress", "image_inline", "select_round_robin", "upstream", "sse_limit",
            "log_stdout", "log_db")
BODY = {"model": "gpt-5", "store": False, "stream": True, "input": "hi"}


async def test_failures_carrying_credentials_leak_nothing(tmp_path: Path, log_capture: LogCapture,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    start = len(log_capture.lines)
    bodies: list[str] = []
    async with proxy_server(tmp_path, pipeline=PIPELINE, api_keys=(KEY,), log_proxy_request_shape=True,
                            log_proxy_request_payload=True) as proxy:
        account = proxy.accounts[0]
        secrets = (account.access_token, account.refresh_token, account.id_token, KEY, WRONG_KEY)
        path = "/backend-api/codex/responses"
        # Codex CLI signed in with ChatGPT sends its own token as Bearer: refused, not logged
        r = await proxy.client.post(path, json=BODY, headers={"authorization": f"Bearer {account.access_token}"})
        assert r.status_code == 401
        bodies.append(r.text)
        r = await proxy.client.post(path, json=BODY, headers={"x-api-key": WRONG_KEY})
        assert r.status_code == 401
        bodies.append(r.text)
        # a payload full of credentials, logged with LOG_PROXY_REQUEST_PAYLOAD
        loaded = {**BODY, "client_metadata": {"api_key": KEY, "refresh_token": account.refresh_token},
                  "input": [{"type": "message", "role": "user", "content": [
                      {"type": "input_text", "text": f"Authorization: Bearer {account.access_token}"}]}]}
        r = await proxy.client.post(path, json=loaded, headers={"authorization": f"Bearer {KEY}"})
        assert r.status_code == 200
        # keys from the database: created, used, over limit, rotated, revoked; only answers that carry them
        created = await proxy.client.post("/api/keys", json={"name": "leak", "limits": ["requests=1/day"],
                                                             "models": ["gpt-5"]})
        stored = created.json()["key"]
        register_secret(stored)
        secrets += (stored,)
        r = await proxy.client.post(path, json=BODY, headers={"authorization": f"Bearer {stored}"})
        assert r.status_code == 200
        for status, headers, body in ((429, {"authorization": f"Bearer {stored}"}, BODY),
                                      (401, {"x-api-key": stored[:-2]}, BODY)):
            r = await proxy.client.post(path, json=body, headers=headers)
            assert r.status_code == status
            bodies.append(r.text)
        rotated = (await proxy.client.post("/api/keys/leak/rotate")).json()["key"]
        register_secret(rotated)
        secrets += (rotated,)
        await proxy.client.post("/api/keys/leak/revoke")
        for r in (await proxy.client.get("/api/keys"), await proxy.client.get("/api/keys/leak"),
                  await proxy.client.get("/api/keys/usage"),
                  await proxy.client.post(path, json=BODY, headers={"authorization": f"Bearer {rotated}"})):
            bodies.append(r.text)
        await proxy.lb.pm.get_plugin("api_keys").sync()
        await proxy.lb.pm.get_plugin("log_db").flush()
        # the upstream refuses every account's token: refresh, retry, then an error for the client
        proxy.fake.inject(None, Fault.token_invalidated(), times=-1)
        r = await proxy.client.post(path, json=BODY, headers={"authorization": f"Bearer {KEY}"})
        assert r.status_code >= 400
        bodies.append(r.text)
        r = await proxy.client.post("/v1/chat/completions", headers={"x-api-key": KEY},
                                    json={"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code >= 400
        bodies.append(r.text)
        assert (await proxy.client.get("/healthz")).status_code == 200
    logged = log_capture.text(start)
    assert "codexlb.access" in logged and "codexlb.request_payload" in logged  # the capture saw our lines
    assert find_leaks(logged, secrets) == []
    assert find_leaks("\n".join(r.getMessage() for r in caplog.records), secrets) == []
    assert find_leaks("\n".join(bodies), secrets) == []


def test_find_leaks() -> None:
    register_secret("registered-secret-value-123")
    assert find_leaks("nothing here") == []
    assert find_leaks("oops registered-secret-value-123 leaked") == ["regist...(27 chars)"]
    assert find_leaks("header Authorization: Bearer eyJhbGciOiJub25lIn0.e30.") != []
    assert find_leaks("an unregistered value", extra=("unregistered",)) != []
    register_secret("short", None, "")  # ignored: too short to search for without false alarms
    assert find_leaks("short") == []


def test_session_check_fails_when_a_secret_is_logged(pytester: pytest.Pytester,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    conftest = Path(__file__).with_name("conftest.py").read_text()
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))  # the conftest imports tests.support
    pytester.makeconftest(conftest)
    pytester.makepyfile(test_leaky=textwrap.dedent("""
        import logging
        from codexlb.testing.secrets import register_secret

        def test_logs_a_token():
            register_secret("tok-ABCDEFGHIJKLMNOP")
            logging.getLogger("codexlb.somewhere").debug("refreshing with tok-ABCDEFGHIJKLMNOP")
    """))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:asyncio")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*secrets appeared in the logs*tok-AB...(20 chars)*"])
