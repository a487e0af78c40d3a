"""Where the data files go and who may read them, checked on real ``codexlb`` processes.

``CODEX_LB_DATA_DIR`` moves the database, the key file (and so the backups) unless they are set on
their own; the database and its ``-wal``/``-shm`` files are 0600 like the key, whatever the umask.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx

from codexlb.settings import load_settings
from codexlb.testing.fake_upstream import FakeUpstream
from tests.core.test_serve import free_port, serve_env


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def home_env(tmp_path: Path, fake: FakeUpstream, port: int) -> dict[str, str]:
    """The serve environment with HOME in ``tmp_path`` and only DATA_DIR naming where files go."""
    env = serve_env(tmp_path, fake, port)
    del env["CODEX_LB_DATABASE_URL"], env["CODEX_LB_ENCRYPTION_KEY_FILE"]
    env.update(HOME=str(tmp_path / "home"), CODEX_LB_DATA_DIR=str(tmp_path / "dd"))
    (tmp_path / "home").mkdir()
    return env


async def test_data_dir_holds_database_and_key_with_private_modes(tmp_path: Path) -> None:
    data = tmp_path / "dd"
    async with FakeUpstream() as fake:
        port = free_port()
        env = home_env(tmp_path, fake, port)
        upgrade = subprocess.run([sys.executable, "-m", "codexlb", "db", "upgrade"], cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=60, umask=0o022)
        assert upgrade.returncode == 0, upgrade.stderr
        assert mode(data / "store.db") == 0o600
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "codexlb", "serve", cwd=tmp_path, env=env, umask=0o022,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert b"listening on" in line, line
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                assert (await client.get("/readyz")).status_code == 200
            files = {p.name: mode(p) for p in data.iterdir()}
        finally:
            proc.terminate()
            await proc.wait()
    assert {"store.db", "store.db-wal", "store.db-shm", "encryption.key"} <= set(files), files
    assert all(m == 0o600 for m in files.values()), {n: oct(m) for n, m in files.items()}
    assert not (tmp_path / "home" / ".codex-lb").exists()


def test_files_set_on_their_own_win_over_data_dir(tmp_path: Path) -> None:
    env = {"CODEX_LB_DATA_DIR": str(tmp_path / "dd")}
    followed = load_settings(tmp_path, environ=env)
    assert followed.sqlite_path == tmp_path / "dd" / "store.db"
    assert followed.path("encryption_key_file") == tmp_path / "dd" / "encryption.key"
    own = load_settings(tmp_path, environ={**env, "CODEX_LB_DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
                                           "CODEX_LB_ENCRYPTION_KEY_FILE": str(tmp_path / "k.key")})
    assert own.sqlite_path == tmp_path / "x.db" and own.encryption_key_file == str(tmp_path / "k.key")
    home = load_settings(tmp_path, environ={})
    assert home.sqlite_path == Path(os.path.expanduser("~/.codex-lb/store.db"))
