"""The C allocator's tuning (glibc): big blocks keep their own mappings, free heap pages go back."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import subprocess
import sys
import weakref

import pytest

from codexlb import memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tuning is Linux-only")


def test_the_machine_runs_glibc_so_the_tuning_applies() -> None:
    assert memory.GLIBC is not None
    assert memory.tune_allocator() is True


LARGE_BLOCK_CHECK = """
import ctypes, sys
from codexlb import memory
libc = memory.GLIBC
def mmapped(block):  # glibc's IS_MMAPPED bit in the chunk's size word, just before the block
    return bool(ctypes.c_size_t.from_address(block - ctypes.sizeof(ctypes.c_size_t)).value & 0x2)
if sys.argv[1] == "tuned":
    memory.tune_allocator()
big = libc.malloc(4 * memory.MB)
big_mapped = mmapped(big)
libc.free(big)  # untuned, glibc now serves blocks up to 4 MB from the heap
print(big_mapped, mmapped(libc.malloc(memory.MB)))
"""


@pytest.mark.parametrize(("mode", "later_mapped"), [("tuned", True), ("untuned", False)])
def test_a_freed_large_block_does_not_move_later_large_blocks_onto_the_heap(mode: str, later_mapped: bool) -> None:
    """In a fresh process: a heap that earlier work left with free megabytes would serve any block."""
    out = subprocess.run([sys.executable, "-c", LARGE_BLOCK_CHECK, mode], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    assert out == ["True", str(later_mapped)]


def test_free_pages_inside_the_heap_are_released() -> None:
    libc = memory.GLIBC
    assert libc is not None and memory.tune_allocator()
    blocks = [libc.malloc(64 * 1024) for _ in range(256)]  # 16 MB of heap blocks, under the mmap threshold
    try:
        for block in blocks[:-1]:
            libc.free(block)  # the last one stays, so the hole is not at the heap's top
        assert memory.heap_stats()["free"] >= 8 * memory.MB
        assert memory.release_free_memory() is True
    finally:
        libc.free(blocks[-1])


class _Node:
    self_ref: _Node


async def test_the_reclaim_loop_collects_old_cyclic_garbage_then_releases(monkeypatch: pytest.MonkeyPatch) -> None:
    released = asyncio.Event()

    def release() -> bool:
        released.set()
        return True

    monkeypatch.setattr(memory, "release_free_memory", release)
    node = _Node()
    node.self_ref = node
    probe = weakref.ref(node)
    gc.collect()  # it survives, so it now sits in the oldest generation
    del node  # garbage only a full collection finds
    assert probe() is not None
    task = asyncio.create_task(memory.reclaim_loop(0.001))
    try:
        await asyncio.wait_for(released.wait(), 10)
    finally:
        task.cancel()
    assert probe() is None


def test_heap_stats_are_byte_counts() -> None:
    stats = memory.heap_stats()
    assert set(stats) == {"used", "mapped", "free"}
    assert all(isinstance(v, int) for v in stats.values())
    assert stats["used"] >= stats["mapped"]
    assert ctypes.sizeof(memory._MallInfo2) == 10 * ctypes.sizeof(ctypes.c_size_t)
