"""Real processes for the reliability tests: ``codexlb fake-upstream`` and ``codexlb serve``.

Each runs as ``sys.executable -m codexlb ...`` in its own folder, with its output in a log file
that failures show. Only the processes started here are stopped, by their own handle.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Proc:
    """A child process and its log."""

    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def kill9(self) -> None:
        self.popen.kill()
        self.popen.wait()


def spawn(args: list[str], cwd: Path, log: Path, env: Mapping[str, str] | None = None) -> Proc:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_LB_")}
    full_env.update(env or {})
    full_env["PYTHONUNBUFFERED"] = "1"
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full_env.get("PYTHONPATH")]))
    with log.open("wb") as out:
        popen = subprocess.Popen([sys.executable, "-m", "codexlb", *args], cwd=cwd, env=full_env, stdout=out,
                                 stderr=subprocess.STDOUT)
    return Proc(popen, log)


@dataclass
class FakeProc(Proc):
    """``codexlb fake-upstream`` with its URLs (from its ``--info`` file)."""

    info: dict[str, Any] | None = None

    @property
    def base_url(self) -> str:
        assert self.info is not None
        return str(self.info["upstream_base_url"])

    @property
    def auth_base_url(self) -> str:
        assert self.info is not None
        return str(self.info["auth_base_url"])

    @property
    def control_url(self) -> str:
        assert self.info is not None
        return str(self.info["control_url"])


def start_fake(folder: Path, *args: str, timeout: float = 60) -> FakeProc:
    """Run the fake on a free port and wait for its READY line."""
    folder.mkdir(parents=True, exist_ok=True)
    info = folder / "fake-info.json"
    child = spawn(["fake-upstream", "--port", "0", "--info", str(info), *args], folder, folder / "fake.log")
    fake = FakeProc(child.popen, child.log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fake.popen.poll() is not None:
            raise RuntimeError(f"fake-upstream exited ({fake.popen.returncode}):\n{fake.tail()}")
        if "READY" in fake.log.read_text(errors="replace"):
            fake.info = json.loads(info.read_text())
            return fake
        time.sleep(0.05)
    fake.stop()
    raise RuntimeError(f"fake-upstream not ready:\n{fake.tail()}")


def proxy_env(folder: Path, fake: FakeProc, port: int, **settings: Any) -> dict[str, str]:
    """``CODEX_LB_*`` for a proxy in ``folder`` pointed at ``fake``; ``settings`` override (lower-case names)."""
    values: dict[str, Any] = {
        "settings_file": folder / "settings.toml", "host": "127.0.0.1", "port": port,
        "data_dir": folder / "data", "database_url": f"sqlite+aiosqlite:///{folder / 'data' / 'store.db'}",
        "encryption_key_file": folder / "data" / "encryption.key",
        "upstream_base_url": fake.base_url, "auth_base_url": fake.auth_base_url,
        "usage_refresh_enabled": "false", "model_registry_enabled": "false", "log_level": "WARNING",
        "shutdown_grace_seconds": 1,
    }
    values.update(settings)
    return {f"CODEX_LB_{k.upper()}": str(v) for k, v in values.items()}


def start_proxy(folder: Path, fake: FakeProc, *, port: int | None = None, timeout: float = 60,
                **settings: Any) -> tuple[Proc, str]:
    """Run ``codexlb serve`` and wait until ``/healthz`` answers; returns it and its base URL."""
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    child = spawn(["serve"], folder, folder / f"proxy-{port}.log", proxy_env(folder, fake, port, **settings))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.popen.poll() is not None:
            raise RuntimeError(f"codexlb serve exited ({child.popen.returncode}):\n{child.tail()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return child, url
        except httpx.TransportError:
            time.sleep(0.05)
    child.stop()
    raise RuntimeError(f"codexlb serve not ready:\n{child.tail()}")


async def provision(client: httpx.AsyncClient, fake: FakeProc, count: int = 2) -> list[dict[str, Any]]:
    """New accounts on the fake, imported into the proxy through its API; returns the proxy's summaries."""
    made = await client.post(f"{fake.control_url}accounts", json={"count": count})
    assert made.status_code == 201, made.text
    imported = await client.post("/api/accounts/import", json=[a["auth_json"] for a in made.json()])
    assert imported.status_code == 200, imported.text
    return list(imported.json()["data"])
