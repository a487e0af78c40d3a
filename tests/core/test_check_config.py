"""`codexlb check-config` refuses what `serve` refuses; CODEX_LB_ENV sections; what is masked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from codexlb.errors import ConfigError
from codexlb.settings import load_settings, mask
from codexlb.testing.jwt import make_jwt

STICKY_TYPO = "[default.plugins.select_sticky]\nmin_remaining_pc = 2\n"
TYPO_MESSAGE = ("[plugins.select_sticky] unknown option(s) min_remaining_pc (did you mean min_remaining_pct?); "
                "allowed: min_remaining_pct, weight_by_quota, max_pins")


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_LB_")}
    environ.update(CODEX_LB_DATA_DIR=str(tmp_path / "data"), CODEX_LB_PORT="0",
                   CODEX_LB_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'data' / 'store.db'}",
                   CODEX_LB_ENCRYPTION_KEY_FILE=str(tmp_path / "data" / "key"), **env)
    return subprocess.run([sys.executable, "-m", "codexlb", *args], cwd=tmp_path, env=environ,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_misspelt_plugin_option_refused_with_the_close_match(tmp_path: Path, command: str) -> None:
    (tmp_path / "settings.toml").write_text(STICKY_TYPO)
    result = run_cli(tmp_path, command)
    assert result.returncode == 2 and f"codexlb: {TYPO_MESSAGE}" in result.stderr
    assert "settings are valid" not in result.stdout


def test_bad_plugin_option_value_refused_by_check_config(tmp_path: Path) -> None:
    (tmp_path / "settings.toml").write_text("[default.plugins.select_sticky]\nmin_remaining_pct = 200\n")
    result = run_cli(tmp_path, "check-config")
    assert result.returncode == 2
    assert "[plugins.select_sticky] min_remaining_pct: invalid value 200; allowed: a number in 0..100" \
        in result.stderr


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_codex_lb_env_naming_a_missing_section_is_refused(tmp_path: Path, command: str) -> None:
    (tmp_path / "settings.toml").write_text("[default]\nport = 1\n[production]\nport = 2\n")
    result = run_cli(tmp_path, command, CODEX_LB_ENV="staging")
    assert result.returncode == 2
    assert ("CODEX_LB_ENV='staging': settings.toml has no [staging] section; sections: [default], [production] "
            "(unset CODEX_LB_ENV for [default])") in result.stderr


def test_codex_lb_env_sections(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"CODEX_LB_ENV='production': there is no settings file"):
        load_settings(tmp_path, environ={"CODEX_LB_ENV": "production"})
    assert load_settings(tmp_path, environ={"CODEX_LB_ENV": "default"}).port == 2455
    (tmp_path / "settings.toml").write_text("[production]\nport = 2\n")
    assert load_settings(tmp_path, environ={"CODEX_LB_ENV": "PRODUCTION"}).port == 2
    assert load_settings(tmp_path, environ={"CODEX_LB_ENV": ""}).port == 2455


def test_check_config_masks_secrets_but_not_numbers(tmp_path: Path) -> None:
    token = make_jwt({"sub": "x"})
    result = run_cli(tmp_path, "check-config", "--json", CODEX_LB_API_KEYS="sk-very-secret,other-key",
                     CODEX_LB_UPSTREAM_BASE_URL="https://user:hunter2@upstream.example/backend-api",
                     CODEX_LB_MODEL_REGISTRY_CLIENT_VERSION=token, CODEX_LB_TOKEN_REFRESH_INTERVAL_DAYS="9")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row["value"] for row in json.loads(result.stdout)["settings"]}
    assert rows["CODEX_LB_API_KEYS"] == ["***", "***"]
    assert rows["CODEX_LB_UPSTREAM_BASE_URL"] == "https://user:***@upstream.example/backend-api"
    assert rows["CODEX_LB_MODEL_REGISTRY_CLIENT_VERSION"] == "***"
    assert rows["CODEX_LB_TOKEN_REFRESH_INTERVAL_DAYS"] == 9
    assert rows["CODEX_LB_TOKEN_REFRESH_TIMEOUT_SECONDS"] == 30.0
    assert rows["CODEX_LB_ENCRYPTION_KEY_FILE"] == str(tmp_path / "data" / "key")
    for secret in ("sk-very-secret", "other-key", "hunter2", token):
        assert secret not in result.stdout


@pytest.mark.parametrize(("name", "value", "shown"), [
    ("max_tokens", 4096, 4096),
    ("token_budget", 1.5, 1.5),
    ("keep_alive", True, True),
    ("api_key", "abc", "***"),
    ("webhook_token", ["a", "b"], ["***", "***"]),
    ("client_secret", "", ""),
    ("endpoint", "postgresql://u:p4ss@db/x", "postgresql://u:***@db/x"),
    ("endpoint", "https://example.com/path", "https://example.com/path"),
    ("label", "rt_abcdefghijkl", "***"),
    ("key_file", "/etc/codexlb/key", "/etc/codexlb/key"),
])
def test_mask(name: str, value: object, shown: object) -> None:
    assert mask(name, value) == shown


@pytest.mark.parametrize("plugin", ["select_round_robin", "sse_limit", "log_stdout", "metrics"])
def test_plugins_without_options_refuse_any(tmp_path: Path, plugin: str) -> None:
    from codexlb.cli.config import check_plugins

    (tmp_path / "settings.toml").write_text(f"[default.plugins.{plugin}]\nsome_option = 1\n")
    with pytest.raises(ConfigError, match=rf"^\[plugins\.{plugin}\] unknown option\(s\) some_option; allowed: none"):
        check_plugins(load_settings(tmp_path, environ={}))
