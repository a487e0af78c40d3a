"""``codexlb serve`` as a real process: health, readiness, graceful SIGTERM with a stream in flight."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from codexlb.accounts.storage import open_store
from codexlb.testing.fake_upstream import FakeUpstream
from codexlb.testing.harness import make_settings

BODY = {"model": "gpt-5.5", "input": [{"type": "message", "role": "user",
                                       "content": [{"type": "input_text", "text": "hi"}]}],
        "stream": True, "store": False}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def seed_accounts(tmp_path: Path, fake: FakeUpstream, n: int) -> None:
    async with open_store(make_settings(tmp_path, fake=fake)) as store:
        for _ in range(n):
            a = fake.add_account()
            await store.upsert(chatgpt_account_id=a.chatgpt_account_id, email=a.email, plan_type=a.plan_type,
                               access_token=a.access_token, refresh_token=a.refresh_token, id_token=a.id_token)


def serve_env(tmp_path: Path, fake: FakeUpstream, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_LB_")}
    env.update({
        "CODEX_LB_PORT": str(port), "CODEX_LB_DATA_DIR": str(tmp_path / "data"),
        "CODEX_LB_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'data' / 'store.db'}",
        "CODEX_LB_ENCRYPTION_KEY_FILE": str(tmp_path / "data" / "encryption.key"),
        "CODEX_LB_UPSTREAM_BASE_URL": fake.base_url, "CODEX_LB_USAGE_REFRESH_ENABLED": "false",
        "CODEX_LB_MODEL_REGISTRY_ENABLED": "false", "CODEX_LB_SHUTDOWN_GRACE_SECONDS": "20",
        "CODEX_LB_PIPELINE__PLUGINS": json.dumps(["select_round_robin", "upstream"]),
    })
    env.update(extra)
    return env


async def start_server(tmp_path: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "codexlb", "serve", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    if b"listening on" not in line:
        proc.kill()
        _, err = await proc.communicate()
        pytest.fail(f"server did not start: {line!r} {err.decode()[-2000:]}")
    return proc


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(event_delay=0.05) as fake:
        yield fake


async def test_sigterm_lets_streams_finish(tmp_path: Path, fake: FakeUpstream) -> None:
    await seed_accounts(tmp_path, fake, 2)
    port = free_port()
    proc = await start_server(tmp_path, serve_env(tmp_path, fake, port))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            ready = await client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["ready"] is True
            async with client.stream("POST", "/backend-api/codex/responses", json=BODY) as response:
                chunks = []
                async for chunk in response.aiter_bytes():
                    if not chunks:
                        proc.send_signal(signal.SIGTERM)
                    chunks.append(chunk)
        body = b"".join(chunks)
        assert b"response.completed" in body and b"response.failed" not in body
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_refuses_open_non_loopback_bind(tmp_path: Path, fake: FakeUpstream) -> None:
    env = serve_env(tmp_path, fake, free_port(), CODEX_LB_HOST="0.0.0.0")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "codexlb", "serve", cwd=tmp_path, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert "refusing to listen on '0.0.0.0'" in err.decode()
    assert "CODEX_LB_ALLOW_UNRESTRICTED_BIND=true" in err.decode()


async def test_plugins_command_lists_hooks(tmp_path: Path, fake: FakeUpstream) -> None:
    env = serve_env(tmp_path, fake, 0)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "codexlb", "plugins", "--json", cwd=tmp_path,
                                                env=env, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    listed = json.loads(out)
    assert [p["name"] for p in listed] == ["select_round_robin", "upstream"]
    assert "send_upstream" in listed[1]["hooks"] and "select_account" in listed[0]["hooks"]


async def test_fake_upstream_command(tmp_path: Path) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "codexlb", "fake-upstream", "--port", str(port), "--accounts", "2",
        "--auth-dir", str(tmp_path / "auth"), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        first = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert f"http://127.0.0.1:{port}/backend-api".encode() in first
        auth_files = sorted((tmp_path / "auth").glob("*/auth.json"))
        for _ in range(100):
            if len(auth_files) == 2:
                break
            await asyncio.sleep(0.05)
            auth_files = sorted((tmp_path / "auth").glob("*/auth.json"))
        assert len(auth_files) == 2
        auth = json.loads(auth_files[0].read_text())
        headers = {"authorization": f"Bearer {auth['tokens']['access_token']}",
                   "chatgpt-account-id": auth["tokens"]["account_id"]}
        async with httpx.AsyncClient() as client:
            usage = await client.get(f"http://127.0.0.1:{port}/backend-api/wham/usage", headers=headers)
        assert usage.status_code == 200 and usage.json()["rate_limit"]["allowed"] is True
    finally:
        proc.terminate()
        await proc.wait()


async def test_a_connection_the_client_closes_is_closed_at_once(tmp_path: Path, fake: FakeUpstream) -> None:
    """An idle keep-alive connection ends when its client closes it, not 75 s later (keep_alive_timeout)."""
    port = free_port()
    proc = await start_server(tmp_path, serve_env(tmp_path, fake, port))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200") and b"connection: close" not in head.lower()
        lines = head.lower().split(b"\r\n")
        length = int(next(line.split(b":")[1] for line in lines if line.startswith(b"content-length")))
        await reader.readexactly(length)
        writer.write_eof()  # the client is done: the server must close its side now
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
    finally:
        proc.kill()
        await proc.wait()


def test_settle_heap_freezes_what_start_up_built_and_raises_the_first_threshold() -> None:
    import gc

    from codexlb.app import GC_THRESHOLDS, settle_heap

    before = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0 and gc.get_threshold() == GC_THRESHOLDS
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
