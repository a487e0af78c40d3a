"""A real nginx with the shipped ``deploy/nginx/codexlb.conf`` in front of a real ``codexlb serve``."""

from __future__ import annotations

import asyncio
import gzip
import json
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from codexlb.testing.fake_upstream import FakeUpstream
from tests.deploy.procs import BODY, codexlb_env, codexlb_serve, free_port, nginx, running, seed_accounts, stop

PLUGINS = ("firewall", "decompress", "select_round_robin", "upstream", "metrics")
LIMIT = 65536
REQUEST_IDS = """
import logging

from codexlb import hookimpl


class RequestIds:
    @hookimpl
    async def flow_done(self, flow):
        logging.getLogger("codexlb.request_ids").warning("x-request-id=%s", flow.request.headers.get("x-request-id"))
"""


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(event_delay=0.1) as fake:  # 20 events: the upstream takes ~2 s per turn
        yield fake


async def test_a_streamed_turn_arrives_unbuffered(tmp_path: Path, fake: FakeUpstream) -> None:
    await seed_accounts(tmp_path, fake, 1)
    port, front = free_port(), free_port()
    (tmp_path / "request_ids.py").write_text(REQUEST_IDS)  # what codexlb receives (not sent upstream)
    env = codexlb_env(tmp_path, fake, port, (*PLUGINS, "request_ids:RequestIds"))
    async with running(codexlb_serve(), env, tmp_path, f"http://127.0.0.1:{port}/readyz") as proc, \
            nginx(tmp_path / "nginx", listen=front, upstream=port):
        account = next(iter(fake.accounts.values()))
        served_at_first_event: list[int] = []
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{front}", timeout=30) as client, \
                client.stream("POST", "/backend-api/codex/responses", json=BODY,
                              headers={"x-request-id": "req-abc-123"}) as response:
            assert response.status_code == 200
            body = b""
            async for chunk in response.aiter_bytes():
                if not served_at_first_event and b"data:" in chunk:
                    served_at_first_event.append(account.responses_served)
                body += chunk
        assert served_at_first_event == [0], "the first event arrived only after the upstream finished"
        assert b"response.completed" in body and account.responses_served == 1
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{front}", timeout=30) as client:
            assert (await client.post("/backend-api/codex/responses", json=BODY)).status_code == 200
        assert await stop(proc) == 0
    _, err = await proc.communicate()
    seen = [line.rsplit("x-request-id=", 1)[1] for line in err.decode().splitlines() if "x-request-id=" in line]
    assert len(seen) == 2 and seen[0] == "req-abc-123"  # the client's id travels on; without one, nginx makes one
    assert len(seen[1]) == 32 and seen[1] != seen[0]


async def test_client_ip_from_forwarded_for_and_allowlist(tmp_path: Path, fake: FakeUpstream) -> None:
    await seed_accounts(tmp_path, fake, 1)
    port, front = free_port(), free_port()
    env = codexlb_env(tmp_path, fake, port, PLUGINS, CODEX_LB_FIREWALL_TRUST_PROXY_HEADERS="true",
                      CODEX_LB_FIREWALL_TRUSTED_PROXY_CIDRS="127.0.0.1/32",
                      CODEX_LB_PLUGINS__FIREWALL__ALLOW='["127.0.0.2/32"]')

    def client_from(source: str) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(local_address=source)
        return httpx.AsyncClient(base_url=f"http://127.0.0.1:{front}", transport=transport, timeout=30)

    async with running(codexlb_serve(), env, tmp_path, f"http://127.0.0.1:{port}/readyz"), \
            nginx(tmp_path / "nginx", listen=front, upstream=port):
        async with client_from("127.0.0.2") as allowed:
            ok = await allowed.post("/backend-api/codex/responses", json=BODY)
            assert ok.status_code == 200 and b"response.completed" in ok.content
        async with client_from("127.0.0.3") as other:
            refused = await other.post("/backend-api/codex/responses", json=BODY)
            spoofed = await other.post("/backend-api/codex/responses", json=BODY,
                                       headers={"x-forwarded-for": "127.0.0.2"})
        for answer in (refused, spoofed):  # the address nginx saw, not one the client claims
            assert answer.status_code == 403
            assert answer.json()["error"]["code"] == "ip_not_allowed"
            assert "client address 127.0.0.3 " in answer.json()["error"]["message"]


async def test_admin_api_is_refused_through_nginx(tmp_path: Path, fake: FakeUpstream) -> None:
    port, front = free_port(), free_port()
    env = codexlb_env(tmp_path, fake, port, PLUGINS)
    async with running(codexlb_serve(), env, tmp_path, f"http://127.0.0.1:{port}/readyz"), \
            nginx(tmp_path / "nginx", listen=front, upstream=port):
        async with httpx.AsyncClient(timeout=30) as client:
            direct = await client.get(f"http://127.0.0.1:{port}/api/accounts")
            assert direct.status_code == 200  # the same request from this machine, not through nginx
            for path in ("/api/accounts", "/api", "/api/jobs"):
                refused = await client.get(f"http://127.0.0.1:{front}{path}")
                assert refused.status_code == 403, path
                assert refused.headers["content-type"] == "application/json"
                assert refused.json()["error"]["code"] == "admin_forbidden"
            assert (await client.get(f"http://127.0.0.1:{front}/healthz")).status_code == 200


async def test_an_oversized_body_gets_the_same_413_from_either_side(tmp_path: Path, fake: FakeUpstream) -> None:
    await seed_accounts(tmp_path, fake, 1)
    port, front = free_port(), free_port()
    env = codexlb_env(tmp_path, fake, port, PLUGINS, CODEX_LB_MAX_DECOMPRESSED_BODY_BYTES=str(LIMIT))
    big = json.dumps({**BODY, "instructions": "x" * LIMIT}).encode()
    bomb = gzip.compress(json.dumps({**BODY, "instructions": " " * (4 * LIMIT)}).encode())
    assert len(bomb) < LIMIT  # nginx lets it through; only codexlb sees how large it becomes
    headers = {"content-type": "application/json"}
    async with running(codexlb_serve(), env, tmp_path, f"http://127.0.0.1:{port}/readyz"), \
            nginx(tmp_path / "nginx", listen=front, upstream=port, body_limit=LIMIT):
        async with httpx.AsyncClient(timeout=30) as client:
            from_codexlb = await client.post(f"http://127.0.0.1:{port}/backend-api/codex/responses",
                                             content=big, headers=headers)
            from_nginx = await client.post(f"http://127.0.0.1:{front}/backend-api/codex/responses",
                                           content=big, headers=headers)
            inflated = await client.post(f"http://127.0.0.1:{front}/backend-api/codex/responses", content=bomb,
                                         headers={**headers, "content-encoding": "gzip"})
    assert from_codexlb.status_code == from_nginx.status_code == inflated.status_code == 413
    assert from_nginx.headers["content-type"] == "application/json"
    assert from_nginx.json() == from_codexlb.json()
    assert from_nginx.json()["error"]["code"] == "payload_too_large"
    expected = {k: from_codexlb.json()["error"][k] for k in ("type", "code")}
    assert {k: inflated.json()["error"][k] for k in ("type", "code")} == expected


async def test_sigterm_drains_streams_in_flight_through_nginx(tmp_path: Path, fake: FakeUpstream) -> None:
    await seed_accounts(tmp_path, fake, 2)
    port, front = free_port(), free_port()
    env = codexlb_env(tmp_path, fake, port, PLUGINS, CODEX_LB_SHUTDOWN_GRACE_SECONDS="20")
    async with running(codexlb_serve(), env, tmp_path, f"http://127.0.0.1:{port}/readyz") as proc, \
            nginx(tmp_path / "nginx", listen=front, upstream=port):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{front}", timeout=30) as client:

            async def turn(signal_first: bool) -> bytes:
                body = b""
                async with client.stream("POST", "/backend-api/codex/responses", json=BODY) as response:
                    assert response.status_code == 200
                    async for chunk in response.aiter_bytes():
                        if signal_first and not body:
                            proc.send_signal(signal.SIGTERM)
                        body += chunk
                return body

            bodies = await asyncio.gather(turn(True), turn(False))
            for body in bodies:
                assert b"response.completed" in body and b"response.failed" not in body
            assert await stop(proc) == 0
            after = await client.post("/backend-api/codex/responses", json=BODY)
            assert after.status_code == 502
            assert after.json()["error"]["code"] == "upstream_unavailable"


def test_tls_block_is_valid_when_enabled(tmp_path: Path) -> None:
    from tests.deploy.procs import nginx_binary, render_nginx

    binary = nginx_binary()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    conf = render_nginx(tmp_path, listen=free_port(), upstream=free_port(), tls=(cert, key), tls_port=free_port())
    check = subprocess.run([binary, "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf), "-t"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
