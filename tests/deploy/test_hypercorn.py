"""``codexlb.asgi:app`` under Hypercorn's own command line, ``serve --workers``, and JSON logs."""

from __future__ import annotations

import json
import os
import sys
import tomllib
from pathlib import Path

import httpx

from codexlb.settings import Settings
from codexlb.testing.fake_upstream import FakeUpstream
from tests.deploy.procs import (
    BODY,
    HYPERCORN_TOML,
    codexlb_env,
    codexlb_serve,
    free_port,
    running,
    seed_accounts,
    start,
    stop,
)
from tests.support.postgres import postgres_base_url, temp_postgres_database

PLUGINS = ("firewall", "select_round_robin", "upstream", "log_stdout", "metrics")


def render_toml(tmp_path: Path, port: int) -> Path:
    text = HYPERCORN_TOML.read_text()
    assert 'bind = ["127.0.0.1:2455"]' in text
    out = tmp_path / "hypercorn.toml"
    out.write_text(text.replace('bind = ["127.0.0.1:2455"]', f'bind = ["127.0.0.1:{port}"]'))
    return out


def test_shipped_toml_matches_the_settings() -> None:
    config = tomllib.loads(HYPERCORN_TOML.read_text())
    assert config["graceful_timeout"] == Settings.shutdown_grace_seconds
    assert config["worker_class"] == "uvloop" and config["workers"] == 0
    assert "accesslog" not in config and config["keep_alive_timeout"] > 60


async def test_hypercorn_serves_the_asgi_app(tmp_path: Path) -> None:
    async with FakeUpstream() as fake:
        await seed_accounts(tmp_path, fake, 1)
        port = free_port()
        env = codexlb_env(tmp_path, fake, port, PLUGINS)
        args = [sys.executable, "-m", "hypercorn", "--config", str(render_toml(tmp_path, port)), "codexlb.asgi:app"]
        async with running(args, env, tmp_path, f"http://127.0.0.1:{port}/readyz") as proc, \
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            answer = await client.post("/backend-api/codex/responses", json=BODY)
            assert answer.status_code == 200 and b"response.completed" in answer.content
            assert "codexlb_requests_total" in (await client.get("/metrics")).text
            assert await stop(proc) == 0
        _, err = await proc.communicate()
        assert "POST /backend-api/codex/responses 200" in err.decode()  # codexlb's access line, once
        assert err.decode().count("Running on http://127.0.0.1") == 1  # Hypercorn's lines, not twice


async def test_asgi_app_runs_the_bind_check(tmp_path: Path) -> None:
    async with FakeUpstream() as fake:
        port = free_port()
        env = codexlb_env(tmp_path, fake, port, PLUGINS, CODEX_LB_HOST="0.0.0.0")
        args = [sys.executable, "-m", "hypercorn", "--config", str(render_toml(tmp_path, port)), "codexlb.asgi:app"]
        proc = await start(args, env, tmp_path)
        _, err = await proc.communicate()
    assert proc.returncode == 2
    assert "refusing to listen on '0.0.0.0'" in err.decode()


async def test_workers_refused_on_sqlite(tmp_path: Path) -> None:
    async with FakeUpstream() as fake:
        proc = await start(codexlb_serve("--workers", "2"), codexlb_env(tmp_path, fake, free_port(), PLUGINS), tmp_path)
        _, err = await proc.communicate()
    assert proc.returncode == 2
    assert "--workers 2" in err.decode() and "PostgreSQL" in err.decode()
    assert not (tmp_path / "data" / "store.db").exists()  # refused before touching anything


async def test_workers_refuse_an_open_bind_once(tmp_path: Path) -> None:
    async with FakeUpstream() as fake, temp_postgres_database(postgres_base_url()) as url:
        env = codexlb_env(tmp_path, fake, free_port(), PLUGINS, CODEX_LB_DATABASE_URL=url, CODEX_LB_HOST="0.0.0.0")
        proc = await start(codexlb_serve("--workers", "2"), env, tmp_path)
        out, err = await proc.communicate()
    assert proc.returncode == 2
    assert err.decode().count("refusing to listen on '0.0.0.0'") == 1 and b"listening on" not in out


def worker_processes(parent: int) -> list[int]:
    """Children of ``parent`` that are multiprocessing workers (not the resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and "spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


async def test_workers_on_postgresql(tmp_path: Path) -> None:
    async with FakeUpstream() as fake, temp_postgres_database(postgres_base_url()) as url:
        await seed_accounts(tmp_path, fake, 2, database_url=url)
        port = free_port()
        env = codexlb_env(tmp_path, fake, port, PLUGINS, CODEX_LB_DATABASE_URL=url)
        async with running(codexlb_serve("--workers", "2"), env, tmp_path,
                           f"http://127.0.0.1:{port}/readyz") as proc:
            assert len(worker_processes(proc.pid)) == 2
            for _ in range(4):  # a new connection each time: any worker may take it
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                    answer = await client.post("/backend-api/codex/responses", json=BODY)
                    assert answer.status_code == 200 and b"response.completed" in answer.content
            assert await stop(proc) == 0
            assert worker_processes(proc.pid) == []


async def test_json_log_lines_keep_secrets_out(tmp_path: Path) -> None:
    secret = "sk-" + "Z" * 40
    async with FakeUpstream() as fake:
        await seed_accounts(tmp_path, fake, 1)
        port = free_port()
        env = codexlb_env(tmp_path, fake, port, PLUGINS, CODEX_LB_LOG_FORMAT="json",
                          CODEX_LB_LOG_PROXY_REQUEST_PAYLOAD="true", CODEX_LB_API_KEYS=secret)
        async with running(codexlb_serve(), env, tmp_path, f"http://127.0.0.1:{port}/readyz") as proc, \
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            answer = await client.post("/backend-api/codex/responses", json={**BODY, "api_key": secret},
                                       headers={"authorization": f"Bearer {secret}"})
            assert answer.status_code == 200
            assert await stop(proc) == 0
        _, err = await proc.communicate()
    text = err.decode()
    assert secret not in text
    records = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line is one object
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    access = [r for r in records if r["logger"] == "codexlb.access"]
    assert len(access) == 1 and access[0]["flow"]["status"] == 200
    assert access[0]["flow"]["path"] == "/backend-api/codex/responses"
    payload = [r for r in records if r["logger"] == "codexlb.request_payload"]
    assert payload and "[REDACTED]" in payload[0]["message"]
    assert os.environ.get("CODEX_LB_LOG_FORMAT") is None
