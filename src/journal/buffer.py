"""Picks the HeadTailBuffer this interpreter should use.

The compiled class from ``_buffer.pyx`` is the default.  Its pure-Python
twin is used on interpreters other than CPython, when the extension was not
built (a source install without a compiler), or when the environment
variable ``JOURNAL_NO_EXTENSIONS`` is set to anything but ``""`` or ``"0"``
before the first import.  ``IMPLEMENTATION`` says which one was picked.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

__all__ = ["IMPLEMENTATION", "HeadTailBuffer"]

NO_EXTENSIONS = (
    os.environ.get("JOURNAL_NO_EXTENSIONS", "") not in ("", "0")
    or sys.implementation.name != "cpython"
)

IMPLEMENTATION: str
if TYPE_CHECKING or NO_EXTENSIONS:
    from journal._buffer_py import HeadTailBuffer

    IMPLEMENTATION = "python"
else:
    try:
        from journal._buffer import HeadTailBuffer
    except ImportError:  # built without a compiler: the twin does the same job
        from journal._buffer_py import HeadTailBuffer

        IMPLEMENTATION = "python"
    else:
        IMPLEMENTATION = "c"
