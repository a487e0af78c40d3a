"""``codexlb check-config`` and ``codexlb plugins``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from typing import TYPE_CHECKING, Any

import pluggy

from codexlb.settings import PREFIX, Settings, mask

if TYPE_CHECKING:
    from codexlb.hooks import Hooks


def register(sub: Any) -> None:
    check = sub.add_parser("check-config", help="validate and print the effective settings")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(func=run_check)
    plugins = sub.add_parser("plugins", help="list enabled plugins, their hooks and options")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.set_defaults(func=run_plugins)


def effective(settings: Settings) -> list[dict[str, Any]]:
    rows = []
    for f in fields(Settings):
        if f.name in ("sources", "plugin_options"):
            continue
        value = getattr(settings, f.name)
        value = list(value) if isinstance(value, tuple) else value
        rows.append({"name": PREFIX + f.name.upper(), "value": mask(f.name, value),
                     "source": settings.sources.get(f.name.upper(), "default")})
    for plugin, options in settings.plugin_options.items():
        for option, value in options.items():
            rows.append({"name": f"{PREFIX}PLUGINS__{plugin.upper()}__{option.upper()}",
                         "value": mask(option, value),
                         "source": settings.sources.get(f"PLUGINS.{plugin}.{option}", "settings")})
    return rows


def check_plugins(settings: Settings) -> pluggy.PluginManager:
    """Load the enabled plugins and let each read its options, exactly as the server does at start.

    Unknown plugins, misspelt option keys and bad option values raise :class:`ConfigError`.
    """
    from codexlb.hooks import Hooks
    from codexlb.plugin_loader import make_plugin_manager

    pm = make_plugin_manager(settings.pipeline_plugins)
    Hooks(pm).configure(settings)
    return pm


def run_check(args: argparse.Namespace, settings: Settings) -> int:
    from codexlb.bindcheck import check_bind

    notes = []
    if check_bind(settings, check_plugins(settings)):  # the same refusal (exit 2) and warnings as at start-up
        notes.append(f"CODEX_LB_HOST {settings.host!r} is allowed only if the database holds client API keys "
                     "(no allowlist or CODEX_LB_API_KEYS restricts clients); check-config does not read the "
                     "database: `codexlb serve` counts the stored keys at start and refuses to start without one")
    rows = effective(settings)
    for note in notes:
        print(f"codexlb: note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps({"valid": True, "settings": rows, "notes": notes}, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    for row in rows:
        print(f"{row['name']:<{width}}  {json.dumps(row['value'])}  ({row['source']})")
    print("\nsettings are valid")
    return 0


def plugin_rows(settings: Settings, hooks: Hooks) -> list[dict[str, Any]]:
    """Each enabled plugin with the hooks it implements and its options (as configured)."""
    out: list[dict[str, Any]] = []
    for name in settings.pipeline_plugins:
        implemented = sorted(h for h in hooks._impls if name in hooks.implementers(h))
        out.append({"name": name, "hooks": implemented, "options": dict(settings.options_for(name))})
    return out


def run_plugins(args: argparse.Namespace, settings: Settings) -> int:
    from codexlb.hooks import Hooks
    from codexlb.plugin_loader import make_plugin_manager

    out = plugin_rows(settings, Hooks(make_plugin_manager(settings.pipeline_plugins)))
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    for index, plugin in enumerate(out, 1):
        print(f"{index:>2}. {plugin['name']}: {', '.join(plugin['hooks']) or '(no hooks)'}")
        for option, value in plugin["options"].items():
            print(f"      {option} = {json.dumps(mask(option, value))}")
    return 0
