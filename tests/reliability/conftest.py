"""One fake upstream and one proxy (real processes) per test module, with short timeouts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.reliability.procs import FakeProc, Proc, start_fake, start_proxy

MATRIX_SETTINGS = {
    "stream_idle_timeout_seconds": 1.0, "upstream_connect_timeout_seconds": 2.0,
    "token_refresh_timeout_seconds": 2.0, "max_sse_event_bytes": 65536,
    "upstream_first_byte_timeout_seconds": 1.0, "upstream_first_byte_total_seconds": 4.0, "route_headers": "true",
}
"""Short timeouts so a hang costs a second, a small event cap so an oversized event is cheap, and route headers
on so a case can read which account answered (``x-codexlb-account``)."""


@dataclass
class Servers:
    fake: FakeProc
    proxy: Proc
    url: str


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    folder = tmp_path_factory.mktemp("reliability")
    fake = start_fake(folder / "fake", "--accounts", "0", "--events", "8")
    try:
        proxy, url = start_proxy(folder / "proxy", fake, **MATRIX_SETTINGS)
        try:
            yield Servers(fake, proxy, url)
        finally:
            proxy.stop()
    finally:
        fake.stop()
