"""A writer killed with SIGKILL loses nothing it reported as committed, and SQLite stays intact."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from codexlb.db.crypto import TokenCipher
from codexlb.db.store import AccountStore
from codexlb.settings import Settings

WRITER = Path(__file__).with_name("_writer.py")
COMMITS_BEFORE_KILL = 40


async def test_sigkill_mid_write_keeps_every_committed_account(settings: Settings, store: AccountStore,
                                                               cipher: TokenCipher) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(WRITER.parents[2]),
                                                                      os.environ.get("PYTHONPATH")]))}
    child = subprocess.Popen([sys.executable, str(WRITER), settings.database_url,
                              settings.encryption_key_file], stdout=subprocess.PIPE, env=env, text=True)
    reported: list[str] = []
    try:
        assert child.stdout is not None
        for line in child.stdout:  # blocks only until the child prints; no timing involved
            reported.append(line.strip())
            if len(reported) == COMMITS_BEFORE_KILL:
                child.send_signal(signal.SIGKILL)
                break
        reported += [line.strip() for line in child.stdout]  # committed before the kill landed
    finally:
        child.kill()
        child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    if settings.sqlite_path is not None:
        with sqlite3.connect(settings.sqlite_path) as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        db.close()
    stored = {account.id: account for account in await store.list()}
    missing = [account_id for account_id in reported if account_id not in stored]
    assert len(reported) >= COMMITS_BEFORE_KILL and missing == []
    assert all(stored[i].access_token == "a" * 2000 for i in reported)
