"""Plugin loading: resolution order, registration order, start-up checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from codexlb import hookimpl
from codexlb.errors import ConfigError, PluginError
from codexlb.hooks import Hooks
from codexlb.plugin_loader import make_plugin_manager, resolve, shadowed_strategies
from codexlb.testing import make_account, make_flow

BASE = ["select_round_robin", "upstream"]


def test_unknown_name_lists_close_matches() -> None:
    with pytest.raises(ConfigError) as info:
        make_plugin_manager(["select_stiky", *BASE])
    assert "unknown plugin 'select_stiky'; did you mean select_sticky" in str(info.value)


def test_module_attr_and_class_instantiated_per_manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "third_party_plugin.py").write_text(textwrap.dedent("""
        from codexlb import hookimpl
        class Picker:
            calls = 0
            @hookimpl
            async def select_account(self, flow, candidates):
                type(self).calls += 1
                return None
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    first, second = resolve("third_party_plugin:Picker"), resolve("third_party_plugin:Picker")
    assert first is not second and type(first).__name__ == "Picker"


def test_import_error_is_clear() -> None:
    with pytest.raises(PluginError, match="cannot be imported"):
        resolve("no_such_module_xyz:Thing")


def test_duplicates_refused() -> None:
    with pytest.raises(ConfigError, match="listed twice: upstream"):
        make_plugin_manager(["upstream", *BASE])


def test_misspelled_hook_fails_check_pending() -> None:
    class Typo:
        @hookimpl
        async def select_acount(self, flow):  # noqa: ANN001 - deliberately wrong name
            return None

    with pytest.raises(PluginError, match="select_acount"):
        make_plugin_manager(BASE, [Typo()])


def test_async_wrapper_refused() -> None:
    class Wrapper:
        @hookimpl(wrapper=True)
        def admit_request(self, flow):  # noqa: ANN001
            return (yield)

    with pytest.raises(PluginError, match="cannot be a wrapper"):
        make_plugin_manager(BASE, [Wrapper()])


def test_missing_selection_or_upstream_refused() -> None:
    with pytest.raises(ConfigError, match="no enabled plugin implements send_upstream"):
        make_plugin_manager(["select_round_robin"])
    with pytest.raises(ConfigError, match="no enabled plugin implements select_account"):
        make_plugin_manager(["upstream"])


class Recorder:
    def __init__(self, name: str, log: list[str], answer: object = None) -> None:
        self.name, self.log, self.answer = name, log, answer

    @hookimpl
    async def select_account(self, flow, candidates):  # noqa: ANN001
        self.log.append(self.name)
        return self.answer

    @hookimpl
    async def admit_request(self, flow):  # noqa: ANN001
        self.log.append(self.name)
        if self.answer == "reject":
            flow.reject(403, "nope", "no")


async def test_first_listed_called_first_and_firstresult_declines_pass_on() -> None:
    log: list[str] = []
    account = make_account("b")
    pm = make_plugin_manager(BASE, [Recorder("extra", log)])
    hooks = Hooks(pm)
    chosen = await hooks.select_account(make_flow(), [make_account("a"), account])
    # the extra plugin (registered last) declines, round robin decides
    assert log == ["extra"] and chosen is not None


async def test_until_response_stops_at_first_answer() -> None:
    log: list[str] = []
    first, second = Recorder("first", log, "reject"), Recorder("second", log)
    hooks = Hooks(make_plugin_manager(BASE, [second, first]))
    flow = make_flow()
    await hooks.admit_request(flow)
    assert log == ["first"] and flow.response is not None and flow.response.status == 403


async def test_sync_implementations_allowed_for_async_hooks() -> None:
    class Sync:
        @hookimpl
        def select_account(self, candidates):  # noqa: ANN001 - opt-in args, sync
            return candidates[-1]

    hooks = Hooks(make_plugin_manager(BASE, [Sync()]))
    accounts = [make_account("a"), make_account("z")]
    assert await hooks.select_account(make_flow(), accounts) is accounts[-1]


async def test_observer_errors_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        @hookimpl
        async def flow_done(self, flow):  # noqa: ANN001
            raise RuntimeError("boom")

    hooks = Hooks(make_plugin_manager(BASE, [Broken()]))
    await hooks.flow_done(make_flow())
    assert any("failed in flow_done" in r.message for r in caplog.records)


def test_wrappers_chain_first_listed_outermost() -> None:
    order: list[str] = []

    class Wrap:
        def __init__(self, name: str) -> None:
            self.name = name

        @hookimpl
        def wrap_response_stream(self, stream):  # noqa: ANN001
            async def wrapped():  # noqa: ANN202
                order.append(self.name)
                async for chunk in stream:
                    yield chunk
            return wrapped()

    hooks = Hooks(make_plugin_manager(BASE, [Wrap("inner"), Wrap("outer")]))

    async def source():  # noqa: ANN202
        yield b"x"

    import asyncio

    async def consume() -> list[bytes]:
        return [c async for c in hooks.wrap_response_stream(make_flow(), source())]

    assert asyncio.run(consume()) == [b"x"] and order == ["outer", "inner"]


def test_builtin_names_match_modules() -> None:
    from plugins import BUILTIN

    for name, target in BUILTIN.items():
        assert target.split(":")[0] == f"plugins.{name}"
    assert "plugins" in sys.modules


STRATEGY = textwrap.dedent("""
    from codexlb import hookimpl
    class Pick:
        @hookimpl
        async def select_account(self, flow, candidates):
            return None
""")


def run_codexlb(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``codexlb`` command (not ``python -m``, which puts the cwd on sys.path itself)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_LB_") and k != "PYTHONPATH"}
    return subprocess.run([str(Path(sys.executable).with_name("codexlb")), *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=60)


def test_module_attr_plugin_found_in_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "cwd_strategy.py").write_text(STRATEGY)
    (tmp_path / "settings.toml").write_text(
        '[default.pipeline]\nplugins = ["cwd_strategy:Pick", "select_round_robin", "upstream"]\n')
    result = run_codexlb(tmp_path, "plugins", "--json")
    assert result.returncode == 0, result.stderr
    listed = {p["name"]: p["hooks"] for p in json.loads(result.stdout)}
    assert listed["cwd_strategy:Pick"] == ["select_account"]
    assert "never asked" not in result.stderr


def test_strategy_after_an_always_picking_builtin_warns_at_start(tmp_path: Path) -> None:
    (tmp_path / "late_strategy.py").write_text(STRATEGY)
    (tmp_path / "settings.toml").write_text(
        '[default.pipeline]\nplugins = ["select_sticky", "select_least_used", "late_strategy:Pick", "upstream"]\n')
    result = run_codexlb(tmp_path, "check-config")
    assert result.returncode == 0, result.stderr
    assert ("plugin 'late_strategy:Pick' is never asked to select an account: select_least_used, called before "
            "it, always picks one") in result.stderr


def test_shadowed_strategies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "shadow_strategy.py").write_text(STRATEGY)
    monkeypatch.syspath_prepend(str(tmp_path))
    mine = "shadow_strategy:Pick"
    # listed first: asked first; after round robin (trylast): still asked before it
    assert shadowed_strategies(make_plugin_manager([mine, "select_least_used", "upstream"])) == []
    assert shadowed_strategies(make_plugin_manager(["select_round_robin", mine, "upstream"])) == []
    assert caplog.records == []
    late = make_plugin_manager(["select_sticky", "select_least_used", mine, "select_round_robin", "upstream"])
    assert shadowed_strategies(late) == [(mine, "select_least_used")]
    assert [r.levelname for r in caplog.records] == ["WARNING"]
