"""Immutable snapshots of tasks and streams, as the journal hands them out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Optional, Union

from journal import _buffer_shared as _shared
from journal.lifecycle import TaskStatus

__all__ = ["FollowChunk", "StreamView", "TaskRecord"]

#: What a task's result can be: anything JSON can carry, or raw bytes.
Result = Union[None, bool, int, float, str, list, dict, bytes]


class StreamView(NamedTuple):
    """One stream of a task at the moment its record was taken."""

    name: str
    head: bytes
    tail: bytes
    total: int  #: bytes ever appended
    sealed: bool

    @property
    def dropped(self) -> int:
        """Bytes appended but not kept (the middle)."""
        return self.total - len(self.head) - len(self.tail)

    @property
    def held(self) -> int:
        return len(self.head) + len(self.tail)

    def render(self, marker: str = _shared.DEFAULT_MARKER) -> bytes:
        """Head, then ``marker`` if bytes were dropped, then tail."""
        return _shared.render(self.head, self.tail, self.total, marker)

    def text(self, marker: str = _shared.DEFAULT_MARKER) -> str:
        """``render()`` decoded as UTF-8, never splitting a character at a cut."""
        return _shared.text(self.head, self.tail, self.total, marker)


class TaskRecord(NamedTuple):
    """A task as it was when the record was taken; never a live view.

    Immutable, and cheap to make: the journal returns one from every call
    that changes a task.
    """

    task_id: str
    node_id: str
    status: TaskStatus
    result: Result
    error: Optional[str]
    meta: Optional[dict[str, Any]]
    created_at: float  #: wall-clock seconds (time.time())
    updated_at: float
    finished_at: Optional[float]  #: when it reached a terminal state
    deadline: Optional[float]  #: wall-clock time it times out at, if any
    detached: bool  #: in flight after a restart, its node not yet re-attached
    streams: Mapping[str, StreamView]

    @property
    def terminal(self) -> bool:
        return self.status.terminal


class FollowChunk(NamedTuple):
    """New stream data delivered by ``TaskJournal.follow``."""

    data: bytes
    #: Stream position of ``data[0]``.
    offset: int
    #: Bytes dropped just before ``data`` that could not be delivered.
    skipped: int
