"""Giving freed heap memory back to the system, where the C library keeps it.

glibc gives threads arenas of their own (up to eight per core) and keeps what
they free for reuse instead of returning it.  A hub whose many threads each
fill and free 40 KB stream buffers ends up holding far more than it uses:
2,000 simulated node threads held 445 MB where returning the free pages
every second held 281 MB (same run, side by side).  ``malloc_trim(0)``
returns the free pages of every arena; it costs a walk of the arenas, so the
maintenance thread calls it at most every ``TRIM_EVERY`` seconds.  Where
there is no glibc (musl, macOS, Windows) this does nothing.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Optional

__all__ = ["HeapTrim", "limit_arenas"]

#: The least time between two trims.
TRIM_EVERY = 2.0


def _malloc_trim() -> Optional[Callable[[int], Any]]:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        function = libc.malloc_trim
    except (ImportError, OSError, AttributeError):
        return None  # not glibc (musl has no malloc_trim), or no ctypes
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    trim: Callable[[int], Any] = function
    return trim


#: mallopt's parameter number for the arena cap (glibc's malloc.h).
_M_ARENA_MAX = -8


def limit_arenas(count: int) -> bool:
    """Cap glibc's malloc arenas at ``count`` for threads started from now on,
    unless ``MALLOC_ARENA_MAX`` or the ``glibc.malloc.arena_max`` tunable
    (``GLIBC_TUNABLES``) is set: the operator's choice wins.

    A process of thousands of threads that each allocate and free stream
    buffers leaves free pages behind in up to eight arenas per core; with
    two, the same simulated 2,000-node hub held 293 MB instead of 320 MB
    (20,000 tasks, side by side), and ran no slower.  This is process-wide,
    so the library never calls it on its own: ``taskjournal simulate``
    does, and a hub's own main may.  Returns whether the cap was set."""
    import os

    if not sys.platform.startswith("linux"):
        return False
    if os.environ.get("MALLOC_ARENA_MAX") or "glibc.malloc.arena_max" in os.environ.get(
            "GLIBC_TUNABLES", ""):
        return False  # set by the operator, either way glibc reads it
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (ImportError, OSError, AttributeError):
        return False  # not glibc
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, count))


class HeapTrim:
    """Called by the maintenance thread after its passes."""

    def __init__(self) -> None:
        self._trim = _malloc_trim()
        self._last = time.monotonic()

    @property
    def available(self) -> bool:
        return self._trim is not None

    def maybe(self) -> bool:
        """Trim if the last trim was long enough ago; True if it ran."""
        if self._trim is None:
            return False
        now = time.monotonic()
        if now - self._last < TRIM_EVERY:
            return False
        self._last = now
        self._trim(0)
        return True
