"""Keep freed memory in the process heap for reuse: a training step allocates the same large
buffers every step (the full softmax's (N, V) block, the LSTM's per-step buffers, gradients).

glibc serves an allocation above its mmap threshold (128 KiB, adapting up to 32 MiB) with a
fresh mmap and unmaps it on free, so every step pays a page fault per 4 KiB of each such
buffer again. Measured on the 2-core box: a fresh 51 MB (1280 x 10,002 fp32) buffer filled
once took 18 ms and 12,500 page faults; the same with the heap kept, 6 ms; the tiny preset's
training step with the full softmax went from ~150 to ~115 ms. Not every re-allocation lands on
freed pages (small allocations split the heap; 1 to 3 of 4 did in tests/unit/test_malloc.py). The cost: the process keeps its
peak heap instead of returning it to the system between steps, which a training process
reaches again on the next step anyway.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_MAX = -4
_applied = False


def keep_freed_memory() -> bool:
    """Large allocations come from the heap and freed memory is not trimmed back to the system
    (glibc mallopt; M_MMAP_MAX = 0, M_TRIM_THRESHOLD = 1 GiB). Once per process; True when in
    effect. A no-op off glibc, or with ELMO_DIST_SYSTEM_MALLOC=1 in the environment."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("ELMO_DIST_SYSTEM_MALLOC") == "1":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    return _applied
