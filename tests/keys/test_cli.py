"""``codexlb keys ...`` as real processes on the database a running proxy uses."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import codexlb
from codexlb.testing.harness import ProxyHarness, proxy_server
from codexlb.testing.secrets import register_secret
from tests.keys.conftest import BODY, PATH, PIPELINE, bearer, plugin

REPO = Path(codexlb.__file__).resolve().parent.parent


def env_of(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a ``codexlb`` process on the harness's database (``tmp_path/data``)."""
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_LB_")}
    env |= {"CODEX_LB_DATA_DIR": str(data), "CODEX_LB_DATABASE_URL": f"sqlite+aiosqlite:///{data / 'store.db'}",
            "CODEX_LB_ENCRYPTION_KEY_FILE": str(data / "encryption.key"),
            "CODEX_LB_USAGE_REFRESH_ENABLED": "false", "CODEX_LB_MODEL_REGISTRY_ENABLED": "false",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))}
    return env | extra


def cli(tmp_path: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m codexlb ARGV`` on the harness's database (``tmp_path/data``)."""
    return subprocess.run([sys.executable, "-m", "codexlb", *argv], cwd=tmp_path, env=env_of(tmp_path, **env),
                          capture_output=True, text=True, timeout=60)


async def run(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(cli, tmp_path, *argv)


async def created_key(tmp_path: Path, proxy: ProxyHarness, *argv: str) -> tuple[str, dict[str, object]]:
    done = await run(tmp_path, "keys", *argv, "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    register_secret(data["key"])
    await plugin(proxy).sync()  # what the running proxy does every sync interval
    return data["key"], data


async def test_create_then_use_show_list_usage_rotate_revoke(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, pipeline=PIPELINE, accounts=2) as proxy:
        key, data = await created_key(tmp_path, proxy, "create", "ci-bot", "--limit", "requests=3/day",
                                      "--limit", "tokens=2000000/5h", "--models", "gpt-5,gpt-5-codex",
                                      "--accounts", "acct1", "--expires", "30d")
        assert str(key).startswith("sk-clb-") and len(str(key)) >= 7 + 43
        assert data["name"] == "ci-bot" and data["models"] == ["gpt-5", "gpt-5-codex"]
        assert data["accounts"] == [{"id": proxy.lb.pool.all()[0].id, "label": "acct1"}]
        assert data["limits"] == [{"metric": "requests", "window": "day", "max": 3},
                                  {"metric": "total_tokens", "window": "5h", "max": 2000000}]
        r = await proxy.client.post(PATH, json=BODY, headers=bearer(str(key)))
        assert r.status_code == 200 and r.headers["x-codexlb-account"] == "acct1"
        await plugin(proxy).sync()
        await proxy.lb.pm.get_plugin("log_db").flush()

        shown = await run(tmp_path, "keys", "show", "ci-bot")
        assert shown.returncode == 0 and "requests per day: 1 of 3" in shown.stdout
        assert str(key) not in shown.stdout
        listed = await run(tmp_path, "keys", "list")
        assert listed.returncode == 0 and "ci-bot" in listed.stdout and "active" in listed.stdout
        assert str(key) not in listed.stdout and "requests=3/day" in listed.stdout
        usage = await run(tmp_path, "keys", "usage", "--json")
        rows = json.loads(usage.stdout)["data"]
        assert [(r["key"], r["account"], r["requests"], r["errors"]) for r in rows] == [("ci-bot", "acct1", 1, 0)]
        table = await run(tmp_path, "keys", "usage", "ci-bot", "--since", "1d")
        assert "ci-bot" in table.stdout and "acct1" in table.stdout

        rotated = await run(tmp_path, "keys", "rotate", "ci-bot")
        assert rotated.returncode == 0 and "not shown again" in rotated.stdout
        new = next(line.strip() for line in rotated.stdout.splitlines() if line.strip().startswith("sk-clb-"))
        register_secret(new)
        await plugin(proxy).sync()
        assert (await proxy.client.post(PATH, json=BODY, headers=bearer(str(key)))).status_code == 401
        assert (await proxy.client.post(PATH, json=BODY, headers=bearer(new))).status_code == 200

        revoked = await run(tmp_path, "keys", "revoke", "ci-bot")
        assert revoked.returncode == 0 and "revoked API key 'ci-bot'" in revoked.stdout
        await plugin(proxy).sync()
        assert (await proxy.client.post(PATH, json=BODY, headers=bearer(new))).status_code == 401
        assert "revoked" in (await run(tmp_path, "keys", "list", "--json")).stdout


@pytest.mark.parametrize(("argv", "message"), [
    (("create", "k", "--limit", "requests=5/fortnight"), "unknown window 'fortnight'"),
    (("create", "k", "--accounts", "nobody"), "no account matches 'nobody'"),
    (("create", "k", "--expires", "forever"), "expires 'forever'"),
    (("show", "nobody"), "no API key named 'nobody'"),
    (("revoke", "nobody"), "no API key named 'nobody'"),
    (("usage", "--since", "last week"), "--since 'last week'"),
])
def test_bad_input_exits_1_with_one_line(tmp_path: Path, argv: tuple[str, ...], message: str) -> None:
    done = cli(tmp_path, "keys", *argv)
    last = done.stderr.splitlines()[-1]
    assert done.returncode == 1 and last.startswith("codexlb keys ") and message in last, done.stderr


def test_duplicate_name_and_empty_list(tmp_path: Path) -> None:
    assert "no API keys yet" in cli(tmp_path, "keys", "list").stdout
    first = cli(tmp_path, "keys", "create", "dup")
    assert first.returncode == 0
    register_secret(next(w for w in first.stdout.split() if w.startswith("sk-clb-")))
    second = cli(tmp_path, "keys", "create", "dup")
    assert second.returncode == 1 and "already exists" in second.stderr
