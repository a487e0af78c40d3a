"""Tests of the example strategy: the hook alone, then enabled from settings.toml in a running proxy."""

from __future__ import annotations

import sys
import textwrap
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from codexlb import ConfigError, plugin_loader
from codexlb.settings import load_settings
from codexlb.testing import make_account, make_flow
from codexlb.testing.harness import proxy_server

HERE = Path(__file__).parent
if str(HERE) not in sys.path:  # the example is not installed: import it from its folder
    sys.path.insert(0, str(HERE))
from codexlb_most_remaining import MostRemaining  # noqa: E402

BODY = {"model": "gpt-5.5", "stream": True, "store": False, "input": "say hi"}


@pytest.mark.asyncio
async def test_prefers_most_remaining() -> None:
    a = make_account(id="a", weekly_remaining_pct=40)
    b = make_account(id="b", weekly_remaining_pct=70)
    flow = make_flow()
    assert await MostRemaining().select_account(flow, [a, b]) is b
    assert str(flow.route) == "most_remaining:most-weekly-remaining"


@pytest.mark.asyncio
async def test_below_the_floor_hands_over() -> None:
    plugin = MostRemaining()
    plugin.configure({"floor_pct": 50})
    assert await plugin.select_account(make_flow(), [make_account(weekly_remaining_pct=40)]) is None


@pytest.mark.parametrize("value", [-1, 101, "ten", True])
def test_bad_floor(value: object) -> None:
    with pytest.raises(ConfigError, match=r"\[plugins.select_most_remaining\] floor_pct"):
        MostRemaining().configure({"floor_pct": value})


def write_settings(folder: Path, name: str, floor_pct: float) -> None:
    (folder / "settings.toml").write_text(textwrap.dedent(f"""
        [default.pipeline]
        plugins = ["{name}", "select_round_robin", "upstream"]

        [default.plugins."{name}"]
        floor_pct = {floor_pct}
    """))


async def routed_by_it(tmp_path: Path, name: str) -> MostRemaining:
    """Serve with the settings in ``tmp_path``; one request must be routed by the example."""
    assert load_settings(tmp_path, environ={}).pipeline_plugins[0] == name
    async with proxy_server(tmp_path, accounts=2, pipeline=None) as proxy:
        response = await proxy.client.post("/backend-api/codex/responses", json=BODY)
        assert response.status_code == 200, response.text
        assert response.headers["x-codexlb-route"] == "most_remaining:most-weekly-remaining"
        plugin = proxy.lb.pm.get_plugin(name)
        assert isinstance(plugin, MostRemaining)
        return plugin


@pytest.mark.asyncio
async def test_enabled_by_module_attr(tmp_path: Path) -> None:
    write_settings(tmp_path, "codexlb_most_remaining:MostRemaining", 12)
    assert (await routed_by_it(tmp_path, "codexlb_most_remaining:MostRemaining")).floor_pct == 12


@pytest.mark.asyncio
async def test_enabled_by_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the distribution were installed: the entry point comes from its pyproject.toml."""
    declared = tomllib.loads((HERE / "pyproject.toml").read_text())["project"]["entry-points"]["codexlb"]
    ours = [EntryPoint(name, value, plugin_loader.ENTRY_POINT_GROUP) for name, value in declared.items()]
    monkeypatch.setattr(plugin_loader, "entry_points", lambda group: ours if group == "codexlb" else [])
    write_settings(tmp_path, "select_most_remaining", 12)
    assert (await routed_by_it(tmp_path, "select_most_remaining")).floor_pct == 12
