"""``codexlb serve`` with a sampler beside it, for the soak: ``python -m bench.soak_serve STATS_FILE``.

Runs the same ``serve()`` as the CLI (settings from the environment, uvloop, Hypercorn) and, every
second, appends a JSON line to ``STATS_FILE``: the number of asyncio tasks, the worst event-loop lag
seen in that second (how late a 50 ms sleep woke up) and where the memory is (:func:`memory`).
Nothing in the proxy changes for this; RSS and descriptors are read from ``/proc`` by the soak itself.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import json
import sys
import threading
import time
from pathlib import Path

from codexlb.cli.serve import serve
from codexlb.memory import heap_stats
from codexlb.settings import load_settings

TICK = 0.05


def _sqlite() -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL("libsqlite3.so.0")
        lib.sqlite3_memory_used.restype = ctypes.c_int64
        return lib
    except OSError:
        return None


SQLITE = _sqlite()
MB = 1 << 20


def memory() -> dict[str, float]:
    """Where the process's memory is, in MB: the C heap in use and free inside it (glibc ``mallinfo2``;
    pymalloc's arenas are outside it, mmapped), SQLite's own heap, Python's live blocks, threads."""
    out: dict[str, float] = {"threads": threading.active_count(), "py_blocks_k": sys.getallocatedblocks() // 1000,
                             "gc_full": gc.get_stats()[2]["collections"]}
    heap = heap_stats()
    if heap:
        out.update({"heap_used_mb": round(heap["used"] / MB, 2), "heap_free_mb": round(heap["free"] / MB, 2)})
    if SQLITE is not None:
        out["sqlite_mb"] = round(SQLITE.sqlite3_memory_used() / MB, 2)
    return out


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
                                  "lag_ms": round(worst * 1000, 3), **memory()}) + "\n")
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
