"""x-codexlb-account / x-codexlb-route reach clients only when CODEX_LB_ROUTE_HEADERS is on."""

from __future__ import annotations

from pathlib import Path

import pytest

from codexlb.settings import load_settings
from codexlb.testing.harness import proxy_server
from tests.proxy.conftest import PIPELINE

BODY = {"model": "gpt-5.5", "input": "hi", "stream": False}


def test_route_headers_off_by_default(tmp_path: Path) -> None:
    assert load_settings(tmp_path, environ={}).route_headers is False
    assert load_settings(tmp_path, environ={"CODEX_LB_ROUTE_HEADERS": "true"}).route_headers is True


@pytest.mark.parametrize("shown", [False, True])
async def test_route_headers_follow_the_setting(tmp_path: Path, shown: bool) -> None:
    async with proxy_server(tmp_path, pipeline=PIPELINE, route_headers=shown) as proxy:
        response = await proxy.client.post("/v1/responses", json=BODY)
    assert response.status_code == 200, response.text
    names = {"x-codexlb-account", "x-codexlb-route"} & set(response.headers)
    assert names == ({"x-codexlb-account", "x-codexlb-route"} if shown else set())
    if shown:
        assert response.headers["x-codexlb-account"] in ("acct1", "acct2")
