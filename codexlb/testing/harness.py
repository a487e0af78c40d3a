"""Run the whole proxy over real sockets for tests: fake upstream + codexlb under Hypercorn.

    async with proxy_server(tmp_path, accounts=2) as proxy:
        r = await proxy.client.post("/v1/responses", json={...})

``proxy.url`` is the proxy's base URL, ``proxy.fake`` the :class:`FakeUpstream`,
``proxy.lb`` the running :class:`codexlb.app.CodexLB`, ``proxy.accounts`` the fake accounts
that were imported into the pool (in order). ``await proxy.settle()`` waits for the background
work of the answers received so far (``flow_done``, the request log, the pool's state).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from codexlb.app import CodexLB, create_app, lb_of
from codexlb.settings import Settings, load_settings
from codexlb.testing.fake_upstream import FakeUpstream

TEST_PLUGINS = ("select_sticky", "select_least_used", "select_round_robin", "upstream", "sse_limit")


def make_settings(tmp_path: Path, *, fake: FakeUpstream | None = None, **overrides: Any) -> Settings:
    """Settings for a test: files under ``tmp_path``, upstream and auth pointed at ``fake``."""
    base = load_settings(tmp_path, environ={})
    values: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'data' / 'store.db'}",
        "encryption_key_file": str(tmp_path / "data" / "encryption.key"),
        "usage_refresh_enabled": False, "model_registry_enabled": False,
        "port": 0, "route_headers": True,
    }
    if fake is not None:
        values.update(upstream_base_url=fake.base_url, auth_base_url=fake.auth_base_url)
    values.update(overrides)
    if isinstance(values.get("pipeline_plugins"), list):
        values["pipeline_plugins"] = tuple(values["pipeline_plugins"])
    return dataclasses.replace(base, **values)


@dataclass
class ProxyHarness:
    url: str
    fake: FakeUpstream
    lb: CodexLB
    client: httpx.AsyncClient
    accounts: list[Any] = field(default_factory=list)

    async def settle(self) -> None:
        """Wait until the background work of every answer received so far is done.

        Every ``flow_done`` has run (they run after the last byte, in the finisher's task), the rows
        ``log_db`` buffered are in the database, and changed account state is stored.
        """
        quart = self.lb.quart
        assert quart is not None
        while quart.background_tasks:  # tasks finishing now may have added more
            await asyncio.gather(*quart.background_tasks, return_exceptions=True)
        await self.lb.finisher.settle()
        log_db = self.lb.pm.get_plugin("log_db")
        if log_db is not None:
            await log_db.flush()
        if self.lb.store is not None:
            await self.lb.pool.flush(self.lb.store)


async def import_fake_accounts(lb: CodexLB, fake_accounts: Iterable[Any]) -> None:
    """Store the fake's accounts (encrypted) and put them in the running pool."""
    assert lb.store is not None
    for n, account in enumerate(fake_accounts, 1):
        row, _ = await lb.store.upsert(
            chatgpt_account_id=account.chatgpt_account_id, email=account.email, plan_type=account.plan_type,
            access_token=account.access_token, refresh_token=account.refresh_token,
            id_token=account.id_token, label=f"acct{n}")
        lb.pool.put(row)


async def serve_app(app: Any, sock: socket.socket, shutdown: asyncio.Event) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.graceful_timeout = 2.0
    config.accesslog = None
    config.websocket_max_message_size = 2 * app.codexlb.settings.websocket_max_message_bytes
    await serve(app, config, shutdown_trigger=shutdown.wait)


@contextlib.asynccontextmanager
async def proxy_server(tmp_path: Path, *, accounts: int = 2, fake: FakeUpstream | None = None,
                       plugins: Iterable[object] = (), pipeline: Iterable[str] | None = TEST_PLUGINS,
                       **overrides: Any) -> AsyncIterator[ProxyHarness]:
    """Start a fake upstream (unless given), the proxy under Hypercorn, and ``accounts`` accounts."""
    async with contextlib.AsyncExitStack() as stack:
        if fake is None:
            fake = await stack.enter_async_context(FakeUpstream())
        if pipeline is not None:
            overrides.setdefault("pipeline_plugins", tuple(pipeline))
        settings = make_settings(tmp_path, fake=fake, **overrides)
        app = create_app(settings, plugins=plugins)
        lb = lb_of(app)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.set_inheritable(True)
        port = sock.getsockname()[1]
        await lb.start()
        fake_accounts = [fake.add_account() for _ in range(accounts)]
        await import_fake_accounts(lb, fake_accounts)
        shutdown = asyncio.Event()
        server = asyncio.ensure_future(serve_app(app, sock, shutdown))
        url = f"http://127.0.0.1:{port}"
        client = await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=30))
        try:
            await _wait_ready(client, server)
            yield ProxyHarness(url, fake, lb, client, fake_accounts)
        finally:
            lb.websockets.drain()
            shutdown.set()
            await server
            with contextlib.suppress(OSError):
                sock.close()


async def _wait_ready(client: httpx.AsyncClient, server: asyncio.Future[None]) -> None:
    for _ in range(500):
        if server.done():
            server.result()
        try:
            if (await client.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            await asyncio.sleep(0.01)
    raise RuntimeError("proxy did not start")
