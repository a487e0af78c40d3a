"""How settings are loaded: dynaconf layers, validators made from the declarations, sources.

- ``settings.toml`` is read by dynaconf's TOML loader with ``environments=True`` (the section is
  ``CODEX_LB_ENV``, ``[default]`` otherwise) and ``merge_enabled=True`` (a section adds to
  ``[default]``; tables merge).
- ``.env``, ``.env.local`` and the environment, in that order, go through dynaconf too:
  each layer's ``CODEX_LB_*`` values are typed by dynaconf's ``parse_conf_data`` (the TOML
  inference its environment loader uses) and applied with ``Dynaconf.update``, which does the
  ``__`` nesting and records the layer in dynaconf's loading history. Dynaconf's own dotenv
  support is not used because it copies one file into ``os.environ`` (so ``.env`` could not be
  told from the environment, ``.env.local`` could not be layered on top, and loading would
  change the process); its environment loader reads only ``os.environ``, and ``load_settings``
  takes the environment as an argument. In these layers a value replaces what was there
  (merging is off), as environment variables do in dynaconf.
- Every declared setting becomes dynaconf ``Validator``\\ s (``default``, ``cast``,
  ``is_type_of``, ``gte``/``lte``, ``is_in``, ``startswith``, a ``condition`` for CIDRs, host
  names and database URLs); ``validate_all`` collects every failure, one line each.
- The source shown by ``check-config`` is the newest layer in dynaconf's loading history
  (``get_history``) that holds the key; a key no layer set shows ``default``. The history holds
  whole top-level tables, so for plugin options set with ``__`` the loader notes the keys itself.
- Left here: refusing unknown names (dynaconf can only ignore them), and ``CODEX_LB_ENV`` naming
  a section the file lacks (dynaconf silently falls back to ``[default]``).
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, Field
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from dynaconf import Dynaconf, ValidationError, Validator
from dynaconf.loaders.base import SourceMetadata
from dynaconf.utils.inspect import get_history
from dynaconf.utils.parse_conf import DynaconfParseError, Lazy, boolean_fix, parse_conf_data

from codexlb.errors import ConfigError
from codexlb.settings import PREFIX, SETTING_FIELDS, Settings

LAYER = "codexlb"
"""Loader name of the dotenv, environment and command-line layers in dynaconf's history."""
NOT_SETTINGS = (PREFIX + "ENV", PREFIX + "SETTINGS_FILE")
INTERNAL = frozenset({"LOAD_DOTENV"})
PIPELINE = "PIPELINE_PLUGINS"
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_DRIVERS = {"sqlite": "sqlite+aiosqlite", "sqlite+aiosqlite": "sqlite+aiosqlite",
            "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg",
            "postgresql+asyncpg": "postgresql+asyncpg"}


def load(root: str | Path | None, environ: Mapping[str, str] | None, overrides: Mapping[str, Any]) -> Settings:
    """See :func:`codexlb.settings.load_settings`."""
    root = Path(root or os.getcwd())
    environ = os.environ if environ is None else environ
    toml_file = Path(environ.get(PREFIX + "SETTINGS_FILE") or root / "settings.toml")
    env = environ.get(PREFIX + "ENV") or "default"
    _check_env(env, toml_file)
    dyn = Dynaconf(settings_files=[str(toml_file)] if toml_file.exists() else [], environments=True, env=env,
                   merge_enabled=True, loaders=[], envvar_prefix=False, load_dotenv=False)
    problems: list[str] = []
    options_set: dict[str, str] = {}
    try:
        toml_values = dyn.as_dict(internal=False)
    except Exception as exc:  # dynaconf raises the TOML parser's own errors
        raise ConfigError(f"{toml_file}: cannot read: {exc}") from None
    if "PIPELINE" in toml_values:
        dyn.unset("PIPELINE")
        dyn.update(_layer({"PIPELINE": toml_values["PIPELINE"]}, toml_file.name, problems),
                   loader_identifier=SourceMetadata("toml", str(toml_file), env.lower()))
    dyn.set("MERGE_ENABLED_FOR_DYNACONF", False)
    for label, values in ((".env", dotenv_values(root / ".env")), (".env.local", dotenv_values(root / ".env.local")),
                          ("environment", environ)):
        typed = {name[len(PREFIX):]: _typed(name, text, label, problems) for name, text in values.items()
                 if name.startswith(PREFIX) and name not in NOT_SETTINGS and not name.startswith(PREFIX + "TEST_")}
        typed = {key: value for key, value in typed.items() if value is not _REFUSED}
        layer = _layer(typed, label, problems)
        dyn.update(layer, loader_identifier=SourceMetadata(LAYER, label, "global"))
        options_set.update(_option_keys(layer, label))
    dyn.update({k.upper(): v for k, v in overrides.items() if v is not None},
               loader_identifier=SourceMetadata(LAYER, "command line", "global"))
    problems += _unknown(dyn)
    found = {**sources(dyn), **options_set}
    dyn.validators.register(*VALIDATORS)
    try:
        dyn.validators.validate_all()
    except ValidationError as exc:
        problems += [message for _, message in exc.details]
    if problems:
        raise ConfigError(problems)
    return _settings(dyn, found)


def _check_env(env: str, toml_file: Path) -> None:
    """Refuse a ``CODEX_LB_ENV`` that names no section of the settings file (``default`` always exists)."""
    if env.lower() == "default":
        return
    if not toml_file.exists():
        raise ConfigError(f"{PREFIX}ENV={env!r}: there is no settings file ({toml_file}) to take a [{env}] "
                          f"section from; unset {PREFIX}ENV or create the file")
    try:
        sections = {name.lower() for name, value in tomllib.loads(toml_file.read_text(encoding="utf-8")).items()
                    if isinstance(value, dict)}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{toml_file}: cannot read: {exc}") from None
    if env.lower() not in sections:
        known = ", ".join(f"[{name}]" for name in sorted(sections | {"default"}))
        raise ConfigError(f"{PREFIX}ENV={env!r}: {toml_file.name} has no [{env}] section; sections: {known} "
                          f"(unset {PREFIX}ENV for [default])")


def _layer(values: Mapping[str, Any], label: str, problems: list[str]) -> dict[str, Any]:
    """One layer's values as dynaconf keys: ``[pipeline] plugins`` is ``PIPELINE_PLUGINS``; plugin
    and option names are lower case (``PLUGINS__firewall__allow``)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        head, *rest = key.upper().split("__")
        if head == "PIPELINE":
            table = {"__".join(rest): value} if rest else value
            if not isinstance(table, Mapping):
                problems.append(f"PIPELINE: value {value!r} from {label} is not a table (allowed: pipeline.plugins)")
                continue
            for sub, item in table.items():
                if sub.upper() == "PLUGINS":
                    out[PIPELINE] = item
                else:
                    problems.append(f"PIPELINE__{sub.upper()}: unknown key (allowed: pipeline.plugins)")
        elif head == "PLUGINS" and rest:
            out["__".join([head, *(part.lower() for part in key.split("__")[1:])])] = value
        else:
            out[key.upper()] = value
    return out


def sources(dyn: Any) -> dict[str, str]:
    """Where each value came from, from dynaconf's loading history (newest wins): ``PORT`` and, for
    the TOML file, ``PLUGINS.<plugin>.<option>`` keys. Keys no layer set are absent (default).

    For a nested key set with ``__`` dynaconf records the whole resulting top-level table, so the
    plugin options of the other layers are found by :func:`_option_keys` instead.
    """
    found: dict[str, str] = {}
    for entry in get_history(dyn):
        if entry["loader"] not in ("toml", LAYER) or not isinstance(entry["value"], Mapping):
            continue
        label = Path(entry["identifier"]).name if entry["loader"] == "toml" else str(entry["identifier"])
        for key, value in entry["value"].items():
            found[key.upper()] = label
            if key.upper() == "PLUGINS" and isinstance(value, Mapping) and entry["loader"] == "toml":
                found.update({f"PLUGINS.{plugin.lower()}.{option}": label for plugin, table in value.items()
                              if isinstance(table, Mapping) for option in table})
    return found


def _option_keys(layer: Mapping[str, Any], label: str) -> dict[str, str]:
    """``PLUGINS.<plugin>.<option>`` keys a dotenv or environment layer set, with the layer's name."""
    keys = {}
    for key, value in layer.items():
        head, *path = key.split("__")
        if head != "PLUGINS":
            continue
        tables = {path[0]: value} if path else value if isinstance(value, Mapping) else {}
        for plugin, table in tables.items():
            options = ["__".join(path[1:])] if len(path) > 1 else list(table) if isinstance(table, Mapping) else []
            keys.update({f"PLUGINS.{plugin.lower()}.{option.lower()}": label for option in options})
    return keys


def _unknown(dyn: Any) -> list[str]:
    problems, found = [], sources(dyn)
    for key, value in dyn.as_dict(internal=False).items():
        if key in SETTING_FIELDS or key in INTERNAL:
            continue
        if key == "PLUGINS":
            tables = value if isinstance(value, Mapping) else {"": value}
            problems += [f"PLUGINS{'__' + name.upper() if name else ''}: value {table!r} is not a table of "
                         "plugin options" for name, table in tables.items() if not isinstance(table, Mapping)]
            continue
        close = difflib.get_close_matches(key, SETTING_FIELDS, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        problems.append(f"{PREFIX}{key}: unknown setting from {found.get(key, 'default')}{hint}")
    return problems


def _settings(dyn: Any, found: Mapping[str, str]) -> Settings:
    values: dict[str, Any] = {}
    for name, f in SETTING_FIELDS.items():
        value = dyn.get(name)
        values[f.name] = tuple(value) if str(f.type).startswith("tuple") else value
    plugins = dyn.as_dict(internal=False).get("PLUGINS") or {}
    options = {plugin.lower(): dict(table) for plugin, table in plugins.items()}
    where = {name: found.get(name, "default") for name in SETTING_FIELDS}
    where.update({key: found.get(key, "default") for plugin, table in options.items()
                  for key in (f"PLUGINS.{plugin}.{option}" for option in table)})
    return Settings(**values, plugin_options=options, sources=where)


# -- validators made from the declarations ------------------------------------------------


def _says(tail: str) -> dict[str, str]:
    line = f"{PREFIX}{{name}}: invalid value {{value!r}}: {tail}"
    return {"operations": line, "condition": line}


_REFUSED = object()


def _typed(name: str, text: str | None, label: str, problems: list[str]) -> Any:
    """An environment value typed as dynaconf does; a dynaconf marker it cannot apply (``@int x``,
    ``@json 01``) is one problem line, and the value is left out."""
    try:
        value = parse_conf_data(boolean_fix(text or ""), tomlfy=True)
    except DynaconfParseError as exc:
        problems.append(f"{name}: value {text!r} from {label}: {exc}; allowed: a plain value, or a marker "
                        "with a value it accepts (@int 3, @json [1])")
        return _REFUSED
    if isinstance(value, Lazy):  # @format / @jinja templates would fail later, far from their source
        problems.append(f"{name}: value {text!r} from {label}: templates (@format, @jinja) are not supported; "
                        "allowed: a plain value")
        return _REFUSED
    return value


def _to_bool(value: Any) -> Any:
    text = str(value).strip().lower()
    if isinstance(value, int | str) and not isinstance(value, bool) and text in _TRUE | _FALSE:
        return text in _TRUE
    return value


def _to_number(kind: type) -> Callable[[Any], Any]:
    def cast(value: Any) -> Any:
        if isinstance(value, bool):
            return value
        try:
            number = float(value) if isinstance(value, str) else value
        except ValueError:
            return value
        if kind is int and isinstance(number, float) and number.is_integer():
            return int(number)
        return float(number) if kind is float and isinstance(number, int) else number
    return cast


def _to_list(kind: str | None) -> Callable[[Any], Any]:
    def cast(value: Any) -> Any:
        items = _items(value)
        if items is None:
            return value
        return [item.lower() for item in items] if kind == "hostnames" else items
    return cast


def _items(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple):
        return [str(part).strip() for part in value if str(part).strip()]
    return None


def _is_cidr(item: str) -> bool:
    try:
        ipaddress.ip_network(item, strict=False)
    except ValueError:
        return False
    return True


ITEM_CHECKS: dict[str, tuple[Callable[[str], bool], str]] = {
    "cidrs": (_is_cidr, "is not a CIDR; allowed: comma-separated CIDRs such as 10.0.0.0/8,::1/128"),
    "hostnames": (lambda item: bool(_HOSTNAME.fullmatch(item)),
                  "is not a host name; allowed: names such as codexlb.internal, without scheme, port or path"),
}


def _each_item(name: str, kind: str) -> Callable[[Any], bool]:
    """A condition that names the first bad item (dynaconf's message template cannot)."""
    ok, why = ITEM_CHECKS[kind]

    def condition(value: Any) -> bool:
        bad = next((item for item in _items(value) or [] if not ok(item)), None)
        if bad is not None:
            raise ValidationError(f"{PREFIX}{name}: invalid value {value!r}: {bad!r} {why}")
        return True
    return condition


def _to_text(value: Any) -> Any:
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def database_url(value: str) -> str:
    """The URL with its driver made async (``postgresql`` -> ``postgresql+asyncpg``) and ``~`` expanded."""
    scheme, _, rest = value.partition("://")
    scheme = _DRIVERS[scheme]
    if scheme.startswith("sqlite") and rest.startswith("/~"):
        rest = "/" + os.path.expanduser(rest[1:])
    return f"{scheme}://{rest}"


def _known_driver(value: Any) -> bool:
    scheme, sep, _ = str(value).partition("://")
    return bool(sep) and scheme in _DRIVERS


def _has_control(value: str) -> bool:
    """Whether a text holds a control character (no path has one; dynaconf mangles such values)."""
    return any(unicodedata.category(c) == "Cc" for c in value)


def _data_dir(dyn: Any) -> Path:
    """``DATA_DIR`` for the defaults built from it; a value that is no text or no path (reported on its
    own) gives way to the default, so the settings built from it do not fail as well."""
    value = _to_text(dyn.DATA_DIR)
    ok = isinstance(value, str) and not _has_control(value)
    return Path(value if ok else str(SETTING_FIELDS["DATA_DIR"].default))


def _default(f: Field[Any]) -> Any:
    if f.name == "database_url":
        return lambda dyn, _: f"sqlite+aiosqlite:///{_data_dir(dyn) / 'store.db'}"
    if f.name == "encryption_key_file":
        return lambda dyn, _: str(_data_dir(dyn) / "encryption.key")
    if f.default is not MISSING:
        return f.default
    factory: Callable[[], Iterable[Any]] = f.default_factory  # type: ignore[assignment]
    return list(factory())


def _not_bool(value: Any) -> bool:
    return not isinstance(value, bool)


def validators_for(name: str, f: Field[Any]) -> Iterable[Validator]:
    """Dynaconf validators for one declared setting: its default, type, limits and kind."""
    meta, typ, kind = f.metadata, str(f.type), f.metadata.get("kind")
    if typ == "bool":
        yield Validator(name, default=_default(f), cast=_to_bool, is_type_of=bool,
                        messages=_says("allowed: true or false"))
    elif typ in ("int", "float"):
        number = int if typ == "int" else float
        typed = {"is_type_of": number, "condition": _not_bool}
        yield Validator(name, default=_default(f), cast=_to_number(number),
                        messages=_says(f"allowed: a number ({typ})"), **typed)
        low, high = meta.get("min"), meta.get("max")
        bounds = {op: limit for op, limit in (("gte", low), ("lte", high)) if limit is not None}
        if bounds:
            span = f"{'-inf' if low is None else low}..{'inf' if high is None else high}"
            yield Validator(name, when=Validator(name, **typed), **bounds, messages=_says(f"allowed: {span}"))
    elif typ.startswith("tuple"):
        if kind in ITEM_CHECKS:
            yield Validator(name, condition=_each_item(name, kind))
        yield Validator(name, default=_default(f), cast=_to_list(kind), is_type_of=list,
                        messages=_says("allowed: a comma-separated string or a list"))
    else:
        yield Validator(name, default=_default(f), cast=_to_text, is_type_of=str, messages=_says("allowed: a string"))
        text = Validator(name, is_type_of=str)
        if meta.get("choices"):
            choices = meta["choices"]
            yield Validator(name, when=text, cast=lambda v: v.upper() if v.upper() in choices else v,
                            is_in=choices, messages=_says(f"allowed: {', '.join(choices)}"))
        if kind == "url":
            yield Validator(name, when=text, startswith=("http://", "https://"),
                            messages=_says("allowed: an http:// or https:// URL"))
        if kind == "db_url":
            yield Validator(name, when=text, condition=_known_driver, messages=_says(
                "unknown database driver; allowed: sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER:PASS@HOST:PORT/DB"))
            yield Validator(name, when=Validator(name, condition=_known_driver), cast=database_url)
        if kind == "path":
            yield Validator(name, when=text, condition=lambda v: not _has_control(v),
                            messages=_says("allowed: a path without control characters"))
            yield Validator(name, when=text, cast=os.path.expanduser)


VALIDATORS = [validator for name, f in SETTING_FIELDS.items() for validator in validators_for(name, f)]
