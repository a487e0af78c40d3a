"""Settings: every value, its type, default and check.

Precedence, highest first: process environment (``CODEX_LB_*``) > ``.env.local`` > ``.env`` >
``settings.toml`` > the defaults declared on :class:`Settings`. Nested keys use ``__``
(``CODEX_LB_PLUGINS__FIREWALL__ALLOW``). :func:`load_settings` reports every bad value at once;
how (dynaconf loaders and validators made from these declarations) is :mod:`codexlb.settings_load`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from plugins import DEFAULT_PLUGINS

PREFIX = "CODEX_LB_"
SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD")
TOKEN_SHAPES = re.compile(r"^(eyJ[\w-]+\.[\w-]+\.[\w-]*|sk-[\w-]{8,}|rt_[\w-]{8,})$")


def _in_container() -> bool:
    return Path("/.dockerenv").exists() or bool(os.environ.get("container"))


def setting(default: Any, help: str, *, min: float | None = None, max: float | None = None,
            kind: str | None = None, choices: tuple[str, ...] | None = None, secret: bool = False) -> Any:
    """Declare one setting: its default, a one-line help text, its limits, and whether it is a secret."""
    meta = {"help": help, "min": min, "max": max, "kind": kind, "choices": choices, "secret": secret}
    if isinstance(default, list | tuple):
        return field(default_factory=lambda: tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    """Effective settings. Field names are the setting names without ``CODEX_LB_``, lower-cased."""

    # -- server ---------------------------------------------------------------------------
    host: str = setting("127.0.0.1", "listen address")
    port: int = setting(2455, "listen port", min=0, max=65535)
    data_dir: str = setting("~/.codex-lb", "folder for the database, key file and backups "
                            "(unless those are set on their own)", kind="path")
    shutdown_grace_seconds: float = setting(30.0, "how long in-flight streams may finish on SIGTERM", min=0)
    allow_unrestricted_bind: bool = setting(
        False, "allow a non-loopback listen address without a firewall allowlist or API keys")
    api_keys: tuple[str, ...] = setting((), "static client API keys, no limits (comma-separated; api_keys plugin)",
                                        kind="list", secret=True)
    admin_allowed_hosts: tuple[str, ...] = setting(
        (), "Host names the /api admin routes answer besides localhost and loopback addresses "
        "(comma-separated)", kind="hostnames")
    dashboard_enabled: bool = setting(True, "serve the web dashboard under /dashboard/")
    dashboard_session_hours: float = setting(12.0, "how long a dashboard sign-in lasts", min=0.01, max=720)
    dashboard_login_attempts: int = setting(
        5, "failed dashboard sign-ins one client may make per 15 minutes before it must wait", min=1, max=1000)
    proxy_max_attempts: int = setting(4, "accounts tried for one request before giving up", min=1, max=50)
    trace_hooks: bool = setting(False, "log every hook call with its duration (debugging)")
    route_headers: bool = setting(
        False, "add x-codexlb-account and x-codexlb-route (account label, routing reason) to answers")
    # -- database -------------------------------------------------------------------------
    database_url: str = setting("sqlite+aiosqlite:///~/.codex-lb/store.db",
                                "SQLite (default) or postgresql+asyncpg://user:pass@host:5432/db",
                                kind="db_url")
    database_migrate_on_startup: bool = setting(True, "run Alembic migrations to head at start")
    database_sqlite_pre_migrate_backup_enabled: bool = setting(
        True, "copy the SQLite file before a migration actually runs")
    database_sqlite_pre_migrate_backup_max_files: int = setting(5, "backups kept", min=1)
    database_pool_size: int = setting(15, "connection pool size (PostgreSQL)", min=1)
    database_max_overflow: int = setting(10, "connections beyond the pool (PostgreSQL)", min=0)
    database_pool_timeout_seconds: float = setting(30.0, "wait for a pooled connection", min=0)
    database_migrations_fail_fast: bool = setting(True, "a failed migration stops the program")
    database_alembic_auto_remap_enabled: bool = setting(
        True, "rewrite known legacy revision ids in alembic_version before migrating")
    # -- upstream -------------------------------------------------------------------------
    upstream_base_url: str = setting("https://chatgpt.com/backend-api", "ChatGPT backend base URL",
                                     kind="url")
    upstream_connect_timeout_seconds: float = setting(30.0, "connect timeout for upstream requests",
                                                      min=0.001)
    stream_idle_timeout_seconds: float = setting(300.0, "longest silence on a stream before it ends",
                                                 min=0.001)
    upstream_first_byte_timeout_seconds: float = setting(
        30.0, "per attempt: longest wait for a streamed answer's first event before the next account is tried",
        min=0.001)
    upstream_first_byte_total_seconds: float = setting(
        90.0, "per request: longest wait for a streamed answer to start, over all attempts", min=0.001)
    # -- OAuth and token refresh ---------------------------------------------------------
    auth_base_url: str = setting("https://auth.openai.com", "OpenAI auth service", kind="url")
    oauth_client_id: str = setting("app_EMoamEEZ73f0CkXaXp7hrann", "OAuth client id")
    oauth_scope: str = setting("openid profile email", "scopes requested at login")
    oauth_timeout_seconds: float = setting(30.0, "timeout for authorization and code exchange", min=0.001)
    oauth_redirect_uri: str = setting("http://localhost:1455/auth/callback", "registered redirect URI",
                                      kind="url")
    oauth_callback_host: str = setting("0.0.0.0" if _in_container() else "127.0.0.1",
                                       "bind host of the login callback server")
    oauth_callback_port: int = setting(1455, "port of the login callback server", min=0, max=65535)
    token_refresh_timeout_seconds: float = setting(30.0, "timeout for a token refresh", min=0.001)
    token_refresh_interval_days: int = setting(8, "refresh tokens older than this", min=1)
    # -- encryption -----------------------------------------------------------------------
    encryption_key_file: str = setting("~/.codex-lb/encryption.key", "Fernet key for tokens at rest",
                                       kind="path")
    # -- usage tracking -------------------------------------------------------------------
    usage_fetch_timeout_seconds: float = setting(10.0, "timeout of one usage fetch", min=0.001)
    usage_fetch_max_retries: int = setting(2, "retries of a failed usage fetch", min=0, max=20)
    usage_refresh_enabled: bool = setting(True, "refresh every account's usage in the background")
    usage_refresh_interval_seconds: int = setting(60, "interval between usage refreshes", min=1)
    usage_history_retention_days: int = setting(30, "days of usage snapshots kept", min=1)
    request_log_retention_days: int = setting(90, "days of request-log rows kept (0: keep forever)", min=0)
    # -- firewall -------------------------------------------------------------------------
    firewall_trust_proxy_headers: bool = setting(False, "use X-Forwarded-For from trusted proxies")
    firewall_trusted_proxy_cidrs: tuple[str, ...] = setting(
        ("127.0.0.1/32", "::1/128"), "peers whose forwarded headers are trusted (comma-separated CIDRs)",
        kind="cidrs")
    # -- logging, limits, images, model registry -----------------------------------------
    log_level: str = setting("INFO", "log level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    log_proxy_request_shape: bool = setting(False, "log the shape of each proxied request")
    log_proxy_request_shape_raw_cache_key: bool = setting(False, "raw prompt cache key in shape logs")
    log_proxy_request_payload: bool = setting(False, "log full request payloads (sensitive)")
    log_format: str = setting("TEXT", "log line format: text, or json (one object per line, for log shippers)",
                              choices=("TEXT", "JSON"))
    metrics_token: str = setting("", "bearer token for GET /metrics from other hosts; empty: loopback only")
    max_decompressed_body_bytes: int = setting(33554432, "largest request body after decompression", min=1)
    max_sse_event_bytes: int = setting(2097152, "largest single upstream SSE event", min=1024)
    websocket_max_message_bytes: int = setting(
        16777216, "largest client WebSocket message (a larger one closes the socket with 1009)", min=1024)
    websocket_max_context_bytes: int = setting(
        33554432, "largest conversation context one WebSocket connection keeps (beyond it: close 1009)",
        min=1024)
    websocket_idle_timeout_seconds: float = setting(
        900.0, "a WebSocket with no client message for this long is closed (1000)", min=0.001)
    image_inline_fetch_enabled: bool = setting(True, "fetch image URLs in requests and inline them")
    image_inline_allowed_hosts: tuple[str, ...] = setting((), "hosts allowed for inline fetching",
                                                          kind="list")
    model_registry_enabled: bool = setting(True, "keep the model list in sync with upstream")
    model_registry_refresh_interval_seconds: int = setting(300, "model registry refresh interval", min=1)
    model_registry_client_version: str = setting("0.101.0", "client version sent to the model registry")
    # -- plugins (from [pipeline] and [plugins.<name>]) ----------------------------------
    pipeline_plugins: tuple[str, ...] = setting(DEFAULT_PLUGINS, "enabled plugins, in order", kind="list")
    plugin_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, metadata={"help": ""})
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False,
                                       metadata={"help": ""})

    def options_for(self, plugin: str) -> Mapping[str, Any]:
        """The ``[plugins.<name>]`` table of one plugin (empty when absent; names are case-insensitive)."""
        return self.plugin_options.get(plugin.lower(), {})

    def path(self, name: str) -> Path:
        """A path setting with ``~`` expanded."""
        return Path(os.path.expanduser(getattr(self, name)))

    @property
    def sqlite_path(self) -> Path | None:
        """The database file when the URL is SQLite (``None`` for in-memory or PostgreSQL)."""
        if not self.database_url.startswith("sqlite"):
            return None
        raw = self.database_url.split(":///", 1)[1] if ":///" in self.database_url else ""
        return None if raw in ("", ":memory:") else Path(raw)

    def ensure_dirs(self) -> None:
        """Create the parent folders of the data files."""
        self.path("data_dir").mkdir(parents=True, exist_ok=True)
        self.path("encryption_key_file").parent.mkdir(parents=True, exist_ok=True)
        if self.sqlite_path is not None:
            self.sqlite_path.parent.mkdir(parents=True, exist_ok=True)


SETTING_FIELDS = {f.name.upper(): f for f in fields(Settings) if f.name not in ("plugin_options", "sources")}


def is_secret(name: str) -> bool:
    """Whether the setting or plugin option ``name`` holds a secret (its text values are masked).

    Declared settings say so themselves (``secret=True``); for plugin options the name decides
    (it contains KEY, TOKEN, SECRET or PASSWORD and is not a ``*_FILE`` path).
    """
    declared = SETTING_FIELDS.get(name.upper())
    if declared is not None:
        return bool(declared.metadata.get("secret"))
    return any(marker in name.upper() for marker in SECRET_MARKERS) and not name.upper().endswith("_FILE")


def _mask_text(secret: bool, text: str) -> str:
    if secret or TOKEN_SHAPES.match(text.strip()):
        return "***"
    scheme, sep, rest = text.partition("://")
    creds, at, host = rest.rpartition("@")
    if sep and at and ":" in creds:
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return text


def mask(name: str, value: Any) -> Any:
    """The value as it may be shown to a person: secrets, token-like strings and URL passwords masked.

    Numbers and booleans are never secrets and are shown as they are.
    """
    if isinstance(value, str):
        return _mask_text(is_secret(name), value) if value else value
    if isinstance(value, list | tuple):
        return [mask(name, item) for item in value]
    if isinstance(value, Mapping):
        return {key: mask(name, item) for key, item in value.items()}
    return value


def load_settings(root: str | Path | None = None, environ: Mapping[str, str] | None = None,
                  **overrides: Any) -> Settings:
    """Load, merge and validate settings; raise :class:`ConfigError` listing every problem.

    :param root: folder holding ``settings.toml``, ``.env`` and ``.env.local`` (default: cwd).
    :param environ: the process environment (default: ``os.environ``).
    :param overrides: values that win over everything (used by the CLI's ``--host``/``--port``).
    """
    from codexlb.settings_load import load

    return load(root, environ, overrides)
