"""Fixtures for end-to-end proxy tests: captured client requests and a running proxy."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from codexlb.testing.fake_upstream import FakeUpstream
from codexlb.testing.harness import ProxyHarness, proxy_server

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
# One frozen clock for the fake and its twin (SSE bytes carry timestamps), taken from now so the tokens it
# mints are valid against the proxy's real clock on any date.
FIXED_CLOCK = float(int(time.time()))
PIPELINE = ("decompress", "select_sticky", "select_least_used", "select_round_robin", "upstream", "sse_limit")


def load_fixture(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def codex_posts() -> list[Path]:
    return sorted(FIXTURES.joinpath("codex-cli").glob("*/*-POST-*.json"))


def request_headers(fixture: dict[str, Any]) -> dict[str, str]:
    """The captured headers minus those the client library sets itself."""
    skip = {"host", "content-length", "connection", "accept-encoding", "transfer-encoding"}
    out: dict[str, str] = {}
    for line in fixture["headers"]:
        name, _, value = line.partition(": ")
        if name.lower() not in skip:
            out[name.lower()] = value
    return out


@pytest.fixture(name="proxy")
async def _proxy(tmp_path: Path) -> AsyncIterator[ProxyHarness]:
    async with FakeUpstream(clock=lambda: FIXED_CLOCK) as fake, \
            proxy_server(tmp_path, accounts=2, fake=fake, pipeline=PIPELINE) as proxy:
        yield proxy
