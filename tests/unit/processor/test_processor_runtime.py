"""Process-wide tuning of the processor (services.processor.runtime)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

# Kafka-record-sized blocks (8 kB) freed while every 16th stays alive: glibc keeps the
# freed pages mapped between the survivors until they are handed back.
FRAGMENTED_HEAP = """
import os
from services.processor.runtime import release_free_memory

def rss_mb():
    pages = int(open("/proc/self/statm").read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20

blocks = [bytes(8000) + bytes([i % 256]) for i in range(30_000)]
kept = blocks[::16]
del blocks
before = rss_mb()
release_free_memory()
print(before, rss_mb(), len(kept))
"""


def test_release_free_memory_hands_freed_pages_back() -> None:
    out = subprocess.run(
        [sys.executable, "-c", FRAGMENTED_HEAP],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    before, after, _ = (float(x) for x in out.stdout.split())
    # ~230 MB allocated, ~15 MB of it still alive.
    assert before > 150
    assert after < before - 100, f"RSS {before:.0f} MB -> {after:.0f} MB"


# Threads that each allocate C-heap blocks; prints how many malloc arenas glibc made.
THREADED_ALLOCATIONS = """
import ctypes, sys, tempfile, threading
from services.processor.runtime import limit_arenas

if sys.argv[1] == "limited":
    assert limit_arenas(2)
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
kept = []
start = threading.Barrier(6)

def allocate():
    start.wait()
    kept.extend(bytes(8000) + bytes([i % 256]) for i in range(200))

threads = [threading.Thread(target=allocate) for _ in range(6)]
for t in threads:
    t.start()
for t in threads:
    t.join()
with tempfile.NamedTemporaryFile(suffix=".xml") as f:
    fp = libc.fopen(f.name.encode(), b"w")
    libc.malloc_info(0, fp)
    libc.fclose(fp)
    print(open(f.name).read().count("<heap nr="))
"""


def _arenas(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", THREADED_ALLOCATIONS, mode],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return int(out.stdout)


def test_limit_arenas_caps_the_heaps_threads_allocate_from() -> None:
    # Without the cap each allocating thread gets an arena of its own (up to 8 per core).
    assert _arenas("default") > 2
    assert _arenas("limited") <= 2
