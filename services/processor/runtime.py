"""Process-wide tuning shared by the processor's entry points (the worker, the replay)."""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable

# Allocations between young collections (CPython's default is 700). The processor keeps a
# large heap of cached states and builds ~100k short-lived objects per batch: with the
# default, collections (and the full ones that walk the whole heap) took ~15 % of its
# time. Reference cycles are still collected, just in fewer, larger passes.
GC_THRESHOLD = (50_000, 20, 10)


def tune_gc() -> None:
    """Freeze what start-up allocated (never collectable garbage) and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def _malloc_trim() -> Callable[[], None]:
    """glibc's malloc_trim(0), or nothing where the C library has none (musl, macOS)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def release() -> None:
        trim(0)  # returns whether anything was released: either way is fine

    return release


release_free_memory = _malloc_trim()
"""Give the C heap's free pages back to the system. A batch's short-lived buffers (Kafka
records, fetched rows) leave free chunks scattered through glibc's heaps that it keeps
mapped: without this the processor's RSS stays at the high-water mark of its busiest
moment."""
