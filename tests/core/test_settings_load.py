"""The dynaconf-based loader: layers, sources from dynaconf's history, validators, refusals."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from codexlb.errors import ConfigError
from codexlb.settings import load_settings


def test_sources_of_settings_plugin_options_and_command_line(tmp_path: Path) -> None:
    (tmp_path / "settings.toml").write_text(
        '[default]\nport = 1\n[default.pipeline]\nplugins = ["upstream"]\n'
        "[default.plugins.select_sticky]\nmin_remaining_pct = 5\nmax_pins = 3\n")
    (tmp_path / ".env").write_text("CODEX_LB_PLUGINS__SELECT_STICKY__MAX_PINS=4\n")
    settings = load_settings(tmp_path, environ={}, host="0.0.0.0")
    assert settings.sources["PORT"] == "settings.toml" and settings.port == 1
    assert settings.sources["PIPELINE_PLUGINS"] == "settings.toml"
    assert settings.sources["HOST"] == "command line" and settings.host == "0.0.0.0"
    assert settings.sources["PLUGINS.select_sticky.min_remaining_pct"] == "settings.toml"
    assert settings.sources["PLUGINS.select_sticky.max_pins"] == ".env"
    assert settings.options_for("select_sticky") == {"min_remaining_pct": 5, "max_pins": 4}


@pytest.mark.parametrize(("env_file", "environ", "plugins", "source"), [
    ("CODEX_LB_PIPELINE__PLUGINS=upstream,metrics\n", {}, ("upstream", "metrics"), ".env"),
    ("CODEX_LB_PIPELINE__PLUGINS=upstream\n", {"CODEX_LB_PIPELINE_PLUGINS": '["metrics"]'}, ("metrics",),
     "environment"),
])
def test_pipeline_plugins_from_any_layer_replace_the_toml_list(tmp_path: Path, env_file: str,
                                                               environ: dict[str, str], plugins: tuple[str, ...],
                                                               source: str) -> None:
    (tmp_path / "settings.toml").write_text('[default.pipeline]\nplugins = ["firewall", "upstream"]\n')
    (tmp_path / ".env").write_text(env_file)
    settings = load_settings(tmp_path, environ=environ)
    assert settings.pipeline_plugins == plugins
    assert settings.sources["PIPELINE_PLUGINS"] == source


def test_section_adds_to_default_tables(tmp_path: Path) -> None:
    (tmp_path / "settings.toml").write_text(
        "[default.plugins.select_sticky]\nmax_pins = 3\n[production.plugins.firewall]\nallow = []\n")
    settings = load_settings(tmp_path, environ={"CODEX_LB_ENV": "production"})
    assert settings.options_for("select_sticky") == {"max_pins": 3}
    assert settings.options_for("firewall") == {"allow": []}


def test_loading_leaves_the_process_environment_alone(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("CODEX_LB_PORT=3001\n")
    (tmp_path / ".env.local").write_text("CODEX_LB_HOST=127.0.0.2\n")
    before = dict(os.environ)
    settings = load_settings(tmp_path, environ={})
    assert (settings.port, settings.host) == (3001, "127.0.0.2")
    assert dict(os.environ) == before


def test_unknown_names_in_the_toml_file_and_pipeline_refused(tmp_path: Path) -> None:
    (tmp_path / "settings.toml").write_text("[default]\nprot = 1\n[default.pipeline]\nplugin = []\n")
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, environ={"CODEX_LB_PLUGINS__FIREWALL": "3"})
    assert sorted(info.value.problems) == sorted([
        "CODEX_LB_PROT: unknown setting from settings.toml (did you mean PORT?)",
        "PIPELINE__PLUGIN: unknown key (allowed: pipeline.plugins)",
        "PLUGINS__FIREWALL: value 3 is not a table of plugin options",
    ])


def test_unreadable_toml_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "settings.toml").write_text("[default\nport = 1\n")
    with pytest.raises(ConfigError, match=r"settings.toml: cannot read"):
        load_settings(tmp_path, environ={})


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("USAGE_REFRESH_ENABLED", "no", False),
    ("USAGE_REFRESH_ENABLED", "1", True),
    ("LOG_FORMAT", "json", "JSON"),
    ("ADMIN_ALLOWED_HOSTS", "Proxy.Example,b.internal", ("proxy.example", "b.internal")),
    ("API_KEYS", '["k1", "k2"]', ("k1", "k2")),
    ("DATABASE_POOL_TIMEOUT_SECONDS", "5", 5.0),
    ("MODEL_REGISTRY_CLIENT_VERSION", "0.102.0", "0.102.0"),
    ("DATABASE_MAX_OVERFLOW", "3.0", 3),
])
def test_values_are_cast_to_the_declared_type(tmp_path: Path, name: str, text: str, expected: object) -> None:
    value = getattr(load_settings(tmp_path, environ={f"CODEX_LB_{name}": text}), name.lower())
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(("name", "text", "line"), [
    ("LOG_LEVEL", "verbose", "CODEX_LB_LOG_LEVEL: invalid value 'verbose': allowed: DEBUG, INFO, WARNING, ERROR"),
    ("PORT", "70000", "CODEX_LB_PORT: invalid value 70000: allowed: 0..65535"),
    ("PORT", "true", "CODEX_LB_PORT: invalid value True: allowed: a number (int)"),
    ("SHUTDOWN_GRACE_SECONDS", "[1]", "CODEX_LB_SHUTDOWN_GRACE_SECONDS: invalid value [1]: allowed: a number (float)"),
    ("ADMIN_ALLOWED_HOSTS", "a.example,http://b",
     "CODEX_LB_ADMIN_ALLOWED_HOSTS: invalid value 'a.example,http://b': 'http://b' is not a host name; allowed: "
     "names such as codexlb.internal, without scheme, port or path"),
    ("API_KEYS", "{a=1}", "CODEX_LB_API_KEYS: invalid value {'a': 1}: allowed: a comma-separated string or a list"),
    ("HOST", "[1]", "CODEX_LB_HOST: invalid value [1]: allowed: a string"),
])
def test_one_line_per_bad_value(tmp_path: Path, name: str, text: str, line: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, environ={f"CODEX_LB_{name}": text})
    assert info.value.problems == [line]


def test_data_dir_moves_the_default_files_only(tmp_path: Path) -> None:
    data = tmp_path / "d"
    settings = load_settings(tmp_path, environ={"CODEX_LB_DATA_DIR": str(data)})
    assert settings.database_url == f"sqlite+aiosqlite:///{data / 'store.db'}"
    assert settings.encryption_key_file == str(data / "encryption.key")
    assert settings.sources["DATABASE_URL"] == "default"
    own = load_settings(tmp_path, environ={"CODEX_LB_DATA_DIR": str(data), "CODEX_LB_DATABASE_URL": "sqlite:///x.db"})
    assert own.database_url == "sqlite+aiosqlite:///x.db"
