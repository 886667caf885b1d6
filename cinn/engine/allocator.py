"""Keep the memory a training step frees inside the process, so the next step does not page-fault it back in."""

from __future__ import annotations

import ctypes
import platform

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_MAX = -4
LARGEST_INT = 2**31 - 1


def retain_freed_memory() -> bool:
    """Tell glibc's ``malloc`` to reuse freed memory instead of returning it to the operating system.

    PyTorch allocates CPU tensors with plain ``malloc``. Every training step frees its activations (megabytes
    each) in the backward pass, and glibc hands large blocks back to the kernel (``munmap`` for blocks above
    its mmap threshold, heap trimming above its trim threshold), so the next step writes to fresh pages: one
    page fault per 4 KiB, which can make an elementwise op on a fresh tensor several times slower than on reused
    memory (BENCHMARKS.md, "Training speed against the standard PyTorch Glow", Allocator). With
    ``M_MMAP_MAX = 0`` (large blocks come from the heap) and trimming off,
    freed blocks are reused and the process simply stays at its peak size, which it reaches every step anyway.

    Process-wide and permanent: the training engine calls it when it trains on the CPU
    (``train.retain_freed_memory``). The same as ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647`` in
    the environment; jemalloc or tcmalloc through ``LD_PRELOAD`` do the same job. Returns whether the
    setting took effect: ``False`` (and nothing changes) where the C library is not glibc.

    Example:
        >>> retain_freed_memory()  # on Linux with glibc
        True
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, LARGEST_INT) == 1
