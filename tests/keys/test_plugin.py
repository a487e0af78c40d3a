"""The api_keys plugin on its own: how keys are presented, static keys, options, fail-closed start."""

from __future__ import annotations

import pytest

from codexlb import ConfigError
from codexlb.settings import Settings
from codexlb.testing import make_flow
from codexlb.testing.secrets import register_secret
from plugins.api_keys import ApiKeys

KEY = "sk-codexlb-test-key-0123456789abcdef"
register_secret(KEY)


def make_plugin(api_keys: tuple[str, ...] = (), config: dict[str, object] | None = None) -> ApiKeys:
    plugin = ApiKeys()
    plugin.configure(config or {}, Settings(api_keys=api_keys))
    plugin.ring.load([])  # what startup does with an empty database
    return plugin


@pytest.mark.parametrize(("headers", "ok"), [
    ({"authorization": f"Bearer {KEY}"}, True), ({"authorization": f"bearer   {KEY} "}, True),
    ({"x-api-key": KEY}, True), ({"authorization": "Bearer wrong", "x-api-key": KEY}, True),
    ({"authorization": f"Basic {KEY}"}, False), ({"authorization": KEY}, False), ({}, False),
    ({"authorization": "Bearer "}, False), ({"x-api-key": KEY[:-1]}, False), ({"x-api-key": KEY + "x"}, False),
    ({"authorization": "Bearer ünïcödé"}, False),
])
async def test_static_keys(headers: dict[str, str], ok: bool) -> None:
    plugin = make_plugin(("other-key-1", KEY))
    flow = make_flow(headers={"content-type": "application/json", **headers})
    await plugin.admit_request(flow)
    if ok:
        assert flow.response is None and flow.api_key_id is not None and flow.api_key_id.startswith("static:")
        assert KEY not in str(flow.request.headers)  # our credential is not forwarded
    else:
        assert flow.response is not None and flow.response.status == 401
        assert flow.error_code == "invalid_api_key"
        assert flow.response.header("www-authenticate") == 'Bearer realm="codexlb"'
        assert KEY.encode() not in flow.response.body  # type: ignore[operator]


async def test_no_keys_means_no_check() -> None:
    flow = make_flow(headers={"authorization": "Bearer anything"})
    plugin = make_plugin()
    assert plugin.enforces_admission == {"api_keys"}  # keys are checked as soon as any exists (bind check)
    await plugin.admit_request(flow)
    assert flow.response is None and flow.request.headers["authorization"] == "Bearer anything"
    assert flow.api_key_id is None


async def test_refuses_everything_until_keys_are_loaded() -> None:
    plugin = ApiKeys()
    plugin.configure({}, Settings())
    flow = make_flow(headers={"x-api-key": KEY})
    await plugin.admit_request(flow)
    assert flow.response is not None and flow.response.status == 503 and flow.error_code == "api_keys_not_loaded"


@pytest.mark.parametrize("config", [{"sync_interval_seconds": 0}, {"sync_interval_seconds": "soon"},
                                    {"sync_every": 2}])
def test_bad_options_are_config_errors(config: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=r"\[plugins.api_keys\]"):
        make_plugin(config=config)
