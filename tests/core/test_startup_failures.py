"""``codexlb serve`` refuses to start, with the exit status and message of each failure mode."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import sys
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

from codexlb.db.crypto import key_mismatch_message, key_missing_message, key_unreadable_message
from codexlb.db.migrate import behind_message, head_revision
from codexlb.testing.fake_upstream import FakeUpstream
from tests.core.test_serve import free_port, seed_accounts, serve_env, start_server


async def run_serve(tmp_path: Path, env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "codexlb", "serve", cwd=tmp_path, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert b"listening on" not in out
    return proc.returncode or 0, err.decode()


def one_line(text: str) -> str:
    return " ".join(text.split())


async def test_missing_key_with_encrypted_data_exits_2(tmp_path: Path) -> None:
    async with FakeUpstream() as fake:
        await seed_accounts(tmp_path, fake, 1)
        key = tmp_path / "data" / "encryption.key"
        key.unlink()
        code, err = await run_serve(tmp_path, serve_env(tmp_path, fake, free_port()))
    assert code == 2
    assert one_line(key_missing_message(str(key))) in one_line(err)
    assert not key.exists()  # never a replacement


async def test_wrong_key_exits_2_and_leaves_the_data(tmp_path: Path) -> None:
    async with FakeUpstream() as fake:
        await seed_accounts(tmp_path, fake, 1)
        key = tmp_path / "data" / "encryption.key"
        db = tmp_path / "data" / "store.db"
        before = sqlite3.connect(db).execute("SELECT access_token_enc FROM accounts").fetchall()
        key.write_bytes(Fernet.generate_key())
        code, err = await run_serve(tmp_path, serve_env(tmp_path, fake, free_port()))
        after = sqlite3.connect(db).execute("SELECT access_token_enc FROM accounts").fetchall()
    assert code == 2
    assert one_line(key_mismatch_message(str(key))) in one_line(err)
    assert before == after


async def test_directory_at_key_path_exits_2_with_one_line(tmp_path: Path) -> None:
    key = tmp_path / "data" / "encryption.key"
    key.mkdir(parents=True)
    async with FakeUpstream() as fake:
        code, err = await run_serve(tmp_path, serve_env(tmp_path, fake, free_port()))
    assert code == 2
    assert err.strip().splitlines()[-1] == f"codexlb: {key_unreadable_message(key, IsADirectoryError())}", err
    assert "is a directory, not a file" in err and "Traceback" not in err
    assert key.is_dir()


async def test_database_behind_without_migrate_on_startup_exits_2(tmp_path: Path) -> None:
    async with FakeUpstream() as fake:
        env = serve_env(tmp_path, fake, free_port(), CODEX_LB_DATABASE_MIGRATE_ON_STARTUP="false")
        code, err = await run_serve(tmp_path, env)
    assert code == 2
    assert one_line(behind_message(None, head_revision())) in one_line(err)


async def test_port_in_use_is_one_line_and_touches_nothing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with FakeUpstream() as fake:
            code, err = await run_serve(tmp_path, serve_env(tmp_path, fake, port))
    assert code == 1
    assert err.strip().splitlines() == [f"codexlb: cannot listen on 127.0.0.1:{port}: Address already in use"], err
    assert not (tmp_path / "data" / "store.db").exists()  # refused before the database was opened


async def test_unreachable_postgres_is_one_line_with_the_password_masked(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there any more
    url = f"postgresql+asyncpg://codexlb:s3cret-pw@127.0.0.1:{closed}/codexlb"
    async with FakeUpstream() as fake:
        code, err = await run_serve(tmp_path, serve_env(tmp_path, fake, free_port(), CODEX_LB_DATABASE_URL=url))
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"codexlb: cannot connect to the database "
                               f"postgresql+asyncpg://codexlb:***@127.0.0.1:{closed}/codexlb: "), err
    assert "s3cret-pw" not in err


async def test_listening_is_printed_once_the_port_accepts(tmp_path: Path) -> None:
    async with FakeUpstream() as fake:
        env = serve_env(tmp_path, fake, 0)  # port 0: the line names the port really bound
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "codexlb", "serve", cwd=tmp_path, env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            assert line.startswith("codexlb listening on http://127.0.0.1:"), line
            port = int(line.split("http://127.0.0.1:")[1].split()[0])
            assert port != 0
            with socket.create_connection(("127.0.0.1", port), timeout=5):  # no retry: it must accept now
                pass
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                assert (await client.get("/healthz")).status_code == 200
        finally:
            proc.terminate()
            await proc.wait()


def break_database(tmp_path: Path) -> None:
    """An SQLite file whose first migration must fail: a table it creates already exists."""
    (tmp_path / "data").mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(tmp_path / "data" / "store.db") as conn:
        conn.execute("CREATE TABLE meta (x INTEGER)")


async def test_failing_migration_exits_1(tmp_path: Path) -> None:
    break_database(tmp_path)
    async with FakeUpstream() as fake:
        code, err = await run_serve(tmp_path, serve_env(tmp_path, fake, free_port()))
    assert code == 1
    assert f"database migration from revision none (empty database) to {head_revision()} failed" in err


async def test_failing_migration_without_fail_fast_serves_and_readyz_reports_it(tmp_path: Path) -> None:
    break_database(tmp_path)
    async with FakeUpstream() as fake:
        port = free_port()
        env = serve_env(tmp_path, fake, port, CODEX_LB_DATABASE_MIGRATIONS_FAIL_FAST="false")
        proc = await start_server(tmp_path, env)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                assert (await client.get("/healthz")).status_code == 200
                ready = await client.get("/readyz")
                proxied = await client.post("/v1/responses", json={"model": "gpt-5.5", "input": "hi"})
            assert proxied.status_code == 503 and proxied.json()["error"]["code"] == "database_not_ready"
            assert ready.status_code == 503
            assert "failed" in ready.json()["migrations"] and ready.json()["ready"] is False
        finally:
            proc.terminate()
            await proc.wait()
