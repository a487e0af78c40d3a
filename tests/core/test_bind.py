"""Bind safety at app start: a non-loopback bind needs a plugin that really enforces admission.

Unit tests of :mod:`codexlb.bindcheck`, then real ``codexlb serve --host 0.0.0.0`` and
``codexlb check-config`` processes, and Hypercorn serving the app by itself.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from codexlb import ConfigError
from codexlb.bindcheck import check_bind, is_loopback_host
from codexlb.hooks import Hooks
from codexlb.plugin_loader import make_plugin_manager
from codexlb.settings import Settings

ROUTING = ("select_round_robin", "upstream")
WITH_FIREWALL = ("firewall", *ROUTING)
WITH_KEYS = ("firewall", "api_keys", *ROUTING)
ALLOW = {"firewall": {"allow": ["10.0.0.0/8"]}}
KEYS_NOT_CHECKED = "CODEX_LB_API_KEYS is set but no enabled plugin checks client keys"


def check(plugins: tuple[str, ...] = WITH_FIREWALL, extra: tuple[object, ...] = (), stored_keys: int | None = None,
          **changes: Any) -> bool:
    settings = dataclasses.replace(Settings(database_url="postgresql+asyncpg://db.invalid/x"),
                                   pipeline_plugins=plugins, **changes)
    pm = make_plugin_manager(plugins, extra)
    Hooks(pm).configure(settings)
    return check_bind(settings, pm, stored_keys)


class KeysPlugin:
    """Another plugin that declares it checks client keys: the core trusts the declaration, not a name."""

    name = "keys"
    enforces_admission = frozenset({"api_keys"})


@pytest.mark.parametrize("changes", [
    {"host": "0.0.0.0"}, {"host": "::"}, {"host": "192.168.1.10"}, {"host": ""},
    {"host": "0.0.0.0", "plugin_options": {"firewall": {"allow": []}}},
    {"host": "0.0.0.0", "plugins": ROUTING, "api_keys": ("k",)},  # keys, but nobody checks them
    {"host": "0.0.0.0", "plugins": ROUTING, "plugin_options": ALLOW},  # an allowlist without the firewall
    {"host": "0.0.0.0", "api_keys": ("k",)},  # the firewall does not check keys
    {"host": "0.0.0.0", "plugins": WITH_KEYS, "stored_keys": 0},  # keys are checked, but none exists
    {"host": "0.0.0.0", "plugins": WITH_FIREWALL, "stored_keys": 2},  # stored keys, but nobody checks them
])
def test_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="refusing to listen") as caught:
        check(**changes)
    assert len(caught.value.problems) == 1 and "\n" not in caught.value.problems[0]
    assert "CODEX_LB_ALLOW_UNRESTRICTED_BIND" in caught.value.problems[0]


@pytest.mark.parametrize("changes", [
    {"host": "0.0.0.0", "plugin_options": ALLOW},
    {"host": "0.0.0.0", "plugins": WITH_KEYS, "api_keys": ("k",)},
    {"host": "0.0.0.0", "plugins": WITH_KEYS, "stored_keys": 1},
    {"host": "0.0.0.0", "plugins": ROUTING, "extra": (KeysPlugin(),), "api_keys": ("k",)},
    {"host": "0.0.0.0", "plugins": ROUTING, "extra": (KeysPlugin(),), "stored_keys": 3},
    {"host": "0.0.0.0", "allow_unrestricted_bind": True},
    {"host": "0.0.0.0", "plugins": ROUTING, "api_keys": ("k",), "allow_unrestricted_bind": True},
    {"host": "127.0.0.1"}, {"host": "::1"}, {"host": "localhost"}, {"host": "[::1]"},
])
def test_allowed(changes: dict[str, Any]) -> None:
    assert check(**changes) is False


@pytest.mark.parametrize("plugins", [WITH_KEYS, ROUTING + ("api_keys",)])
def test_open_bind_with_the_keys_plugin_waits_for_the_stored_keys(plugins: tuple[str, ...], tmp_path: Path) -> None:
    assert check(plugins=plugins, host="0.0.0.0") is True  # unknown until the database is open
    db = tmp_path / "store.db"
    url = f"sqlite+aiosqlite:///{db}"
    with pytest.raises(ConfigError, match="none exists yet"):  # no database file: no stored key
        check(plugins=plugins, host="0.0.0.0", database_url=url)
    db.touch()
    assert check(plugins=plugins, host="0.0.0.0", database_url=url) is True


def test_loopback_with_unchecked_stored_keys_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="codexlb.bind"):
        assert check(host="127.0.0.1", stored_keys=2) is False
    assert "the database holds 2 client API key(s) but no enabled plugin checks client keys" in caplog.text
    caplog.clear()
    check(plugins=WITH_KEYS, host="127.0.0.1", stored_keys=2)
    assert caplog.text == ""


def test_loopback_with_unchecked_keys_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="codexlb.bind"):
        check(plugins=ROUTING, host="127.0.0.1", api_keys=("k",))
    assert KEYS_NOT_CHECKED in caplog.text and "NOT ENFORCED" in caplog.text
    caplog.clear()
    check(plugins=WITH_KEYS, host="127.0.0.1", api_keys=("k",))
    assert caplog.text == ""


def test_is_loopback_host() -> None:
    assert all(map(is_loopback_host, ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "LOCALHOST")))
    assert not any(map(is_loopback_host, ("0.0.0.0", "::", "", "10.0.0.1", "example.com")))


# -- real processes --------------------------------------------------------------------------------


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_LB_")}
    env.update({"CODEX_LB_DATA_DIR": str(tmp_path / "data"),
                "CODEX_LB_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'data' / 'store.db'}",
                "CODEX_LB_ENCRYPTION_KEY_FILE": str(tmp_path / "data" / "encryption.key"),
                "CODEX_LB_USAGE_REFRESH_ENABLED": "false", "CODEX_LB_MODEL_REGISTRY_ENABLED": "false"})
    env.update(extra)
    return env


def codexlb(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "codexlb", *args], cwd=tmp_path, env=clean_env(tmp_path, **env),
                          capture_output=True, text=True, timeout=60)


def test_serve_open_bind_exits_2(tmp_path: Path) -> None:
    done = codexlb(tmp_path, "serve", "--host", "0.0.0.0", "--port", "0")
    assert done.returncode == 2, done.stderr
    assert "refusing to listen on '0.0.0.0'" in done.stderr
    assert "CODEX_LB_ALLOW_UNRESTRICTED_BIND" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "data" / "store.db").exists()


def test_serve_keys_without_a_checker_exits_2(tmp_path: Path) -> None:
    done = codexlb(tmp_path, "serve", "--host", "0.0.0.0", "--port", "0", CODEX_LB_API_KEYS="sk-test-key",
                   CODEX_LB_PIPELINE__PLUGINS=json.dumps(list(ROUTING)))
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and KEYS_NOT_CHECKED in lines[0], done.stderr
    assert "sk-test-key" not in done.stderr


def test_serve_allowlist_without_the_firewall_exits_2(tmp_path: Path) -> None:
    done = codexlb(tmp_path, "serve", "--host", "0.0.0.0", "--port", "0",
                   CODEX_LB_PLUGINS__FIREWALL__ALLOW="10.0.0.0/8",
                   CODEX_LB_PIPELINE__PLUGINS=json.dumps(list(ROUTING)))
    assert done.returncode == 2, done.stderr
    assert "[plugins.firewall] allow is set but no enabled plugin enforces it" in done.stderr


def test_check_config_reports_the_same_problem(tmp_path: Path) -> None:
    env = {"CODEX_LB_API_KEYS": "sk-test-key", "CODEX_LB_PIPELINE__PLUGINS": json.dumps(list(ROUTING))}
    refused = codexlb(tmp_path, "check-config", CODEX_LB_HOST="0.0.0.0", **env)
    assert refused.returncode == 2, refused.stdout
    assert "refusing to listen on '0.0.0.0'" in refused.stderr and KEYS_NOT_CHECKED in refused.stderr
    warned = codexlb(tmp_path, "check-config", **env)  # loopback: valid, with a loud warning
    assert warned.returncode == 0, warned.stderr
    assert "NOT ENFORCED" in warned.stderr and KEYS_NOT_CHECKED in warned.stderr
    fine = codexlb(tmp_path, "check-config", CODEX_LB_HOST="0.0.0.0", CODEX_LB_API_KEYS="sk-test-key",
                   CODEX_LB_PIPELINE__PLUGINS=json.dumps(list(WITH_KEYS)))
    assert fine.returncode == 0 and "NOT ENFORCED" not in fine.stderr, fine.stderr


def run_until_listening(tmp_path: Path, *args: str, **env: str) -> tuple[str, str]:
    """Start ``codexlb serve``, wait for its "listening" line, stop it; its stdout line and stderr."""
    return first_line_of_serve(tmp_path, args, clean_env(tmp_path, **env))


def first_line_of_serve(cwd: Path, args: Sequence[str], env: Mapping[str, str]) -> tuple[str, str]:
    """``codexlb serve ARGS``'s first stdout line (its "listening" line) and, once stopped, its stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "codexlb", "serve", *args], cwd=cwd,
                            env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    return line, err


def test_serve_open_bind_with_the_keys_plugin_and_static_keys_starts(tmp_path: Path) -> None:
    line, err = run_until_listening(tmp_path, "--host", "0.0.0.0", "--port", "0", CODEX_LB_API_KEYS="sk-test-key",
                                    CODEX_LB_PIPELINE__PLUGINS=json.dumps(list(WITH_KEYS)))
    assert "listening on http://0.0.0.0" in line, err
    assert "NOT ENFORCED" not in err


def test_serve_loopback_with_unchecked_keys_warns(tmp_path: Path) -> None:
    line, err = run_until_listening(tmp_path, "--port", "0", CODEX_LB_API_KEYS="sk-test-key",
                                    CODEX_LB_PIPELINE__PLUGINS=json.dumps(list(ROUTING)))
    assert "listening on http://127.0.0.1" in line, err
    assert "NOT ENFORCED" in err and KEYS_NOT_CHECKED in err and "sk-test-key" not in err


def test_hypercorn_serving_the_app_runs_the_check(tmp_path: Path) -> None:
    """Another server (Hypercorn's own command) starts the app: the same refusal stops it.

    Hypercorn's worker dies with the refusal and the command ends instead of serving (its own exit
    status is 0 for a failed worker, so the test asserts that it ended, and why).
    """
    env = clean_env(tmp_path, CODEX_LB_HOST="0.0.0.0", CODEX_LB_API_KEYS="sk-test-key",
                    CODEX_LB_PIPELINE__PLUGINS=json.dumps(list(ROUTING)))
    done = subprocess.run([sys.executable, "-m", "hypercorn", "codexlb.app:create_app()", "--bind", "127.0.0.1:0"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert "Lifespan failure in startup" in done.stderr and KEYS_NOT_CHECKED in done.stderr
