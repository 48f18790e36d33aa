"""The exceptions taskjournal raises on purpose.

Every error the journal raises for a reason it understands is a
:class:`JournalError`, so a hub can catch the whole family in one place.  Where
an error is also a classic built-in failure (a bad value, a missing key) it
subclasses that built-in too, so generic handlers keep working.

This module imports nothing from the package: every layer may import it.
"""

from __future__ import annotations

__all__ = [
    "CorruptSnapshot",
    "JournalError",
    "StreamSealed",
]


class JournalError(Exception):
    """Base class of every error raised by taskjournal on purpose."""


class StreamSealed(JournalError):
    """An append reached a stream that was sealed (its task has ended).

    Everything appended before the seal is kept; the rejected chunk is not.
    """


class CorruptSnapshot(JournalError, ValueError):
    """A buffer snapshot is truncated, corrupted, foreign or too new."""
