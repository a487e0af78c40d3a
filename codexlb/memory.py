"""Memory of a long-running server: collect old garbage and give back what bursts needed.

Resident memory climbed in steps during a soak (``bench/RESULTS.md``, "Soak"), for three reasons:

- Garbage in reference cycles that lived long enough to reach the collector's oldest generation
  (a pooled connection, once closed) waits for a full collection. Requests free most of what they
  allocate, so the collector's counts grow slowly and full collections came less than once in ten
  minutes at 100 requests/s. :func:`reclaim_loop` runs one every :data:`RECLAIM_INTERVAL_SECONDS`
  (it walks only what was not frozen at start-up: :func:`codexlb.app.settle_heap`).

- After a large block (a multi-megabyte SSE event, say) is freed, glibc raises its mmap threshold
  to that block's size, so later blocks up to that size come from the heap instead of their own
  mappings, and the heap fragments around them (glibc). :func:`tune_allocator` fixes the threshold
  at glibc's own starting value, which turns that adjustment off.
- Free memory in the middle of a heap is only returned by ``malloc_trim`` (glibc).
  :func:`reclaim_loop` calls it after each collection, in a worker thread (it takes the heap's
  lock, not the GIL).

Without glibc (musl, macOS) only the collections run.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
"""``mallopt`` parameter numbers (glibc's ``malloc.h``)."""
MMAP_THRESHOLD_BYTES = 128 * 1024
"""Blocks from this size get their own mapping, returned to the system when freed (glibc's default)."""
TRIM_THRESHOLD_BYTES = 128 * 1024
"""Free memory at a heap's top above this is returned at once (glibc's default, fixed here because
setting the mmap threshold stops it following that threshold)."""
RECLAIM_INTERVAL_SECONDS = 60.0
MB = 1 << 20


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
        libc.malloc_trim  # noqa: B018
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.malloc.argtypes, libc.malloc.restype = [ctypes.c_size_t], ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.mallinfo2.restype = _MallInfo2
    return libc


GLIBC = _glibc()


def tune_allocator() -> bool:
    """Fix glibc's mmap and trim thresholds for this process; ``False`` when not on glibc."""
    if GLIBC is None:
        return False
    return bool(GLIBC.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and \
        bool(GLIBC.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


def heap_stats() -> dict[str, int]:
    """Bytes in the C heap: ``used`` in blocks (``mapped`` of it in blocks with their own mapping), and
    ``free`` inside the heaps; empty when not on glibc."""
    if GLIBC is None:
        return {}
    info = GLIBC.mallinfo2()
    return {"used": info.uordblks + info.hblkhd, "mapped": info.hblkhd, "free": info.fordblks}


def release_free_memory() -> bool:
    """Return the heaps' free pages to the system; whether any were returned."""
    return GLIBC is not None and bool(GLIBC.malloc_trim(0))


async def reclaim_loop(interval: float = RECLAIM_INTERVAL_SECONDS) -> None:
    """Every ``interval`` seconds: a full garbage collection, then :func:`release_free_memory` off the loop."""
    while True:
        await asyncio.sleep(interval)
        gc.collect()
        if GLIBC is not None:
            await asyncio.to_thread(release_free_memory)
