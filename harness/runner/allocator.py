"""The C allocator's state while a case is timed: the one a process settles into, not a fresh one's.

glibc's malloc serves a block of 128 KiB or more with a fresh mmap and unmaps it on free, and
gives back freed memory at the top of its heap beyond 128 KiB, until the process frees one large
mmapped block: then it raises both thresholds to that block's size (up to 32 MiB on 64-bit) and
keeps reusing its pages. A runtime that allocates its intermediate tensors at every call
(torch eager and AOTInductor packages on CPU: no caching allocator there) pays page faults on
every call in a fresh process until that happens, and when it happens depends on what the
process did before: importing torch._inductor (what aoti_load_package does) happens to free such
a block, the runner's leaner AOTI loader does not. Measured on MiniLM s128's static-int8 AOTI
package, 2 threads: about 700 minor faults a call and 15-20% more p50 in a fresh process whose
thresholds never moved, none once they had.

So the runner sets both thresholds at the start, to where glibc's own adjustment stops, and the
figure is the call's steady cost whatever the process imported first. Arenas that allocate once
(onnxruntime, LiteRT, ExecuTorch's planned memory) are unaffected. A user's own MALLOC_* or
GLIBC_TUNABLES settings are left as they are, and a C library other than glibc as it is: the
result's runtime details say which (`allocator`). Standard library only (shipped to devices).
"""
from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
# DEFAULT_MMAP_THRESHOLD_MAX: 4 MiB x sizeof(long), 32 MiB on 64-bit, the most glibc's own
# adjustment reaches (and the most mallopt accepts); trim twice that, as glibc's adjustment sets it
MMAP_THRESHOLD = 4 * 1024 * 1024 * ctypes.sizeof(ctypes.c_long)
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD
ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")


def _settings_from_environment() -> str:
    names = [name for name in ENVIRONMENT if name in os.environ]
    if "malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        names.append("GLIBC_TUNABLES")
    return ", ".join(names)


def settle() -> str:
    """Set glibc's mmap and trim thresholds to their settled values, once, before the runtime
    loads anything; return what the allocator runs with, for the result's runtime details."""
    from_environment = _settings_from_environment()
    if from_environment:
        return f"as this environment sets it ({from_environment})"
    try:
        libc = ctypes.CDLL(None)
        version = libc.gnu_get_libc_version
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "the C library's defaults (not glibc)"
    version.restype = ctypes.c_char_p
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    if not (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return f"glibc {version().decode()} defaults (mallopt refused the settled thresholds)"
    return (f"glibc {version().decode()}, mmap and trim thresholds settled at {MMAP_THRESHOLD >> 20} and "
            f"{TRIM_THRESHOLD >> 20} MiB")
