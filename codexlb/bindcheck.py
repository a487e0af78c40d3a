"""Bind safety: refuse to serve a non-loopback address unless some enabled plugin restricts clients.

Plugins declare what they enforce with an ``enforces_admission`` attribute (read after
``configure``), a collection holding:

- ``"client_networks"``: it refuses clients outside an allowlist (the firewall declares it only
  while ``[plugins.firewall] allow`` is set);
- ``"api_keys"``: it asks every client for a key whenever any key exists, in ``CODEX_LB_API_KEYS``
  or stored in the database (``codexlb keys create``).

The core trusts nothing else: keys or an allowlist that exist but that no enabled plugin enforces
are a problem, refused on a non-loopback bind and warned about on loopback. A bind is restricted
when an allowlist is enforced, or keys are enforced and at least one key exists.

Stored keys are known only once the database is open. :meth:`codexlb.app.CodexLB.start` checks
first with ``stored_keys=None`` (unknown, unless there is no SQLite file yet: then none); when the
verdict depends on the stored keys, :func:`check_bind` says so and the app checks again right after
opening the database, before it serves anything. ``CODEX_LB_ALLOW_UNRESTRICTED_BIND`` opts out of
the refusal (the warnings stay).
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


def known_stored_keys(settings: Settings, stored_keys: int | None) -> int | None:
    """``stored_keys``, or 0 when it is unknown but the SQLite database file does not exist yet."""
    path = settings.sqlite_path
    if stored_keys is None and path is not None and not path.expanduser().exists():
        return 0
    return stored_keys


def unenforced(settings: Settings, enforcing: dict[str, frozenset[str]], stored_keys: int | None = None) -> list[str]:
    """Client restrictions that exist but that no enabled plugin enforces."""
    kinds = frozenset().union(*enforcing.values())
    problems = []
    if settings.api_keys and "api_keys" not in kinds:
        problems.append("CODEX_LB_API_KEYS is set but no enabled plugin checks client keys "
                        "(add \"api_keys\" to [pipeline] plugins)")
    if stored_keys and "api_keys" not in kinds:
        problems.append(f"the database holds {stored_keys} client API key(s) but no enabled plugin checks client "
                        "keys (add \"api_keys\" to [pipeline] plugins)")
    if settings.options_for("firewall").get("allow") and "client_networks" not in kinds:
        problems.append("[plugins.firewall] allow is set but no enabled plugin enforces it "
                        "(add \"firewall\" to [pipeline] plugins)")
    return problems


def restricted(settings: Settings, kinds: frozenset[str], stored_keys: int | None) -> bool | None:
    """Whether enforced restrictions apply to every client; ``None``: it depends on the stored keys."""
    if "client_networks" in kinds:
        return True
    if "api_keys" not in kinds:
        return False
    if settings.api_keys:
        return True
    return None if stored_keys is None else stored_keys > 0


def bind_problem(settings: Settings, pm: pluggy.PluginManager,
                 stored_keys: int | None = None) -> tuple[str | None, list[str], bool]:
    """``(refusal, warnings, waits)`` for the listen address, the enabled plugins and the stored keys.

    ``waits`` is true when the verdict depends on the stored keys, unknown so far.
    """
    stored_keys = known_stored_keys(settings, stored_keys)
    enforcing = enforced(pm.list_name_plugin())
    problems = unenforced(settings, enforcing, stored_keys)
    if is_loopback_host(settings.host) or settings.allow_unrestricted_bind:
        return None, problems, False
    where = f"CODEX_LB_HOST: refusing to listen on {settings.host!r}"
    if problems:
        return (f"{where}: {'; '.join(problems)}, so the proxy would be open to any client; fix that, "
                f"or opt out explicitly with {OPT_OUT}."), [], False
    verdict = restricted(settings, frozenset().union(*enforcing.values()), stored_keys)
    if verdict is None:
        return None, [], True
    if not verdict:
        keys = ("client keys (`codexlb keys create NAME` or CODEX_LB_API_KEYS; none exists yet) with the "
                "api_keys plugin enabled") if any("api_keys" in kinds for kinds in enforcing.values()) else (
                "client keys (CODEX_LB_API_KEYS or `codexlb keys create NAME`) with the api_keys plugin enabled")
        return (f"{where} while the proxy is open to any client. Restrict it with a firewall allowlist "
                "([plugins.firewall] allow = [\"10.0.0.0/8\"] in settings.toml or "
                f"CODEX_LB_PLUGINS__FIREWALL__ALLOW='[\"10.0.0.0/8\"]') or {keys}, "
                f"or opt out explicitly with {OPT_OUT}."), [], False
    return None, [], False


def check_bind(settings: Settings, pm: pluggy.PluginManager, stored_keys: int | None = None, *,
               warn: bool = True) -> bool:
    """Raise :class:`ConfigError` for an unsafe bind; log a warning for each unenforced restriction.

    ``stored_keys`` is the number of client keys in the database (``None``: not read yet); ``warn``
    false leaves the warnings to a later call. Returns true when the verdict depends on the stored
    keys: call again with them before serving.
    """
    refusal, warnings, waits = bind_problem(settings, pm, stored_keys)
    if refusal is not None:
        raise ConfigError(refusal)
    for warning in warnings if warn else ():
        log.warning("NOT ENFORCED: %s; every client on %s is admitted", warning, settings.host)
    return waits


def unreadable_keys_refusal(settings: Settings) -> str:
    """The refusal when the verdict depends on stored keys that cannot be read (unusable schema)."""
    return (f"CODEX_LB_HOST: refusing to listen on {settings.host!r}: no firewall allowlist or CODEX_LB_API_KEYS "
            "restricts clients and the client keys stored in the database cannot be read (its schema is not "
            f"usable); fix the database, restrict clients otherwise, or opt out explicitly with {OPT_OUT}.")
