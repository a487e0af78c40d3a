"""Reading one plugin's ``[plugins.<name>]`` table.

Unknown keys and bad values stop start-up (:class:`codexlb.ConfigError`, exit status 2) with a
message that names the table, the option, the value and what is allowed. Values from the
environment arrive as strings (``CODEX_LB_PLUGINS__X__Y=2``) and are accepted where they parse.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from codexlb.errors import ConfigError

_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


class PluginOptions:
    """Typed reads of a plugin's options; the constructor rejects keys not in ``allowed``."""

    def __init__(self, plugin: str, config: Mapping[str, Any], allowed: Iterable[str] = (), *,
                 hint: str = "") -> None:
        self.plugin, self.config = plugin, config
        allowed = tuple(allowed)
        unknown = sorted(set(config) - set(allowed))
        if unknown:
            known = ", ".join(allowed) if allowed else "none" + (f"; {hint}" if hint else "")
            close = sorted({m for key in unknown for m in difflib.get_close_matches(key, allowed, n=1)})
            guess = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"[plugins.{plugin}] unknown option(s) {', '.join(unknown)}{guess}; "
                              f"allowed: {known}")

    def invalid(self, name: str, value: Any, allowed: str) -> ConfigError:
        """The error for a bad value of option ``name``."""
        return ConfigError(f"[plugins.{self.plugin}] {name}: invalid value {value!r}; allowed: {allowed}")

    def number(self, name: str, default: float, *, low: float | None = None, high: float | None = None,
               integer: bool = False) -> Any:
        """A number within ``low..high`` (an ``int`` when ``integer``)."""
        value = self.config.get(name, default)
        bounds = f"{low if low is not None else '-inf'}..{high if high is not None else 'inf'}"
        kind = "a whole number" if integer else "a number"
        parsed = value
        if isinstance(value, str):
            try:
                parsed = float(value.strip())
            except ValueError:
                raise self.invalid(name, value, f"{kind} in {bounds}") from None
        if isinstance(parsed, bool) or not isinstance(parsed, int | float):
            raise self.invalid(name, value, f"{kind} in {bounds}")
        if integer and parsed != int(parsed):
            raise self.invalid(name, value, f"{kind} in {bounds}")
        if (low is not None and parsed < low) or (high is not None and parsed > high):
            raise self.invalid(name, value, f"{kind} in {bounds}")
        return int(parsed) if integer else float(parsed)

    def flag(self, name: str, default: bool) -> bool:
        """A boolean (``true``/``false``, also ``yes``/``no``, ``on``/``off``, ``1``/``0`` as strings)."""
        value = self.config.get(name, default)
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise self.invalid(name, value, "true or false")
