"""Several codexlb replicas on one PostgreSQL database behind a real nginx, for tests and ``bench/``.

    async with FakeUpstream() as fake, temp_postgres_database(base_url) as db, \\
            cluster(tmp_path, fake, db, replicas=3) as lb:
        await lb.seed_accounts(3)          # before or after start: replicas pick rows up within ~5 s
        r = await lb.client.post("/backend-api/codex/responses", json=BODY)
        r.headers["x-codexlb-replica"]     # which replica nginx picked (127.0.0.1:<port>)
        await lb.kill(1)                   # SIGKILL by PID; lb.start_replica(1) brings it back

Each replica is ``python -m codexlb serve`` on its own loopback port, all with the same database URL
and encryption key file; nginx runs the shipped ``deploy/nginx/codexlb.conf`` with one ``server``
line per replica (round robin). Only test plumbing is added around the shipped file: a response
header naming the replica that answered (``X-Codexlb-Replica``, from ``$upstream_addr``) and an
access log. Processes write their output to files under ``tmp`` (``replica-<i>.log``; a registered
secret in it fails the block) and are stopped by PID when the block ends, whatever happened inside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from codexlb.accounts.storage import open_store
from codexlb.testing.fake_upstream import FakeAccount, FakeUpstream
from codexlb.testing.harness import make_settings
from tests.deploy.procs import free_port, nginx_binary, render_nginx, stop
from tests.support.logleaks import find_leaks

PLUGINS = ("firewall", "decompress", "select_sticky", "select_least_used", "select_round_robin",
           "upstream", "sse_limit", "log_db")
REPLICA_HEADER = "x-codexlb-replica"
READY_TIMEOUT = 60.0


class ClusterError(RuntimeError):
    """A process of the cluster did not start (its output's tail is in the message)."""


@dataclass
class Replica:
    """One ``codexlb serve`` process (``proc`` is ``None`` while it is stopped)."""

    index: int
    port: int
    env: dict[str, str]
    log_path: Path
    proc: asyncio.subprocess.Process | None = None
    _log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        """How nginx names it in ``$upstream_addr`` (and the ``x-codexlb-replica`` header)."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def replica_env(fake: FakeUpstream, database_url: str, data: Path, port: int, plugins: Sequence[str],
                extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of one replica: shared database and key file, its own port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_LB_")}
    env.update({
        "CODEX_LB_HOST": "127.0.0.1", "CODEX_LB_PORT": str(port), "CODEX_LB_DATA_DIR": str(data),
        "CODEX_LB_DATABASE_URL": database_url,
        "CODEX_LB_ENCRYPTION_KEY_FILE": str(data / "encryption.key"),
        "CODEX_LB_UPSTREAM_BASE_URL": fake.base_url, "CODEX_LB_AUTH_BASE_URL": fake.auth_base_url,
        "CODEX_LB_USAGE_REFRESH_ENABLED": "false", "CODEX_LB_MODEL_REGISTRY_ENABLED": "false",
        "CODEX_LB_ROUTE_HEADERS": "true",
        "CODEX_LB_FIREWALL_TRUST_PROXY_HEADERS": "true", "CODEX_LB_FIREWALL_TRUSTED_PROXY_CIDRS": "127.0.0.1/32",
        "CODEX_LB_PIPELINE__PLUGINS": json.dumps(list(plugins)),
        "CODEX_LB_SHUTDOWN_GRACE_SECONDS": "2",
    })
    env.update(extra)
    return env


@dataclass
class Cluster:
    """The running replicas, nginx in front of them, and the fake upstream behind them."""

    tmp: Path
    fake: FakeUpstream
    database_url: str
    replicas: list[Replica]
    front: int
    client: httpx.AsyncClient
    nginx: asyncio.subprocess.Process | None = None
    accounts: list[FakeAccount] = field(default_factory=list)

    @property
    def url(self) -> str:
        """nginx's address: what clients use."""
        return f"http://127.0.0.1:{self.front}"

    def settings(self, **overrides: Any) -> Any:
        """In-process :class:`Settings` on the cluster's database and key (for seeding and reading)."""
        return make_settings(self.tmp, fake=self.fake, database_url=self.database_url,
                             encryption_key_file=str(self.tmp / "data" / "encryption.key"), **overrides)

    def replica_of(self, response: httpx.Response) -> Replica:
        """The replica that answered ``response`` (through nginx)."""
        address = response.headers[REPLICA_HEADER].split(",")[-1].strip()
        return next(r for r in self.replicas if r.address == address)

    async def seed_accounts(self, n: int, *, expired: bool = False, **add: Any) -> list[FakeAccount]:
        """Add ``n`` fake accounts upstream and store them (``expired``: access tokens already expired)."""
        added = [self.fake.add_account(**add) for _ in range(n)]
        if expired:
            for account in added:
                account.expire_access_token()
        await self.store_accounts(added)
        return added

    async def store_accounts(self, accounts: Sequence[FakeAccount]) -> None:
        """Store accounts the fake already has, labelled ``acct1``, ``acct2``, ... in order."""
        async with open_store(self.settings()) as store:
            for account in accounts:
                await store.upsert(chatgpt_account_id=account.chatgpt_account_id, email=account.email,
                                   plan_type=account.plan_type, access_token=account.access_token,
                                   refresh_token=account.refresh_token, id_token=account.id_token,
                                   label=f"acct{len(self.accounts) + 1}")
                self.accounts.append(account)

    async def start_replica(self, index: int) -> Replica:
        """Start replica ``index`` (again) and wait until its ``/readyz`` answers 200."""
        replica = self.replicas[index]
        if replica.pid is not None:
            return replica
        if replica._log is not None:
            replica._log.close()
        replica._log = replica.log_path.open("ab")
        replica.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "codexlb", "serve", cwd=self.tmp, env=replica.env,
            stdout=replica._log, stderr=asyncio.subprocess.STDOUT)
        await wait_ready(replica)
        return replica

    async def start_all(self) -> None:
        """Start every stopped replica at once (migrations take a lock: one migrates, the others wait)."""
        results = await asyncio.gather(*(self.start_replica(i) for i in range(len(self.replicas))),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def kill(self, index: int, sig: int = signal.SIGKILL, timeout: float = 30) -> int:
        """Signal replica ``index`` by PID and wait for it; returns its exit status."""
        replica = self.replicas[index]
        proc = replica.proc
        if proc is None:
            return 0
        try:
            return await stop(proc, sig, timeout)
        finally:
            replica.proc = None

    async def request_log(self) -> list[dict[str, Any]]:
        """Every request-log row in the database (oldest first)."""
        from sqlalchemy import select

        from codexlb.db.engine import make_engine, make_sessionmaker
        from codexlb.db.models import RequestLogRow

        engine = make_engine(self.settings())
        try:
            async with make_sessionmaker(engine)() as session:
                result = await session.execute(select(RequestLogRow.__table__).order_by(RequestLogRow.id))
                return [dict(r) for r in result.mappings()]
        finally:
            await engine.dispose()


async def wait_ready(replica: Replica, timeout: float = READY_TIMEOUT) -> None:
    """Poll the replica's ``/readyz`` until 200; :class:`ClusterError` with its output if it exits."""
    assert replica.proc is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient(timeout=5) as client:
        while loop.time() < deadline:
            if replica.proc.returncode is not None:
                raise ClusterError(f"replica {replica.index} exited {replica.proc.returncode}:\n"
                                   f"{replica.output()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"{replica.url}/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.05)
    raise ClusterError(f"replica {replica.index} not ready after {timeout:g} s:\n{replica.output()[-3000:]}")


def render_cluster_nginx(tmp: Path, listen: int, ports: Sequence[int]) -> Path:
    """The shipped config with one ``server`` line per replica, plus the replica header and access log."""
    conf = render_nginx(tmp, listen=listen, upstream=ports[0])
    site = tmp / "conf.d" / "codexlb.conf"
    text = site.read_text()
    first = f"    server 127.0.0.1:{ports[0]};\n"
    assert first in text
    site.write_text(text.replace(first, "".join(f"    server 127.0.0.1:{p};\n" for p in ports)))
    main = conf.read_text()
    extra = (f"    log_format replicas '$msec $status $upstream_addr $upstream_status $request_uri';\n"
             f"    access_log {tmp / 'access.log'} replicas;\n"
             f"    add_header X-Codexlb-Replica $upstream_addr always;\n")
    assert "    access_log off;\n" in main
    conf.write_text(main.replace("    access_log off;\n", extra))
    return conf


async def start_nginx(tmp: Path, listen: int, ports: Sequence[int]) -> asyncio.subprocess.Process:
    binary = nginx_binary()
    tmp.mkdir(parents=True, exist_ok=True)
    conf = render_cluster_nginx(tmp, listen, ports)
    args = [binary, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf)]
    check = await asyncio.create_subprocess_exec(*args, "-t", stdout=asyncio.subprocess.PIPE,
                                                 stderr=asyncio.subprocess.PIPE)
    _, err = await check.communicate()
    if check.returncode != 0:
        raise ClusterError(f"nginx -t failed: {err.decode()}")
    proc = await asyncio.create_subprocess_exec(*args, "-g", "daemon off;", cwd=tmp,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while loop.time() < deadline:
        if proc.returncode is not None:
            raise ClusterError(f"nginx exited: {(tmp / 'error.log').read_text()[-2000:]}")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", listen)
            writer.close()
            return proc
        await asyncio.sleep(0.05)
    raise ClusterError("nginx did not listen within 10 s")


@contextlib.asynccontextmanager
async def cluster(tmp: Path, fake: FakeUpstream, database_url: str, *, replicas: int = 3,
                  plugins: Sequence[str] = PLUGINS, env: Mapping[str, str] | None = None,
                  start: bool = True) -> AsyncIterator[Cluster]:
    """Start ``replicas`` codexlb processes on ``database_url`` and nginx in front; stop all by PID after.

    ``env`` adds or overrides ``CODEX_LB_*`` variables of every replica. With ``start=False`` the
    replicas are prepared (ports, environment) but not started: call :meth:`Cluster.start_replica`.
    """
    tmp.mkdir(parents=True, exist_ok=True)
    data = tmp / "data"
    data.mkdir(exist_ok=True)
    ports = [free_port() for _ in range(replicas)]
    members = [Replica(i, port, replica_env(fake, database_url, data, port, plugins, env or {}),
                       tmp / f"replica-{i}.log") for i, port in enumerate(ports)]
    front = free_port()
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{front}", timeout=60,
                               limits=httpx.Limits(max_connections=200))
    lb = Cluster(tmp, fake, database_url, members, front, client)
    try:
        if start:
            await lb.start_all()
        lb.nginx = await start_nginx(tmp / "nginx", front, ports)
        yield lb
        leaks = find_leaks("\n".join(r.output() for r in members))
        if leaks:
            raise ClusterError(f"secrets appeared in the replicas' output: {', '.join(leaks[:10])}")
    finally:
        await client.aclose()
        for i in range(replicas):
            await lb.kill(i, signal.SIGTERM, timeout=15)
        for replica in members:
            if replica._log is not None:
                replica._log.close()
        if lb.nginx is not None and lb.nginx.returncode is None:
            lb.nginx.send_signal(signal.SIGQUIT)
            try:
                await asyncio.wait_for(lb.nginx.wait(), 10)
            except TimeoutError:
                lb.nginx.kill()
                await lb.nginx.wait()


async def poll(condition: Callable[[], Awaitable[bool]], timeout: float, what: str, every: float = 0.2) -> None:
    """Wait until ``condition()`` is true; fail naming ``what`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        assert loop.time() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        await asyncio.sleep(every)
