"""Giving freed heap memory back to the system, where the C library keeps it.

glibc gives threads arenas of their own (up to eight per core) and keeps what
they free for reuse instead of returning it.  A hub whose many threads each
fill and free 40 KB stream buffers ends up holding far more than it uses:
2,000 simulated node threads held 445 MB where returning the free pages
every second held 281 MB (same run, side by side).  ``malloc_trim(0)``
returns the free pages of every arena; it costs a walk of the arenas, so the
maintenance thread calls it at most every ``TRIM_EVERY`` seconds.  Where
there is no glibc (musl, macOS, Windows) this does nothing.

Two settings are process-wide and so left to the program that owns the
process (``taskjournal simulate`` takes both): the arena cap
(``limit_arenas``) and glibc's per-thread caches of freed small blocks,
which can only be turned off before the process starts
(``environ_without_thread_caches``).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, Mapping, Optional

__all__ = ["HeapTrim", "environ_without_thread_caches", "limit_arenas", "thread_caches_off"]

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


#: The tunable that empties glibc's per-thread caches (tcache) of freed small
#: blocks: no chunk is kept for its thread, every free goes back to the arena.
NO_THREAD_CACHES = "glibc.malloc.tcache_count=0"


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None  # "glibc 2.36"
    except (AttributeError, ValueError, OSError):
        return False  # no confstr (Windows), or not glibc (musl, macOS)


def environ_without_thread_caches(environ: Mapping[str, str]) -> Optional[dict[str, str]]:
    """``environ`` with glibc's per-thread caches turned off, for a process
    to re-execute itself in; None where that does not apply: not glibc, or
    ``GLIBC_TUNABLES`` already sets a tcache tunable (the operator's choice
    wins, and a process re-executed once finds its own setting there).

    Each thread caches up to seven freed blocks of every size up to 1 KB for
    itself.  Blocks cached by thousands of threads pin pages of the arenas
    that no trim can return, and more of them each time a thread meets a new
    size: a simulated 2,000-node hub grew to 331 MB with the caches and held
    220 MB without them, at the same tasks/s (60,000 tasks, side by side).
    glibc reads the setting only when a process starts."""
    if not _glibc():
        return None
    tunables = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.tcache" in tunables:
        return None
    changed = dict(environ)
    changed["GLIBC_TUNABLES"] = f"{tunables}:{NO_THREAD_CACHES}" if tunables else NO_THREAD_CACHES
    return changed


def thread_caches_off(environ: Mapping[str, str]) -> bool:
    """Whether this process started with glibc's per-thread caches off."""
    return _glibc() and NO_THREAD_CACHES in environ.get("GLIBC_TUNABLES", "").split(":")


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
