"""Real processes for the deployment tests: codexlb (serve or under Hypercorn) and nginx.

The shipped files (``deploy/hypercorn.toml``, ``deploy/nginx/codexlb.conf``) are rendered to free
loopback ports, never edited by hand here: only addresses, ports and the body limit change.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx
import pytest

from codexlb.accounts.storage import open_store
from codexlb.testing.fake_upstream import FakeUpstream
from codexlb.testing.harness import make_settings

ROOT = Path(__file__).resolve().parents[2]
NGINX_CONF = ROOT / "deploy" / "nginx" / "codexlb.conf"
HYPERCORN_TOML = ROOT / "deploy" / "hypercorn.toml"
DEFAULT_BODY_LIMIT = 33554432
BODY = {"model": "gpt-5.5", "instructions": "", "input": [{"type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "hi"}]}], "stream": True, "store": False}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def seed_accounts(tmp_path: Path, fake: FakeUpstream, n: int, **settings: object) -> None:
    async with open_store(make_settings(tmp_path, fake=fake, **settings)) as store:
        for i in range(n):
            a = fake.add_account()
            await store.upsert(chatgpt_account_id=a.chatgpt_account_id, email=a.email, plan_type=a.plan_type,
                               access_token=a.access_token, refresh_token=a.refresh_token, id_token=a.id_token,
                               label=f"acct{i + 1}")


def codexlb_env(tmp_path: Path, fake: FakeUpstream, port: int, plugins: Sequence[str], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_LB_")}
    env.update({
        "CODEX_LB_PORT": str(port), "CODEX_LB_DATA_DIR": str(tmp_path / "data"),
        "CODEX_LB_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'data' / 'store.db'}",
        "CODEX_LB_ENCRYPTION_KEY_FILE": str(tmp_path / "data" / "encryption.key"),
        "CODEX_LB_UPSTREAM_BASE_URL": fake.base_url, "CODEX_LB_AUTH_BASE_URL": fake.auth_base_url,
        "CODEX_LB_USAGE_REFRESH_ENABLED": "false", "CODEX_LB_MODEL_REGISTRY_ENABLED": "false",
        "CODEX_LB_PIPELINE__PLUGINS": json.dumps(list(plugins)),
    })
    env.update(extra)
    return env


async def start(args: Sequence[str], env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(*args, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)


async def wait_ready(proc: asyncio.subprocess.Process, url: str, timeout: float = 60) -> None:
    """Poll ``url`` (``/readyz``) until it answers 200; fail with the process output if it exits."""
    async with httpx.AsyncClient(timeout=5) as client:
        for _ in range(int(timeout * 20)):
            if proc.returncode is not None:
                out, err = await proc.communicate()
                pytest.fail(f"process exited {proc.returncode}: {out.decode()[-2000:]} {err.decode()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.05)
    pytest.fail(f"{url} never became ready")


async def stop(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    if proc.returncode is None:
        proc.send_signal(sig)
    try:
        return await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        proc.kill()
        return await proc.wait()


@contextlib.asynccontextmanager
async def running(args: Sequence[str], env: dict[str, str], cwd: Path, ready_url: str
                  ) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await start(args, env, cwd)
    try:
        await wait_ready(proc, ready_url)
        yield proc
    finally:
        await stop(proc)


def codexlb_serve(*extra: str) -> list[str]:
    return [sys.executable, "-m", "codexlb", "serve", *extra]


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if found is None:
        pytest.skip("nginx is not installed (.ci/run installs Debian's nginx-light)")
    return found


def render_nginx(tmp: Path, *, listen: int, upstream: int, body_limit: int = DEFAULT_BODY_LIMIT,
                 tls: tuple[Path, Path] | None = None, tls_port: int = 0) -> Path:
    """The shipped config on loopback ports (and a smaller body limit), inside a runnable nginx.conf."""
    conf = NGINX_CONF.read_text()
    replacements = [("server 127.0.0.1:2455;", f"server 127.0.0.1:{upstream};"),
                    ("    listen 80;\n", f"    listen 127.0.0.1:{listen};\n"),
                    ("    listen [::]:80;\n", "")]
    if body_limit != DEFAULT_BODY_LIMIT:
        replacements += [("client_max_body_size 32m;", f"client_max_body_size {body_limit};"),
                         (f"BYTES = {DEFAULT_BODY_LIMIT})", f"BYTES = {body_limit})")]
    if tls is not None:
        cert, key = tls
        replacements += [("    #tls listen 443 ssl http2;\n", f"    listen 127.0.0.1:{tls_port} ssl http2;\n"),
                         ("    #tls listen [::]:443 ssl http2;\n", ""),
                         ("#tls ssl_certificate     /etc/letsencrypt/live/codexlb.example.com/fullchain.pem;",
                          f"ssl_certificate {cert};"),
                         ("#tls ssl_certificate_key /etc/letsencrypt/live/codexlb.example.com/privkey.pem;",
                          f"ssl_certificate_key {key};"),
                         ("#tls ssl_protocols", "ssl_protocols"), ("#tls ssl_session_cache", "ssl_session_cache")]
    for old, new in replacements:
        assert old in conf, f"deploy/nginx/codexlb.conf no longer contains {old!r}"
        conf = conf.replace(old, new)
    (tmp / "conf.d").mkdir(parents=True, exist_ok=True)
    (tmp / "conf.d" / "codexlb.conf").write_text(conf)
    main = tmp / "nginx.conf"
    temp = {name: tmp / name for name in ("client_body", "proxy")}
    for path in temp.values():
        path.mkdir(exist_ok=True)
    main.write_text(f"""
user {getpass.getuser()};
worker_processes 1;
pid {tmp / 'nginx.pid'};
error_log {tmp / 'error.log'} info;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {temp['client_body']};
    proxy_temp_path {temp['proxy']};
    include {tmp / 'conf.d' / 'codexlb.conf'};
}}
""")
    return main


@contextlib.asynccontextmanager
async def nginx(tmp: Path, **render: object) -> AsyncIterator[asyncio.subprocess.Process]:
    """nginx in the foreground with the rendered config; stopped (QUIT, then KILL) afterwards."""
    binary = nginx_binary()
    tmp.mkdir(parents=True, exist_ok=True)
    conf = render_nginx(tmp, **render)  # type: ignore[arg-type]
    args = [binary, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf), "-g", "daemon off;"]
    check = await asyncio.create_subprocess_exec(*args[:-2], "-t", stdout=asyncio.subprocess.PIPE,
                                                 stderr=asyncio.subprocess.PIPE)
    _, err = await check.communicate()
    assert check.returncode == 0, err.decode()
    proc = await start(args, dict(os.environ), tmp)
    port = int(render["listen"])  # type: ignore[call-overload]
    try:
        for _ in range(200):
            if proc.returncode is not None:
                pytest.fail(f"nginx exited: {(tmp / 'error.log').read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            await asyncio.sleep(0.05)
        yield proc
    finally:
        await stop(proc, signal.SIGQUIT, timeout=10)
