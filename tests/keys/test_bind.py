"""A non-loopback bind and the keys stored in the database, with real ``codexlb`` processes.

The bind check runs before the database is open, so with neither an allowlist nor
``CODEX_LB_API_KEYS`` the verdict waits for the stored keys: counted right after the database is
opened, before the port serves anything.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from codexlb.testing.fake_upstream import FakeUpstream
from tests.core.test_bind import first_line_of_serve
from tests.deploy.procs import codexlb_env, codexlb_serve, free_port, running, start, stop
from tests.keys.test_cli import cli, env_of
from tests.support.postgres import postgres_base_url, temp_postgres_database

OPEN = ("serve", "--host", "0.0.0.0", "--port", "0")
ROUTING = ["firewall", "select_round_robin", "upstream"]


def serve_until_listening(tmp_path: Path, host: str = "0.0.0.0", **env: str) -> tuple[str, str]:
    """Start ``codexlb serve --host HOST``; its first stdout line and stderr once stopped."""
    return first_line_of_serve(tmp_path, ("--host", host, "--port", "0"), env_of(tmp_path, **env))


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_no_stored_key_refuses_the_open_bind(tmp_path: Path) -> None:
    fresh = cli(tmp_path, *OPEN)  # no database yet: refused before one is created
    assert fresh.returncode == 2, fresh.stderr
    assert "refusing to listen on '0.0.0.0'" in one_line(fresh.stderr) and "none exists yet" in fresh.stderr
    assert not (tmp_path / "data" / "store.db").exists()
    assert cli(tmp_path, "db", "upgrade").returncode == 0
    empty = cli(tmp_path, *OPEN)  # a database without keys: counted after it is opened
    assert empty.returncode == 2 and "Traceback" not in empty.stderr, empty.stderr
    assert "none exists yet" in one_line(empty.stderr) and "CODEX_LB_ALLOW_UNRESTRICTED_BIND" in empty.stderr


def test_a_stored_key_lets_the_open_bind_start(tmp_path: Path) -> None:
    created = cli(tmp_path, "keys", "create", "team", "--json")
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)["key"]
    line, err = serve_until_listening(tmp_path)
    assert "listening on http://0.0.0.0" in line, err
    assert "NOT ENFORCED" not in err and key not in err
    revoked = cli(tmp_path, "keys", "revoke", "team")  # a revoked key still makes keys required
    assert revoked.returncode == 0, revoked.stderr
    line, err = serve_until_listening(tmp_path)
    assert "listening on http://0.0.0.0" in line, err


def test_stored_keys_nobody_checks_refuse_the_open_bind(tmp_path: Path) -> None:
    assert cli(tmp_path, "keys", "create", "team").returncode == 0
    plugins = {"CODEX_LB_PIPELINE__PLUGINS": json.dumps(ROUTING)}
    done = cli(tmp_path, *OPEN, **plugins)  # nothing enforces admission: refused before the database is read
    assert done.returncode == 2, done.stderr
    assert "refusing to listen on '0.0.0.0'" in one_line(done.stderr) and "api_keys plugin enabled" in done.stderr
    line, err = serve_until_listening(tmp_path, "127.0.0.1", **plugins)  # loopback: a warning
    assert "listening on http://127.0.0.1" in line, err
    assert "NOT ENFORCED" in err and "the database holds 1 client API key(s)" in err


def test_check_config_says_it_cannot_see_stored_keys(tmp_path: Path) -> None:
    fresh = cli(tmp_path, "check-config", "--json", CODEX_LB_HOST="0.0.0.0")  # no database: no key, as serve says
    assert fresh.returncode == 2 and "none exists yet" in fresh.stderr, fresh.stderr
    assert cli(tmp_path, "db", "upgrade").returncode == 0
    done = cli(tmp_path, "check-config", "--json", CODEX_LB_HOST="0.0.0.0")
    assert done.returncode == 0, done.stderr
    notes = json.loads(done.stdout)["notes"]
    assert len(notes) == 1 and "check-config does not read the database" in notes[0]
    assert "codexlb: note: " in one_line(done.stderr) and "allowed only if the database holds client API keys" \
        in done.stderr
    static = cli(tmp_path, "check-config", "--json", CODEX_LB_HOST="0.0.0.0", CODEX_LB_API_KEYS="sk-static-1")
    assert static.returncode == 0 and json.loads(static.stdout)["notes"] == [], static.stderr


async def test_workers_parent_counts_the_stored_keys(tmp_path: Path) -> None:
    """``serve --workers``: Hypercorn's parent exits 0 whatever its workers do, so it counts the keys itself."""
    plugins = ("firewall", "api_keys", "select_round_robin", "upstream")
    async with FakeUpstream() as fake, temp_postgres_database(postgres_base_url()) as url:
        port = free_port()
        env = codexlb_env(tmp_path, fake, port, plugins, CODEX_LB_DATABASE_URL=url, CODEX_LB_HOST="0.0.0.0")
        refused = await start(codexlb_serve("--workers", "2"), env, tmp_path)
        out, err = await refused.communicate()
        assert refused.returncode == 2 and b"listening on" not in out, err
        assert "none exists yet" in one_line(err.decode())
        made = await asyncio.to_thread(cli, tmp_path, "keys", "create", "team", CODEX_LB_DATABASE_URL=url)
        assert made.returncode == 0, made.stderr
        async with running(codexlb_serve("--workers", "2"), env, tmp_path, f"http://127.0.0.1:{port}/readyz") as proc:
            assert await stop(proc) == 0
