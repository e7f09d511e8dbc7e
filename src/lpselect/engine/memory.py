"""Give freed heap memory back to the operating system.

After reading and tokenising a large dataset, glibc keeps the freed pages of millions of small Python and
tokenizer objects in its heap, so the process's resident size stays at its tokenising peak for the whole
multi-hour job. ``malloc_trim(0)`` returns them; elsewhere (macOS, musl) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc


def release_free_memory() -> None:
    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)
