"""Process plumbing shared by the benchmarks: CPU pinning, the proxy subprocess, /proc readers."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from codexlb.settings import load_settings
from plugins import DEFAULT_PLUGINS

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def cpu_split() -> tuple[set[int] | None, set[int] | None]:
    """``(proxy cores, fake + client cores)``: one core for the proxy, the rest for everything else.

    ``(None, None)`` on a machine with a single usable core (nothing is pinned then).
    """
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None
    return {cores[-1]}, set(cores[:-1])


def pin(pid: int, cores: set[int] | None) -> None:
    if cores:
        os.sched_setaffinity(pid, cores)


def raise_fd_limit() -> None:
    """Allow thousands of sockets (children inherit the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def core_busy_seconds(cores: set[int] | None) -> float:
    """Non-idle time of ``cores`` (all processes), from ``/proc/stat``; 0 when not pinned."""
    if not cores:
        return 0.0
    busy = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
            numbers = [int(v) for v in values]
            busy += sum(numbers[:8]) - numbers[3] - numbers[4]  # minus idle and iowait
    return busy / CLK_TCK


def rss_kb(pid: int) -> int:
    """Resident set size in KB, from ``/proc/<pid>/statm``."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB


def available_plugins(wanted: Iterable[str] = DEFAULT_PLUGINS) -> list[str]:
    """The wanted built-in plugins whose module exists (others are being written right now)."""
    from plugins import BUILTIN

    out = []
    for name in wanted:
        target = BUILTIN.get(name)
        module = target.split(":")[0] if target else name.split(":")[0]
        if importlib.util.find_spec(module) is not None:
            out.append(name)
    return out


def machine() -> dict[str, str]:
    """CPU model, cores and Python version (for the results file)."""
    model = "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next((line.split(":", 1)[1].strip() for line in out.splitlines()
                      if line.startswith("Model name")), model)
    except OSError:
        pass
    root = Path(__file__).resolve().parent.parent
    git = ["git", "-C", str(root)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "codexlb", "plugins"], capture_output=True,
                           text=True).stdout.strip()
    return {"cpu": model, "cores": str(os.cpu_count()), "python": sys.version.split()[0],
            "commit": commit + ("+uncommitted changes in codexlb/ or plugins/" if dirty else "")}


async def import_accounts(root: Path, env: Mapping[str, str], accounts: list[dict[str, Any]]) -> None:
    """Store fake accounts (encrypted) in the proxy's database, as ``codexlb accounts import`` will."""
    from codexlb.accounts.storage import open_store

    async with open_store(load_settings(root, environ=env)) as store:
        for n, acct in enumerate(accounts, 1):
            await store.upsert(chatgpt_account_id=acct["chatgpt_account_id"], email=acct["email"],
                               plan_type=acct["plan_type"], access_token=acct["access_token"],
                               refresh_token=acct["refresh_token"], id_token=acct["id_token"],
                               label=f"acct{n}")


def proxy_env(root: Path, port: int, upstream: str, auth: str, plugins: Iterable[str]) -> dict[str, str]:
    """``CODEX_LB_*`` for a bench proxy: files under ``root``, no background fetches, quiet logs."""
    return {
        "CODEX_LB_SETTINGS_FILE": str(root / "settings.toml"),
        "CODEX_LB_HOST": "127.0.0.1", "CODEX_LB_PORT": str(port),
        "CODEX_LB_DATA_DIR": str(root / "data"),
        "CODEX_LB_DATABASE_URL": f"sqlite+aiosqlite:///{root / 'data' / 'store.db'}",
        "CODEX_LB_ENCRYPTION_KEY_FILE": str(root / "data" / "encryption.key"),
        "CODEX_LB_UPSTREAM_BASE_URL": upstream, "CODEX_LB_AUTH_BASE_URL": auth,
        "CODEX_LB_USAGE_REFRESH_ENABLED": "false", "CODEX_LB_MODEL_REGISTRY_ENABLED": "false",
        "CODEX_LB_LOG_LEVEL": "WARNING", "CODEX_LB_SHUTDOWN_GRACE_SECONDS": "2",
        "CODEX_LB_PIPELINE__PLUGINS": ",".join(plugins),
    }


@dataclass
class Child:
    """A subprocess we started (stopped by its pid only)."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    _log: TextIO

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def spawn(args: list[str], *, cwd: Path, log_path: Path, cores: set[int] | None,
          env: Mapping[str, str] | None = None) -> Child:
    """Start ``args`` pinned to ``cores`` (set before exec, so every thread inherits it)."""
    log = log_path.open("w")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_LB_")}
    full_env.update(env or {})
    full_env["PYTHONUNBUFFERED"] = "1"

    def pre() -> None:
        if cores:
            os.sched_setaffinity(0, cores)

    proc = subprocess.Popen(args, cwd=cwd, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=pre)
    return Child(proc, log_path, log)


def wait_http(url: str, child: Child, timeout: float = 30.0) -> None:
    """Poll ``url`` until it answers 200 (raises with the child's log if it exits or times out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise RuntimeError(f"process exited ({child.proc.returncode}):\n{child.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} not ready after {timeout}s:\n{child.tail()}")


async def start_proxy(root: Path, upstream: str, auth: str, accounts: list[dict[str, Any]],
                      plugins: Iterable[str], cores: set[int] | None,
                      extra_env: Mapping[str, str] | None = None, source: Path | None = None) -> tuple[Child, int]:
    """Import ``accounts`` and run ``codexlb serve`` (Hypercorn on uvloop) in ``root``; returns it and its port.

    ``source``: run the ``codexlb`` and ``plugins`` packages of that source tree instead of this one
    (put first on ``PYTHONPATH``), e.g. a checkout of the commit before a change.
    """
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    env = {**proxy_env(root, port, upstream, auth, plugins), **(extra_env or {})}
    if source is not None:
        env["PYTHONPATH"] = str(source.resolve())
    await import_accounts(root, env, accounts)
    child = spawn([sys.executable, "-m", "codexlb", "serve"], cwd=root, log_path=root / "proxy.log",
                  cores=cores, env=env)
    await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/healthz", child)
    return child, port


async def start_fast_fake(root: Path, accounts: int, cores: set[int] | None) -> tuple[Child, int, list[dict[str, Any]]]:
    """Run ``bench.fastfake`` in its own process; returns it, its port and its accounts."""
    info = root / "fake-accounts.json"
    child = spawn([sys.executable, "-m", "bench.fastfake", "--accounts", str(accounts), "--info", str(info)],
                  cwd=Path(__file__).resolve().parent.parent, log_path=root / "fake.log", cores=cores)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise RuntimeError(f"fake exited ({child.proc.returncode}):\n{child.tail()}")
        ready = [line for line in child.log_path.read_text().splitlines() if line.startswith("READY ")]
        if ready:
            return child, int(ready[0].split()[1]), json.loads(info.read_text())
        await asyncio.sleep(0.05)
    child.stop()
    raise RuntimeError(f"fake not ready:\n{child.tail()}")


async def start_floor(root: Path, upstream: str, accounts_file: Path, cores: set[int] | None,
                      module: str = "bench.floor_server") -> tuple[Child, int]:
    """Run a floor server (the engine, no pipeline: ``bench.floor_server`` or ``bench.bare_floor``)."""
    port = free_port()
    env = {"BENCH_UPSTREAM": upstream, "BENCH_PORT": str(port), "BENCH_ACCOUNTS": str(accounts_file)}
    child = spawn([sys.executable, "-m", module], cwd=Path(__file__).resolve().parent.parent,
                  log_path=root / f"{module.rsplit('.', 1)[-1]}.log", cores=cores, env=env)
    await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/healthz", child)
    return child, port


async def py_spy(pid: int, out: Path, secs: float, fmt: str = "raw") -> asyncio.subprocess.Process:
    """Start ``py-spy record`` on ``pid`` for ``secs`` (non-blocking sampling, 200 Hz); await ``.wait()``.

    Only the thread holding the GIL is sampled (``--gil``): a worker thread waiting on its queue is
    not CPU (code that releases the GIL, such as SQLite's own work, is not seen either).
    """
    spy = Path(sys.executable).with_name("py-spy")
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(spy), "record", "--pid", str(pid), "--duration", str(max(1, int(secs))), "--rate", "200",
           "--nonblocking", "--gil", "--format", fmt, "-o", str(out)]
    return await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
