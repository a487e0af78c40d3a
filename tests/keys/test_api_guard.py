"""``/api/keys`` (registered by the api_keys plugin) is behind the same admin guard as all of ``/api``.

Raw requests over a real socket: a foreign ``Host`` (DNS rebinding), a cross-origin page, a
form-encoded "simple" request and a forwarded client are refused, and none of them creates a key.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codexlb.testing.harness import proxy_server
from codexlb.testing.secrets import register_secret
from tests.accounts.test_admin_guard import raw_request
from tests.keys.conftest import PIPELINE

CREATE = json.dumps({"name": "sneaky"}).encode()


@pytest.mark.parametrize(("extra", "status", "code"), [
    ([("Host", "evil.example"), ("Content-Type", "application/json")], 403, "host_not_allowed"),
    ([("Origin", "http://evil.example"), ("Content-Type", "application/json")], 403, "cross_origin"),
    ([("Sec-Fetch-Site", "cross-site"), ("Content-Type", "application/json")], 403, "cross_origin"),
    ([("Content-Type", "text/plain")], 415, "unsupported_media_type"),
    ([("X-Forwarded-For", "203.0.113.9"), ("Content-Type", "application/json")], 403, "forbidden"),
])
async def test_refused_requests_create_no_key(tmp_path: Path, extra: list[tuple[str, str]], status: int,
                                              code: str) -> None:
    async with proxy_server(tmp_path, accounts=1, pipeline=PIPELINE) as proxy:
        port = int(proxy.url.rsplit(":", 1)[1])
        headers = extra if any(name == "Host" for name, _ in extra) else [("Host", f"127.0.0.1:{port}"), *extra]
        for method, path, body in (("POST", "/api/keys", CREATE), ("GET", "/api/keys", b""),
                                   ("GET", "/api/keys/usage", b""), ("POST", "/api/keys/sneaky/rotate", b"{}")):
            if method == "GET" and code == "unsupported_media_type":
                continue  # a GET carries no body: the content type does not matter
            answer = await raw_request(port, method, path, headers, body)
            assert answer.status == status, (method, path, answer.body)
            assert answer.json()["error"]["code"] == code
        same_origin = [("Host", f"127.0.0.1:{port}"), ("Origin", f"http://127.0.0.1:{port}"),
                       ("Content-Type", "application/json")]
        listed = await raw_request(port, "GET", "/api/keys", same_origin)
        assert listed.status == 200 and listed.json()["data"] == []  # nothing was created
        created = await raw_request(port, "POST", "/api/keys", same_origin, CREATE)
        assert created.status == 201, created.body
        register_secret(created.json()["key"])
