"""``codexlb serve`` with a sampler beside it, for the soak: ``python -m bench.soak_serve STATS_FILE``.

Runs the same ``serve()`` as the CLI (settings from the environment, uvloop, Hypercorn) and, every
second, appends ``{"t", "tasks", "lag_ms"}`` to ``STATS_FILE``: the number of asyncio tasks and the
worst event-loop lag seen in that second (how late a 50 ms sleep woke up). Nothing in the proxy
changes for this; RSS and descriptors are read from ``/proc`` by the soak itself.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from codexlb.cli.serve import serve
from codexlb.settings import load_settings

TICK = 0.05


async def sample(path: Path) -> None:
    loop = asyncio.get_running_loop()
    with path.open("a") as out:
        while True:
            worst, until = 0.0, loop.time() + 1.0
            while loop.time() < until:
                start = loop.time()
                await asyncio.sleep(TICK)
                worst = max(worst, loop.time() - start - TICK)
            out.write(json.dumps({"t": time.time(), "tasks": len(asyncio.all_tasks()),
                                  "lag_ms": round(worst * 1000, 3)}) + "\n")
            out.flush()


async def main(stats: Path) -> int:
    settings = load_settings()
    sampler = asyncio.ensure_future(sample(stats))
    try:
        return await serve(settings)
    finally:
        sampler.cancel()


if __name__ == "__main__":
    import uvloop

    sys.exit(uvloop.run(main(Path(sys.argv[1]))))
