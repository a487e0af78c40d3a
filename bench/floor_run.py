"""The one ``main`` of the floor servers (``bench.bare_floor``, ``bench.floor_server``, ``bench.asgi_floor``)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config


def run_floor(create: Callable[[str, list[dict[str, Any]]], Any]) -> None:
    """Serve the app ``create(upstream, accounts)`` builds from the ``BENCH_*`` variables (every floor's main)."""
    import uvloop

    accounts = json.loads(Path(os.environ["BENCH_ACCOUNTS"]).read_text())
    config = Config()
    config.bind = [f"127.0.0.1:{os.environ['BENCH_PORT']}"]
    config.accesslog = None
    uvloop.run(serve(create(os.environ["BENCH_UPSTREAM"], accounts), config))
