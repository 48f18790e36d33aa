"""The exceptions taskjournal raises on purpose.

Every error the journal raises for a reason it understands is a
:class:`JournalError`, so a hub can catch the whole family in one place.  Where
an error is also a classic built-in failure (a bad value, a missing key) it
subclasses that built-in too, so generic handlers keep working.

This module imports nothing from the package: every layer may import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, cast

if TYPE_CHECKING:  # for the annotations only: at run time this module imports nothing
    from journal.records import TaskRecord

__all__ = [
    "ConfigError",
    "CorruptSnapshot",
    "DuplicateTask",
    "InvalidArgument",
    "InvalidTransition",
    "JournalClosed",
    "JournalError",
    "OwnedElsewhere",
    "ResultExpired",
    "StoreCorrupt",
    "StoreError",
    "StoreLocked",
    "StoreUnavailable",
    "StreamSealed",
    "StreamSpilled",
    "TaskLost",
    "UnknownTask",
    "WaitTimeout",
]


class JournalError(Exception):
    """Base class of every error raised by taskjournal on purpose."""


class StreamSealed(JournalError):
    """An append reached a stream that was sealed (its task has ended).

    Everything appended before the seal is kept; the rejected chunk is not.
    """


class StreamSpilled(JournalError):
    """A read of a buffer whose older part was spilled to the store.

    Appends keep working while a buffer is spilled; to read it, go through
    the journal (``TaskJournal.get``), which merges the spilled part back.
    """


class CorruptSnapshot(JournalError, ValueError):
    """A buffer snapshot is truncated, corrupted, foreign or too new."""


class InvalidArgument(JournalError, ValueError):
    """A task id, node id, stream name, result or option is not acceptable.

    Raised before anything changes: the journal is left as it was.
    """


class ConfigError(InvalidArgument):
    """A JournalConfig value (keyword or JOURNAL_* variable) is invalid."""


class UnknownTask(JournalError, KeyError):
    """No task with this id was ever registered (or its tombstone is gone)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateTask(JournalError):
    """``register`` was called for an id the journal still holds."""


class InvalidTransition(JournalError):
    """A lifecycle move the transition table does not allow."""


class TaskLost(JournalError):
    """The task's node stopped reporting (lease expired or never re-attached).

    ``record`` holds the task's final state, including what its streams held.
    """

    #: The task's final state (status ``LOST``), including what its streams held.
    record: TaskRecord

    def __init__(self, message: str, record: Optional[TaskRecord] = None) -> None:
        super().__init__(message)
        # The journal always passes the record.  None only arrives while an
        # unpickled TaskLost is rebuilt from its message (``Exception``
        # pickles ``args`` only), and ``__dict__``, record included, is
        # restored right after; so the attribute is typed as never None.
        self.record = cast("TaskRecord", record)


class ResultExpired(JournalError):
    """The task finished, but its result was removed after ``result_ttl``."""


class WaitTimeout(JournalError, TimeoutError):
    """``wait`` gave up after its timeout; the task itself goes on."""


class JournalClosed(JournalError):
    """The journal was closed; open a new one."""


class StoreError(JournalError):
    """The store could not make a change; the change was not made.

    The journal's state is left as it was before the call, so the call can
    simply be retried.
    """


class StoreCorrupt(StoreError):
    """The store file is damaged, foreign or too new; it was left untouched."""


class StoreLocked(StoreError):
    """Another TaskJournal already owns this store file."""


class StoreUnavailable(StoreError):
    """The store's server could not be reached within the store's timeout.

    The operation was not confirmed: the caller should treat it as not done
    and retry once the server is back (retrying a registration that did land
    is recognised and succeeds).
    """


class OwnedElsewhere(JournalError):
    """On a shared store, another live hub replica owns this task.

    Carries ``owner``, the replica's id.  Its node should talk to that
    replica, or wait until its lease runs out.
    """

    #: The id of the replica that owns the task.
    owner: str

    def __init__(self, message: str, owner: str) -> None:
        super().__init__(message)
        self.owner = owner
