"""Plugin loading: resolution order, registration order, start-up checks."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from codexlb import hookimpl
from codexlb.errors import ConfigError, PluginError
from codexlb.hooks import Hooks
from codexlb.plugin_loader import make_plugin_manager, resolve
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
