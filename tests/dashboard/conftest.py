"""Fixtures for the dashboard tests: the proxy over real sockets with the request log on, sign-in helpers."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from codexlb.db.dashboard_auth import set_password
from codexlb.testing.harness import TEST_PLUGINS, ProxyHarness, proxy_server
from codexlb.testing.secrets import register_secret

PASSWORD = "correct horse battery"
PIPELINE = (*TEST_PLUGINS, "log_db")
KEYS_PIPELINE = ("firewall", "api_keys", *PIPELINE)
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
SECRET_RE = re.compile(r'<code class="secret" id="new-key">(sk-clb-[A-Za-z0-9_-]{43})</code>')
REMOTE = {"x-forwarded-for": "203.0.113.9"}
"""Makes a loopback test client look remote to the ``/api`` guard (as a browser elsewhere would)."""


@pytest.fixture
async def proxy(tmp_path: Path) -> AsyncIterator[ProxyHarness]:
    async with proxy_server(tmp_path, accounts=2, pipeline=PIPELINE) as harness:
        yield harness


@pytest.fixture
async def secured(proxy: ProxyHarness) -> ProxyHarness:
    """The proxy with a dashboard password set."""
    assert proxy.lb.sessionmaker is not None
    await set_password(proxy.lb.sessionmaker, PASSWORD)
    return proxy


@pytest.fixture
async def keyed(tmp_path: Path) -> AsyncIterator[ProxyHarness]:
    """The proxy with the api_keys plugin (keys synced by hand) and a dashboard password."""
    async with proxy_server(tmp_path, accounts=2, pipeline=KEYS_PIPELINE,
                            plugin_options={"api_keys": {"sync_interval_seconds": 300}}) as harness:
        assert harness.lb.sessionmaker is not None
        await set_password(harness.lb.sessionmaker, PASSWORD)
        yield harness


def secret_of(html: str) -> str:
    """The key a create or rotate page shows (registered, so the log checks look for it)."""
    found = SECRET_RE.search(html)
    assert found, "no key shown in the page"
    register_secret(found.group(1))
    return found.group(1)


async def key_sign_in(client: httpx.AsyncClient, key: str) -> httpx.Response:
    page = await client.get("/dashboard/my/login")
    assert page.status_code == 200, page.text[:300]
    return await client.post("/dashboard/my/login", data={"csrf_token": csrf_of(page.text), "api_key": key})


def csrf_of(html: str) -> str:
    found = CSRF_RE.search(html)
    assert found, "no CSRF field in the page"
    return found.group(1)


def browser(proxy: ProxyHarness, **kwargs: Any) -> httpx.AsyncClient:
    """A client of its own (own cookie jar), not following redirects."""
    return httpx.AsyncClient(base_url=proxy.url, timeout=30, **kwargs)


async def sign_in(client: httpx.AsyncClient, password: str = PASSWORD, **fields: str) -> httpx.Response:
    page = await client.get("/dashboard/login")
    assert page.status_code == 200, page.text[:300]
    return await client.post("/dashboard/login", data={"csrf_token": csrf_of(page.text), "password": password,
                                                       "next": "/dashboard/", **fields})


async def run_cli(data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """``codexlb`` in a subprocess against the test's data folder (the server keeps serving meanwhile)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_LB_")}
    env["CODEX_LB_DATA_DIR"] = str(data_dir)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "codexlb", *args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=env)
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), 60)
    assert process.returncode is not None
    return subprocess.CompletedProcess(args, process.returncode, out.decode(), err.decode())
