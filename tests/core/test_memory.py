"""The C allocator's tuning (glibc): big blocks keep their own mappings, free heap pages go back."""

from __future__ import annotations

import ctypes
import sys

import pytest

from codexlb import memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tuning is Linux-only")


def test_the_machine_runs_glibc_so_the_tuning_applies() -> None:
    assert memory.GLIBC is not None
    assert memory.tune_allocator() is True


def test_a_freed_large_block_does_not_move_later_large_blocks_onto_the_heap() -> None:
    libc = memory.GLIBC
    assert libc is not None and memory.tune_allocator()
    big = libc.malloc(4 * memory.MB)
    libc.free(big)  # untuned, glibc would now serve blocks up to 4 MB from the heap
    mapped_before = memory.heap_stats()["mapped"]
    block = libc.malloc(memory.MB)
    try:
        assert memory.heap_stats()["mapped"] >= mapped_before + memory.MB
    finally:
        libc.free(block)
    assert memory.heap_stats()["mapped"] < mapped_before + memory.MB


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


async def test_the_trim_loop_releases_every_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    calls: list[int] = []
    done = asyncio.Event()

    def release() -> bool:
        calls.append(1)
        if len(calls) == 3:
            done.set()
        return True

    monkeypatch.setattr(memory, "release_free_memory", release)
    task = asyncio.create_task(memory.trim_loop(0.001))
    await asyncio.wait_for(done.wait(), 10)
    task.cancel()
    assert len(calls) >= 3


def test_heap_stats_are_byte_counts() -> None:
    stats = memory.heap_stats()
    assert set(stats) == {"used", "mapped", "free"}
    assert all(isinstance(v, int) for v in stats.values())
    assert stats["used"] >= stats["mapped"]
    assert ctypes.sizeof(memory._MallInfo2) == 10 * ctypes.sizeof(ctypes.c_size_t)
