"""Docs stay in step with the code: hooks, settings, exports, pm.hook confinement."""

from __future__ import annotations

import importlib.util
import inspect
import re
from dataclasses import fields
from pathlib import Path

import codexlb
from codexlb import hookspecs
from codexlb.settings import PREFIX, Settings

ROOT = Path(__file__).resolve().parents[1]


def spec_functions() -> dict[str, object]:
    return {n: f for n, f in vars(hookspecs).items() if hasattr(f, "codexlb_spec")}


def test_hooks_md_is_generated_from_hookspecs() -> None:
    spec = importlib.util.spec_from_file_location("gen_hooks", ROOT / "docs" / "gen_hooks.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert (ROOT / "docs" / "hooks.md").read_text() == gen.render(), \
        "docs/hooks.md is stale: run python docs/gen_hooks.py"


def test_every_hook_has_an_example() -> None:
    for name, fn in spec_functions().items():
        assert "Example::" in (inspect.getdoc(fn) or ""), f"hook {name} has no example in its docstring"


def test_every_hook_documented_with_all_arguments() -> None:
    doc = (ROOT / "docs" / "hooks.md").read_text()
    for name, fn in spec_functions().items():
        args = ", ".join(inspect.signature(fn).parameters)  # type: ignore[arg-type]
        assert f"## `{name}({args})`" in doc, f"docs/hooks.md lacks a heading for {name}({args})"
        assert inspect.getdoc(fn), f"{name} has no docstring"


def test_every_setting_in_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for f in fields(Settings):
        if f.name in ("sources", "plugin_options"):
            continue
        assert f"`{PREFIX}{f.name.upper()}`" in readme, f"README lacks {PREFIX}{f.name.upper()}"


def test_all_matches_exports() -> None:
    import types

    public = {n for n, v in vars(codexlb).items()
              if not n.startswith("_") and n != "annotations" and not isinstance(v, types.ModuleType)}
    assert set(codexlb.__all__) - {"create_app", "load_settings"} == public


def test_pm_hook_only_in_hooks_module() -> None:
    offenders = [p for p in [*ROOT.joinpath("codexlb").rglob("*.py"), *ROOT.joinpath("plugins").rglob("*.py")]
                 if p.name != "hooks.py" and re.search(r"\bpm\.hook\.", p.read_text())]
    assert offenders == []


def test_plugin_docstrings_mention_their_options() -> None:
    for path in ROOT.joinpath("plugins").glob("*.py"):
        if path.name.startswith("_"):
            continue
        source = path.read_text()
        doc = source.split('"""')[1] if '"""' in source else ""
        assert doc.strip(), f"{path.name} has no module docstring"
        for option in set(re.findall(r'config\.get\("([a-z_]+)"', source)):
            assert option in doc, f"{path.name}: option {option!r} not documented in the module docstring"


def test_default_plugin_list_has_one_source() -> None:
    from plugins import BUILTIN, DEFAULT_PLUGINS

    readme = (ROOT / "README.md").read_text()
    table = re.findall(r"^\| `([a-z_]+)` \| [a-z]+ \|", readme, flags=re.M)
    assert tuple(table) == DEFAULT_PLUGINS == tuple(BUILTIN), "README's plugin table is not the default pipeline"
    row = re.search(r"^\| `CODEX_LB_PIPELINE_PLUGINS` \| list \| `([^`]+)`", readme, flags=re.M)
    assert row is not None and tuple(row.group(1).split(",")) == DEFAULT_PLUGINS
    snippet = re.search(r"\[default\.pipeline\]\nplugins = \[(.*?)\]", readme, flags=re.S)
    assert snippet is not None and tuple(re.findall(r'"([a-z_]+)"', snippet.group(1))) == DEFAULT_PLUGINS
    toml = (ROOT / "settings.toml").read_text()
    assert not re.search(r"^plugins\s*=", toml, flags=re.M), "settings.toml repeats the default plugin list"
    assert Settings().pipeline_plugins == DEFAULT_PLUGINS
