"""`codexlb accounts set` and the CAPS/HEADROOM/PINNED columns of `accounts list`, as real subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy.pool import NullPool

import codexlb
from codexlb.accounts.storage import open_store
from codexlb.db.engine import make_engine, make_sessionmaker
from codexlb.db.requestlog import insert_request_logs
from codexlb.settings import Settings
from codexlb.testing.fake_upstream import FakeUpstream
from codexlb.types import UsageWindow
from tests.accounts.conftest import add_accounts, assert_no_secrets, stored

REPO = Path(codexlb.__file__).resolve().parent.parent


async def codexlb_cli(settings: Settings, *argv: str) -> subprocess.CompletedProcess[str]:
    """``python -m codexlb ARGV`` in a child process, configured only through the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_LB_")}
    env |= {"CODEX_LB_DATABASE_URL": settings.database_url, "CODEX_LB_DATA_DIR": settings.data_dir,
            "CODEX_LB_ENCRYPTION_KEY_FILE": settings.encryption_key_file,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))}
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "codexlb", *argv], env=env,
                                   capture_output=True, text=True, timeout=60)


async def log_turns(settings: Settings, turns: list[tuple[str, str, float]]) -> None:
    """Request log rows ``(conversation, account id, time)`` as the proxy writes them for answered turns."""
    engine = make_engine(settings, poolclass=NullPool)
    try:
        await insert_request_logs(make_sessionmaker(engine), [
            {"time": at, "endpoint": "responses", "session_key_hash": key, "account_id": account, "status": 200}
            for key, account, at in turns])
    finally:
        await engine.dispose()


async def test_set_caps_then_list_shows_caps_headroom_and_pins(fake: FakeUpstream, settings: Settings) -> None:
    one, two = await add_accounts(settings, [fake.add_account(email="one@example.com"),
                                             fake.add_account(email="two@example.com")])
    now = time.time()
    async with open_store(settings) as store:
        await store.update(one.id, primary=UsageWindow(30.0, 300, now + 3600),
                           secondary=UsageWindow(50.0, 10080, now + 86400))
    # conversation a moved from two to one (counts for one); b and c stay on two; d is older than an hour
    await log_turns(settings, [("a", two.id, now - 600), ("a", one.id, now - 300), ("b", two.id, now - 200),
                               ("c", two.id, now - 100), ("d", one.id, now - 2 * 3600)])

    run = await codexlb_cli(settings, "accounts", "set", one.label, "--max-primary", "80", "--max-secondary", "90")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == (f"account {one.label}: primary cap 80%, secondary cap 90% "
                                  "(running servers pick this up within seconds)")
    first = {a.id: a for a in await stored(settings)}[one.id]
    assert (first.max_primary_percent, first.max_secondary_percent) == (80.0, 90.0)

    listed = await codexlb_cli(settings, "accounts", "list")
    assert listed.returncode == 0, listed.stderr
    header, *lines = listed.stdout.strip().splitlines()
    assert header.split()[-4:] == ["CAPS", "5H/WK", "HEADROOM", "PINNED"]
    rows = {line.split()[0]: line.split() for line in lines}
    assert rows[one.label][-3:] == ["80%/90%", "40%", "1"]  # min(80 - 30, 90 - 50)
    assert rows[two.label][-3:] == ["-", "100%", "2"]

    data = json.loads((await codexlb_cli(settings, "accounts", "list", "--json")).stdout)
    by_id = {a["id"]: a for a in data}
    assert (by_id[one.id]["headroom_percent"], by_id[one.id]["pinned_conversations"]) == (40.0, 1)
    assert (by_id[two.id]["headroom_percent"], by_id[two.id]["pinned_conversations"]) == (100.0, 2)

    lifted = await codexlb_cli(settings, "accounts", "set", one.id[:8], "--max-secondary", "none")
    assert lifted.returncode == 0, lifted.stderr
    assert lifted.stdout.strip() == (f"account {one.label}: secondary cap none "
                                     "(running servers pick this up within seconds)")
    first = {a.id: a for a in await stored(settings)}[one.id]
    assert (first.max_primary_percent, first.max_secondary_percent) == (80.0, None)  # the other cap is kept
    listed = await codexlb_cli(settings, "accounts", "list")
    assert [line.split()[-3:] for line in listed.stdout.splitlines() if line.startswith(one.label)] == [
        ["80%/-", "50%", "1"]]
    assert_no_secrets(fake, run.stdout + run.stderr, listed.stdout + listed.stderr)


async def test_set_refuses_bad_input_and_changes_nothing(fake: FakeUpstream, settings: Settings) -> None:
    [one] = await add_accounts(settings, [fake.add_account(email="one@example.com")])
    for argv, status, message in (
            (("--max-primary", "150"), 2, "argument --max-primary: expected a percentage above 0 and at most 100"),
            (("--max-secondary", "0"), 2, "argument --max-secondary: expected a percentage above 0"),
            (("--max-primary", "nan"), 2, "expected a percentage above 0 and at most 100, or 'none'; got 'nan'"),
            ((), 1, "nothing to set: give --max-primary and/or --max-secondary")):
        run = await codexlb_cli(settings, "accounts", "set", one.label, *argv)
        assert run.returncode == status, (argv, run.stdout, run.stderr)
        assert message in run.stderr and "Traceback" not in run.stderr
    missing = await codexlb_cli(settings, "accounts", "set", "no-such-account", "--max-primary", "50")
    assert missing.returncode != 0 and "no-such-account" in missing.stderr and "Traceback" not in missing.stderr
    [after] = await stored(settings)
    assert (after.max_primary_percent, after.max_secondary_percent) == (None, None)
