"""Picks the HeadTailBuffer this interpreter should use.

The compiled class from ``_buffer.pyx`` is the default.  Its pure-Python
twin is used on interpreters other than CPython, when the extension was not
built (a source install without a compiler), or when the environment
variable ``JOURNAL_NO_EXTENSIONS`` is set to anything but ``""`` or ``"0"``
before the first import.  ``IMPLEMENTATION`` says which one was picked.
The rule lives in ``journal._selection``, shared with setup.py and the tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from journal import _selection

__all__ = ["IMPLEMENTATION", "HeadTailBuffer"]

IMPLEMENTATION: str
if TYPE_CHECKING:  # the twins share one API; the stubs type-check against the pure one
    from journal._buffer_py import HeadTailBuffer

    IMPLEMENTATION = "python"
else:
    IMPLEMENTATION, HeadTailBuffer = _selection.select()
