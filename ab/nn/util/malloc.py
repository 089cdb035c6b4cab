"""glibc malloc settings for tensor work: keep large freed buffers in the heap instead of returning
them to the kernel and faulting them back in on the next step. PyTorch's CPU allocator does not
cache, so a training step otherwise costs tens of thousands of page faults (measured:
``benchmarks/allocator.py``)."""
from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024   # glibc's largest: allocations below it come from the heap
TRIM_THRESHOLD = 256 * 1024 * 1024  # keep up to this much free heap before trimming


def tune_for_tensors() -> bool:
    """Apply the settings to this process; False where glibc is not there (they are an optimisation)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
