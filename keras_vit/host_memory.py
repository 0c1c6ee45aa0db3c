"""`retain_freed_memory`: keep freed host memory in the process for reuse (Linux, glibc).

Eager PyTorch allocates each large temporary with `malloc`: a ViT-Ti/16 MLP activation at batch
32 is a 19 MB buffer, freed a few operations later. glibc serves such requests with fresh
`mmap`ed pages above a (dynamic) size threshold, and hands the top of its heap back to the OS
once enough of it is free; either way the next step's buffers are new pages, and the first
write to each 4 KiB page costs a page fault, which made eager ViT inference measurably slower
on CPUs (figures: benchmarks/RESULTS.md, session 13). XLA (JAX, TensorFlow) reuses its own
buffers and is unaffected.

The setting is process-wide and stays for the process's lifetime: the resident memory stays
at its peak instead of shrinking between steps. So the library never applies it by itself; call
it at the start of an inference script you own (`benchmarks/throughput.py --host-memory retain`
does, for every contender alike). Training steps gain nothing measurable: autograd's buffers
are already mostly reused.
"""

import ctypes
import ctypes.util

# mallopt(3) parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def retain_freed_memory():
    """Make glibc's `malloc` keep freed memory: no heap trimming, no `mmap`ed allocations.

    Returns:
        True where the setting took effect (glibc), False elsewhere (macOS, musl, Windows),
        where it is a no-op.

    Example:

    >>> import keras_vit.host_memory
    >>> keras_vit.host_memory.retain_freed_memory() in (True, False)
    True
    """
    libc = _glibc()
    if libc is None:
        return False
    # Trim the heap only once 2 GiB at its top are free (the largest value mallopt takes);
    # serve every size from the heap, so that freed blocks are reused rather than unmapped.
    trimmed = libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    unmapped = libc.mallopt(_M_MMAP_MAX, 0)
    return bool(trimmed and unmapped)


def _glibc():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 (glibc only; raises AttributeError elsewhere)
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    return libc
