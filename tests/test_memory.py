"""The CPU allocator setting the trainer applies: freed activations stay in the process."""

import ctypes.util
import json
import subprocess
import sys

import pytest

glibc = sys.platform.startswith("linux") and "libc.so.6" in (ctypes.util.find_library("c") or "")

# Runs in a fresh process: in the test session's own heap, earlier tests' freed memory would
# already be resident and absorb the allocation.
PROBE = """
import json, resource, sys, torch
from metakit.engine.memory import keep_freed_memory
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20
tuned = keep_freed_memory() and keep_freed_memory() if sys.argv[1] == "tune" else None
before = rss()
x = torch.ones(50 * 2**20)  # 200 MiB, far above glibc's default mmap threshold (<= 32 MiB)
held = rss() - before
del x
print(json.dumps({"tuned": tuned, "held": held, "after_free": rss() - before}))
"""


def probe(mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


@pytest.mark.skipif(not glibc, reason="mallopt is a glibc feature")
def test_freed_large_tensor_stays_resident_for_reuse() -> None:
    default, tuned = probe("default"), probe("tune")
    assert tuned["tuned"] is True
    assert default["held"] > 150 and tuned["held"] > 150
    assert default["after_free"] < 50  # glibc unmaps the block: the next iteration faults it in
    assert tuned["after_free"] > 150  # kept for reuse
