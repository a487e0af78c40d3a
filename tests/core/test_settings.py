"""Settings: every seed default, each precedence level, and the invalid-value errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from codexlb.errors import ConfigError
from codexlb.settings import load_settings

SEED_DEFAULTS = {
    "DATABASE_URL": f"sqlite+aiosqlite:///{os.path.expanduser('~/.codex-lb/store.db')}",
    "DATABASE_MIGRATE_ON_STARTUP": True,
    "DATABASE_SQLITE_PRE_MIGRATE_BACKUP_ENABLED": True,
    "DATABASE_SQLITE_PRE_MIGRATE_BACKUP_MAX_FILES": 5,
    "DATABASE_POOL_SIZE": 15,
    "DATABASE_MAX_OVERFLOW": 10,
    "DATABASE_POOL_TIMEOUT_SECONDS": 30.0,
    "DATABASE_MIGRATIONS_FAIL_FAST": True,
    "DATABASE_ALEMBIC_AUTO_REMAP_ENABLED": True,
    "UPSTREAM_BASE_URL": "https://chatgpt.com/backend-api",
    "UPSTREAM_CONNECT_TIMEOUT_SECONDS": 30.0,
    "STREAM_IDLE_TIMEOUT_SECONDS": 300.0,
    "AUTH_BASE_URL": "https://auth.openai.com",
    "OAUTH_CLIENT_ID": "app_EMoamEEZ73f0CkXaXp7hrann",
    "OAUTH_SCOPE": "openid profile email",
    "OAUTH_TIMEOUT_SECONDS": 30.0,
    "OAUTH_REDIRECT_URI": "http://localhost:1455/auth/callback",
    "OAUTH_CALLBACK_PORT": 1455,
    "TOKEN_REFRESH_TIMEOUT_SECONDS": 30.0,
    "TOKEN_REFRESH_INTERVAL_DAYS": 8,
    "ENCRYPTION_KEY_FILE": os.path.expanduser("~/.codex-lb/encryption.key"),
    "USAGE_FETCH_TIMEOUT_SECONDS": 10.0,
    "USAGE_FETCH_MAX_RETRIES": 2,
    "USAGE_REFRESH_ENABLED": True,
    "USAGE_REFRESH_INTERVAL_SECONDS": 60,
    "FIREWALL_TRUST_PROXY_HEADERS": False,
    "FIREWALL_TRUSTED_PROXY_CIDRS": ("127.0.0.1/32", "::1/128"),
    "LOG_PROXY_REQUEST_SHAPE": False,
    "LOG_PROXY_REQUEST_SHAPE_RAW_CACHE_KEY": False,
    "LOG_PROXY_REQUEST_PAYLOAD": False,
    "MAX_DECOMPRESSED_BODY_BYTES": 33554432,
    "MAX_SSE_EVENT_BYTES": 2097152,
    "IMAGE_INLINE_FETCH_ENABLED": True,
    "IMAGE_INLINE_ALLOWED_HOSTS": (),
    "MODEL_REGISTRY_ENABLED": True,
    "MODEL_REGISTRY_REFRESH_INTERVAL_SECONDS": 300,
    "MODEL_REGISTRY_CLIENT_VERSION": "0.101.0",
    "HOST": "127.0.0.1",
    "PORT": 2455,
    "DATA_DIR": os.path.expanduser("~/.codex-lb"),
}


@pytest.mark.parametrize(("name", "default"), SEED_DEFAULTS.items())
def test_seed_default(tmp_path: Path, name: str, default: object) -> None:
    settings = load_settings(tmp_path, environ={})
    assert getattr(settings, name.lower()) == default
    assert type(getattr(settings, name.lower())) is type(default)
    assert settings.sources[name] == "default"


def test_callback_host_default_is_loopback_outside_containers(tmp_path: Path) -> None:
    expected = "0.0.0.0" if Path("/.dockerenv").exists() or os.environ.get("container") else "127.0.0.1"
    assert load_settings(tmp_path, environ={}).oauth_callback_host == expected


def write_levels(root: Path, levels: set[str]) -> dict[str, str]:
    environ: dict[str, str] = {}
    if "toml" in levels:
        (root / "settings.toml").write_text("[default]\ndatabase_pool_size = 1\n")
    if "env" in levels:
        (root / ".env").write_text("CODEX_LB_DATABASE_POOL_SIZE=2\n")
    if "env_local" in levels:
        (root / ".env.local").write_text("CODEX_LB_DATABASE_POOL_SIZE=3\n")
    if "process" in levels:
        environ["CODEX_LB_DATABASE_POOL_SIZE"] = "4"
    return environ


@pytest.mark.parametrize(("levels", "value", "source"), [
    ({"toml"}, 1, "settings.toml"),
    ({"toml", "env"}, 2, ".env"),
    ({"toml", "env", "env_local"}, 3, ".env.local"),
    ({"toml", "env", "env_local", "process"}, 4, "environment"),
    ({"env_local", "toml"}, 3, ".env.local"),
    ({"process", "toml"}, 4, "environment"),
])
def test_precedence(tmp_path: Path, levels: set[str], value: int, source: str) -> None:
    environ = write_levels(tmp_path, levels)
    settings = load_settings(tmp_path, environ=environ)
    assert settings.database_pool_size == value
    assert settings.sources["DATABASE_POOL_SIZE"] == source


def test_env_section_selected_by_codex_lb_env(tmp_path: Path) -> None:
    (tmp_path / "settings.toml").write_text("[default]\nport = 1\n[production]\nport = 2\n")
    assert load_settings(tmp_path, environ={}).port == 1
    assert load_settings(tmp_path, environ={"CODEX_LB_ENV": "production"}).port == 2


def test_plugins_and_options_from_toml_and_env(tmp_path: Path) -> None:
    (tmp_path / "settings.toml").write_text(
        '[default.pipeline]\nplugins = ["upstream", "select_round_robin"]\n'
        '[default.plugins.firewall]\nallow = ["10.0.0.0/8"]\nother = 1\n')
    settings = load_settings(tmp_path, environ={"CODEX_LB_PLUGINS__FIREWALL__ALLOW": '["192.168.0.0/16"]'})
    assert settings.pipeline_plugins == ("upstream", "select_round_robin")
    assert settings.options_for("firewall") == {"allow": ["192.168.0.0/16"], "other": 1}
    assert settings.sources["PLUGINS.firewall.allow"] == "environment"
    assert settings.options_for("missing") == {}


def test_tilde_expanded_and_dirs_created(tmp_path: Path) -> None:
    home = tmp_path / "home"
    environ = {"CODEX_LB_DATABASE_URL": "sqlite+aiosqlite:///~/db/x/store.db",
               "CODEX_LB_ENCRYPTION_KEY_FILE": "~/keys/k.key", "CODEX_LB_DATA_DIR": "~/data"}
    old = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    try:
        settings = load_settings(tmp_path, environ=environ)
    finally:
        if old is not None:
            os.environ["HOME"] = old
    assert settings.database_url == f"sqlite+aiosqlite:///{home}/db/x/store.db"
    assert settings.encryption_key_file == f"{home}/keys/k.key"
    settings.ensure_dirs()
    assert (home / "db" / "x").is_dir() and (home / "keys").is_dir() and (home / "data").is_dir()


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("DATABASE_POOL_SIZE", "-1", "CODEX_LB_DATABASE_POOL_SIZE: invalid value -1: allowed: 1..inf"),
    ("USAGE_REFRESH_ENABLED", "maybe",
     "CODEX_LB_USAGE_REFRESH_ENABLED: invalid value 'maybe': allowed: true or false"),
    ("FIREWALL_TRUSTED_PROXY_CIDRS", "10.0.0.0/8,not-a-cidr",
     "CODEX_LB_FIREWALL_TRUSTED_PROXY_CIDRS: invalid value '10.0.0.0/8,not-a-cidr': 'not-a-cidr' is not a "
     "CIDR; allowed: comma-separated CIDRs such as 10.0.0.0/8,::1/128"),
    ("DATABASE_URL", "mysql+aiomysql://db/x",
     "CODEX_LB_DATABASE_URL: invalid value 'mysql+aiomysql://db/x': unknown database driver; allowed: "
     "sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER:PASS@HOST:PORT/DB"),
    ("PORT", "http", "CODEX_LB_PORT: invalid value 'http': allowed: a number (int)"),
    ("UPSTREAM_BASE_URL", "chatgpt.com", "CODEX_LB_UPSTREAM_BASE_URL: invalid value 'chatgpt.com': "
     "allowed: an http:// or https:// URL"),
])
def test_invalid_values_are_named(tmp_path: Path, name: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, environ={f"CODEX_LB_{name}": value})
    assert info.value.problems == [expected]


def test_every_problem_reported_at_once(tmp_path: Path) -> None:
    environ = {"CODEX_LB_DATABASE_POOL_SIZE": "-1", "CODEX_LB_USAGE_REFRESH_ENABLED": "maybe",
               "CODEX_LB_DATABSE_URL": "x"}
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, environ=environ)
    assert len(info.value.problems) == 3
    assert any("did you mean DATABASE_URL" in p for p in info.value.problems)


def test_postgres_url_normalised(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, environ={"CODEX_LB_DATABASE_URL": "postgresql://u:p@db:5432/x"})
    assert settings.database_url == "postgresql+asyncpg://u:p@db:5432/x"


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_LB_")}
    environ.update(env)
    return subprocess.run([sys.executable, "-m", "codexlb", *args], cwd=tmp_path, env=environ,
                          capture_output=True, text=True, timeout=60)


def test_bad_setting_stops_serve_with_exit_2(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "serve", CODEX_LB_DATABASE_POOL_SIZE="-1", CODEX_LB_USAGE_REFRESH_ENABLED="maybe")
    assert result.returncode == 2
    assert "CODEX_LB_DATABASE_POOL_SIZE: invalid value -1: allowed: 1..inf" in result.stderr
    assert "CODEX_LB_USAGE_REFRESH_ENABLED: invalid value 'maybe'" in result.stderr


def test_check_config_shows_sources_and_masks_secrets(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("CODEX_LB_PORT=3000\n")
    result = run_cli(tmp_path, "check-config", CODEX_LB_API_KEYS="sk-very-secret",
                     CODEX_LB_DATABASE_URL="postgresql+asyncpg://u:hunter2@db:5432/x")
    assert result.returncode == 0, result.stderr
    assert "sk-very-secret" not in result.stdout and "hunter2" not in result.stdout
    line = next(x for x in result.stdout.splitlines() if x.startswith("CODEX_LB_PORT "))
    assert "3000" in line and "(.env)" in line
    bad = run_cli(tmp_path, "check-config", "--json", CODEX_LB_PORT="-5")
    assert bad.returncode == 2 and "CODEX_LB_PORT" in bad.stderr
