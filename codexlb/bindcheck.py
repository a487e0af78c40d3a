"""Bind safety: refuse to serve a non-loopback address unless some enabled plugin restricts clients.

Plugins declare what they enforce with an ``enforces_admission`` attribute (read after
``configure``): a collection holding ``"api_keys"`` (it checks the keys of ``CODEX_LB_API_KEYS``)
and/or ``"client_networks"`` (it refuses clients outside an allowlist). The core trusts nothing
else: keys or an allowlist that are configured but that no enabled plugin enforces are a problem,
refused on a non-loopback bind and warned about on loopback. ``CODEX_LB_ALLOW_UNRESTRICTED_BIND``
opts out of the refusal (the warnings stay).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from codexlb.errors import ConfigError

if TYPE_CHECKING:
    import pluggy

    from codexlb.settings import Settings

log = logging.getLogger("codexlb.bind")
OPT_OUT = "CODEX_LB_ALLOW_UNRESTRICTED_BIND=true"


def is_loopback_host(host: str) -> bool:
    """Whether a listen address only accepts connections from this machine."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def enforced(plugins: Iterable[tuple[str, object]]) -> dict[str, frozenset[str]]:
    """What each plugin says it enforces (only those that enforce something)."""
    out: dict[str, frozenset[str]] = {}
    for name, plugin in plugins:
        declared = getattr(plugin, "enforces_admission", None) or ()
        what = frozenset(str(item) for item in declared)
        if what:
            out[name] = what
    return out


def unenforced(settings: Settings, enforcing: dict[str, frozenset[str]]) -> list[str]:
    """Client restrictions that are configured but that no enabled plugin enforces."""
    kinds = frozenset().union(*enforcing.values())
    problems = []
    if settings.api_keys and "api_keys" not in kinds:
        problems.append("CODEX_LB_API_KEYS is set but no enabled plugin checks client keys "
                        "(add \"firewall\" to [pipeline] plugins)")
    if settings.options_for("firewall").get("allow") and "client_networks" not in kinds:
        problems.append("[plugins.firewall] allow is set but no enabled plugin enforces it "
                        "(add \"firewall\" to [pipeline] plugins)")
    return problems


def bind_problem(settings: Settings, pm: pluggy.PluginManager) -> tuple[str | None, list[str]]:
    """``(refusal, warnings)`` for the configured listen address and enabled plugins."""
    enforcing = enforced(pm.list_name_plugin())
    problems = unenforced(settings, enforcing)
    if is_loopback_host(settings.host) or settings.allow_unrestricted_bind:
        return None, problems
    where = f"CODEX_LB_HOST: refusing to listen on {settings.host!r}"
    if problems:
        return (f"{where}: {'; '.join(problems)}, so the proxy would be open to any client; fix that, "
                f"or opt out explicitly with {OPT_OUT}."), []
    if not enforcing:
        return (f"{where} while the proxy is open to any client. Restrict it with a firewall allowlist "
                "([plugins.firewall] allow = [\"10.0.0.0/8\"] in settings.toml or "
                "CODEX_LB_PLUGINS__FIREWALL__ALLOW='[\"10.0.0.0/8\"]') or client keys (CODEX_LB_API_KEYS) "
                f"with the firewall plugin enabled, or opt out explicitly with {OPT_OUT}."), []
    return None, []


def check_bind(settings: Settings, pm: pluggy.PluginManager) -> None:
    """Raise :class:`ConfigError` for an unsafe bind; log a warning for each unenforced restriction."""
    refusal, warnings = bind_problem(settings, pm)
    if refusal is not None:
        raise ConfigError(refusal)
    for warning in warnings:
        log.warning("NOT ENFORCED: %s; every client on %s is admitted", warning, settings.host)
