"""The CPU allocator setting the trainer applies: freed activations stay in the process."""

import ctypes.util
import sys

import pytest
import torch

from metakit.engine.memory import keep_freed_memory


def resident_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * 4096 / 2**20


glibc = sys.platform.startswith("linux") and "libc.so.6" in (ctypes.util.find_library("c") or "")


@pytest.mark.skipif(not glibc, reason="mallopt is a glibc feature")
def test_freed_large_tensor_stays_resident_for_reuse() -> None:
    assert keep_freed_memory()
    assert keep_freed_memory()  # idempotent
    before = resident_mb()
    x = torch.ones(50 * 2**20)  # 200 MiB, far above glibc's default mmap threshold (≤ 32 MiB)
    assert resident_mb() - before > 150
    del x
    # by default glibc would munmap the block and RSS would fall back; now it is kept for reuse
    assert resident_mb() - before > 150
