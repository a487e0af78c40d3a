"""log_stdout: the access line, the request shape, the redacted payload; no content by default."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from codexlb import ConfigError, TokenUsage
from codexlb.settings import Settings
from codexlb.testing import make_account, make_flow
from codexlb.testing.harness import proxy_server
from plugins.log_stdout import REDACTED, LogStdout, access_fields, access_line, clean, redact, request_shape, secret_key

PIPELINE = ("firewall", "select_round_robin", "upstream", "log_stdout")
PROMPT = "please keep this prompt text out of the logs"
CACHE_KEY = "0199a1b2-cache-key-of-a-conversation"
BODY = {"model": "gpt-5", "store": False, "stream": True, "prompt_cache_key": CACHE_KEY,
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": PROMPT}]}],
        "tools": [{"type": "function", "name": "shell", "parameters": {"type": "object"}}]}


def lines(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


def everything(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


# -- unit ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "secret"), [
    ("authorization", True), ("Authorization", True), ("api_key", True), ("x-api-key", True), ("apiKey", True),
    ("token", True), ("access_token", True), ("refreshToken", True), ("id_token", True), ("client_secret", True),
    ("password", True), ("cookie", True), ("auth", True), ("credentials", True),
    ("max_output_tokens", False), ("input_tokens", False), ("prompt_cache_key", False), ("model", False),
    ("author", False), ("text", False), ("tokenizer", False), ("type", False),
])
def test_secret_key(key: str, secret: bool) -> None:
    assert secret_key(key) is secret


def test_redact() -> None:
    jwt = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2ln"
    payload = {
        "model": "gpt-5", "api_key": "sk-abc", "nested": [{"Authorization": "Bearer x", "refresh_token": "rt"}],
        "max_output_tokens": 100, "token": None,
        "input": [{"type": "input_text", "text": f"my header is Bearer {jwt} and key sk-{'a' * 24} ok"},
                  {"type": "input_image", "image_url": "data:image/png;base64," + "A" * 5000}],
    }
    out = redact(payload)
    text = json.dumps(out)
    assert out["api_key"] == REDACTED and out["nested"][0] == {"Authorization": REDACTED, "refresh_token": REDACTED}
    assert out["max_output_tokens"] == 100 and out["token"] is None and out["model"] == "gpt-5"
    assert jwt not in text and "sk-aaaa" not in text and "ok" in out["input"][0]["text"]
    assert out["input"][1]["image_url"].startswith("data:image/png;base64,AAAA") and len(text) < 1000
    assert payload["api_key"] == "sk-abc"  # the original is not changed


def test_redact_deep_nesting() -> None:
    deep: Any = "x"
    for _ in range(500):
        deep = [deep]
    assert "nested too deep" in json.dumps(redact(deep))


def test_request_shape_has_no_content() -> None:
    flow = make_flow(payload={**BODY, "instructions": "be brief",
                              "input": [*BODY["input"], {"type": "function_call", "name": "shell", "arguments": "{}"},
                                        {"role": "assistant", "content": "done"}]})
    shape = request_shape(flow, raw_cache_key=False)
    assert shape["model"] == "gpt-5" and shape["stream"] is True and shape["tool_count"] == 1
    assert shape["input_items"] == {"message": 2, "function_call": 1}
    assert shape["content_parts"] == {"input_text": 1, "text": 1}
    assert shape["roles"] == {"user": 1, "assistant": 1} and shape["instructions_chars"] == 8
    assert shape["prompt_cache_key"] == hashlib.sha256(CACHE_KEY.encode()).hexdigest()[:12]
    assert PROMPT not in json.dumps(shape) and CACHE_KEY not in json.dumps(shape)
    assert request_shape(flow, raw_cache_key=True)["prompt_cache_key"] == CACHE_KEY
    chat = make_flow(endpoint="chat_completions", payload={"model": "m", "messages": [
        {"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "image_url"}]}]})
    assert request_shape(chat, False)["roles"] == {"system": 1, "user": 1}


def test_access_line_fields() -> None:
    flow = make_flow(payload={"model": "gpt-5\nFAKE LINE"})
    flow.account, flow.status = make_account("a", label="acct1"), 200
    flow.set_route("sticky", "hit")
    flow.usage = TokenUsage(input=10, cached=4, output=3, reasoning=1)
    flow.first_byte_at, flow.finished_at = flow.started_at + 0.0123, flow.started_at + 0.5
    line = access_line(access_fields(flow))
    assert line.startswith("POST /backend-api/codex/responses 200 account=acct1 route=sticky:hit model=gpt-5?FAKE")
    assert "tokens=in:10,cached:4,out:3,reasoning:1 ttfb_ms=12.3 duration_ms=500.0 attempts=0 error=-" in line
    assert "\n" not in line and clean("a" * 500).endswith("...")


def test_configure_rejects_options() -> None:
    with pytest.raises(ConfigError, match=r"\[plugins.log_stdout\]"):
        LogStdout().configure({"verbose": True}, Settings())


# -- over real sockets -----------------------------------------------------------------------------


async def test_access_line_per_request(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    options = {"firewall": {"allow": ["127.0.0.1/32"]}}
    async with proxy_server(tmp_path, pipeline=PIPELINE, plugin_options=options) as proxy:
        assert (await proxy.client.post("/backend-api/codex/responses", json=BODY)).status_code == 200
        assert (await proxy.client.post("/v1/responses", content=b"{bad")).status_code == 400
        assert (await proxy.client.get("/healthz")).status_code == 200
    access = lines(caplog, "codexlb.access")
    assert len(access) == 2, access
    assert access[0].startswith("POST /backend-api/codex/responses 200 account=acct")
    assert "route=round_robin:next model=gpt-5 tokens=in:" in access[0] and "attempts=1 error=-" in access[0]
    assert access[1].startswith("POST /v1/responses 400 account=- ") and "error=invalid_json" in access[1]
    record = next(r for r in caplog.records if r.name == "codexlb.access")
    assert record.access["status"] == 200 and record.access["tokens"]["output"] > 0  # type: ignore[attr-defined]
    assert PROMPT not in everything(caplog) and CACHE_KEY not in everything(caplog)
    assert not lines(caplog, "codexlb.request_shape") and not lines(caplog, "codexlb.request_payload")


async def test_refused_request_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    options = {"firewall": {"allow": ["10.0.0.0/8"]}}
    async with proxy_server(tmp_path, pipeline=PIPELINE, plugin_options=options) as proxy:
        assert (await proxy.client.post("/backend-api/codex/responses", json=BODY)).status_code == 403
    (line,) = lines(caplog, "codexlb.access")
    assert " 403 " in line and "error=ip_not_allowed" in line and "client=127.0.0.1" in line


@pytest.mark.parametrize("raw_key", [False, True])
async def test_shape_line(tmp_path: Path, caplog: pytest.LogCaptureFixture, raw_key: bool) -> None:
    caplog.set_level(logging.INFO)
    async with proxy_server(tmp_path, pipeline=PIPELINE, log_proxy_request_shape=True,
                            log_proxy_request_shape_raw_cache_key=raw_key) as proxy:
        r = await proxy.client.post("/backend-api/codex/responses", content=json.dumps(BODY),
                                    headers={"content-type": "application/json"})
        assert r.status_code == 200
    (line,) = lines(caplog, "codexlb.request_shape")
    shape = json.loads(line.removeprefix("request shape "))
    assert shape["model"] == "gpt-5" and shape["tool_count"] == 1 and shape["input_items"] == {"message": 1}
    assert shape["body_bytes"] == len(json.dumps(BODY))
    assert (CACHE_KEY in line) is raw_key
    assert PROMPT not in everything(caplog)


async def test_payload_line_is_redacted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    body = {**BODY, "client_metadata": {"api_key": "sk-client-metadata-key-1234567890"},
            "input": [*BODY["input"], {"type": "message", "role": "user", "content": [
                {"type": "input_image", "image_url": "data:image/png;base64," + "B" * 20000}]}]}
    async with proxy_server(tmp_path, pipeline=PIPELINE, log_proxy_request_payload=True) as proxy:
        assert (await proxy.client.post("/backend-api/codex/responses", json=body)).status_code == 200
    (line,) = lines(caplog, "codexlb.request_payload")
    assert PROMPT in line  # the payload flag logs content, on purpose
    assert "sk-client-metadata-key" not in line and REDACTED in line
    assert "B" * 100 not in line and "[20022 chars]" in line
