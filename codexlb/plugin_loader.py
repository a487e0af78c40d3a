"""Plugin loading: resolve names from ``[pipeline] plugins``, register them, check them.

A name resolves as a built-in (``plugins.BUILTIN``), then an entry point in group ``codexlb``,
then ``module:attr``; for ``module:attr`` the current working directory is searched after the
installed packages, so a plugin file next to ``settings.toml`` works with the ``codexlb`` command
too. Installed but unlisted plugins are never loaded.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from importlib.metadata import entry_points
from typing import Any

import pluggy

from codexlb import hookspecs
from codexlb.errors import ConfigError, PluginError

log = logging.getLogger("codexlb.plugins")
ENTRY_POINT_GROUP = "codexlb"
ALWAYS_SELECTS = frozenset({"select_least_used", "select_round_robin"})
ASYNC_HOOKS = {name for name, fn in vars(hookspecs).items()
               if inspect.iscoroutinefunction(fn) and hasattr(fn, "codexlb_spec")}


def builtin_names() -> dict[str, str]:
    from plugins import BUILTIN

    return BUILTIN


def _import(target: str, *, from_cwd: bool = False) -> Any:
    module_name, _, attr = target.partition(":")
    cwd = os.getcwd()
    if from_cwd and cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr) if attr else module
    except (ImportError, AttributeError) as exc:
        raise PluginError(f"plugin {target!r} cannot be imported: {exc}") from exc


def resolve(name: str) -> Any:
    """The plugin object for ``name``; a class is instantiated once, with no arguments."""
    builtins = builtin_names()
    if name in builtins:
        obj = _import(builtins[name])
    else:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        if found:
            obj = found[0].load()
        elif ":" in name:
            obj = _import(name, from_cwd=True)
        else:
            known = sorted({*builtins, *(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))})
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"CODEX_LB_PIPELINE__PLUGINS: unknown plugin {name!r}{hint} "
                              f"(built-in: {', '.join(sorted(builtins))}; or use module:attr)")
    return obj() if inspect.isclass(obj) else obj


def make_plugin_manager(names: Sequence[str], extra: Iterable[object] = ()) -> pluggy.PluginManager:
    """Register the named plugins (first listed is called first) and ``extra`` ones before them."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if list(names).count(n) > 1})
        raise ConfigError(f"CODEX_LB_PIPELINE__PLUGINS: plugins listed twice: {', '.join(dupes)}")
    try:
        for name in reversed(list(names)):
            pm.register(resolve(name), name=name)
        for index, plugin in enumerate(extra):
            pm.register(plugin, name=getattr(plugin, "name", None) or f"extra{index}")
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(str(exc)) from exc
    check(pm)
    return pm


def check(pm: pluggy.PluginManager) -> None:
    """Start-up checks: no async wrappers; someone selects accounts and sends upstream."""
    for name in ASYNC_HOOKS:
        for impl in getattr(pm.hook, name).get_hookimpls():
            if impl.wrapper or impl.hookwrapper:
                raise PluginError(f"plugin {impl.plugin_name!r}: async hook {name} cannot be a wrapper")
    for needed in ("select_account", "send_upstream"):
        if not getattr(pm.hook, needed).get_hookimpls():
            raise ConfigError(f"CODEX_LB_PIPELINE__PLUGINS: no enabled plugin implements {needed}")
    for unreachable in shadowed_strategies(pm):
        log.warning("plugin %r is never asked to select an account: %s, called before it, always picks one "
                    "when any account is usable; list it before the built-in strategies in "
                    "[pipeline] plugins", *unreachable)


def shadowed_strategies(pm: pluggy.PluginManager) -> list[tuple[str, str]]:
    """``(plugin, built-in)`` for each ``select_account`` plugin called after a built-in that always picks."""
    from codexlb.hooks import Hooks

    order = Hooks(pm).implementers("select_account")
    first = next((i for i, name in enumerate(order) if name in ALWAYS_SELECTS), len(order))
    return [(name, order[first]) for name in order[first + 1:] if name not in ALWAYS_SELECTS]
