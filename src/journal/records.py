"""Immutable snapshots of tasks and streams, as the journal hands them out."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple, Optional, Union

from journal import _buffer_shared as _shared
from journal._highlights import Highlight
from journal.errors import StoreCorrupt
from journal.lifecycle import TaskStatus
from journal.validation import decode_result

if TYPE_CHECKING:
    from journal.store.base import TaskRow

__all__ = ["FollowChunk", "StreamView", "TaskRecord", "record_from_row"]

#: What a task's result can be: anything JSON can carry, or raw bytes.
Result = Union[None, bool, int, float, str, list[Any], dict[Any, Any], bytes]


class StreamView(NamedTuple):
    """One stream of a task at the moment its record was taken."""

    name: str
    head: bytes
    tail: bytes
    total: int  #: bytes ever appended
    sealed: bool
    #: Lines kept from the dropped middle: the earliest, then the most recent.
    highlights: tuple[Highlight, ...] = ()
    #: How many of ``highlights`` are the earliest ones.
    highlights_first: int = 0
    #: Matching lines of the dropped middle the budget did not keep.
    highlights_skipped: int = 0
    #: Newlines in the dropped middle; None when the stream has no highlight rules.
    dropped_lines: Optional[int] = None
    #: Bytes of output let go after the task finished, to keep memory://
    #: under ``memory_budget``; 0 when everything held is here.
    released: int = 0

    @property
    def dropped(self) -> int:
        """Bytes appended but not kept (the middle)."""
        return self.total - len(self.head) - len(self.tail)

    @property
    def held(self) -> int:
        return len(self.head) + len(self.tail)

    def read_from(self, offset: int) -> tuple[int, bytes]:
        """Held bytes from stream position ``offset`` on, as
        ``HeadTailBuffer.read_from`` gives them: ``(position, data)``."""
        return _shared.read_from(self.head, self.tail, self.total, _shared.read_offset(offset))

    def render(self, marker: Optional[str] = None) -> bytes:
        """Head, then a marker and any highlight lines if bytes were dropped,
        then tail; for a released stream, a line saying so."""
        if self.released:
            return self._released_line().encode("utf-8")
        return _shared.render(self.head, self.tail, self.total, marker, self._scan())

    def text(self, marker: Optional[str] = None) -> str:
        """``render()`` decoded as UTF-8, never splitting a character at a cut."""
        if self.released:
            return self._released_line()
        return _shared.text(self.head, self.tail, self.total, marker, self._scan())

    def _released_line(self) -> str:
        return (
            f"[output released: this task had finished, and its {self.released:,} held bytes "
            f"(of {self.total:,} written) were let go to keep memory:// under memory_budget; "
            "a durable store keeps them]\n"
        )

    def _scan(self) -> Optional[_shared.Scan]:
        if self.dropped_lines is None:
            return None
        return _shared.Scan(
            self.dropped_lines, list(self.highlights), self.highlights_first,
            self.highlights_skipped,
        )


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
    #: On a shared store (Redis), the hub replica that owns the task.
    owner: Optional[str] = None

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


def record_from_row(
    row: TaskRow, views: dict[str, StreamView], detached: bool = False, owner: Optional[str] = None
) -> TaskRecord:
    """The record of a stored task row and the views of its streams.

    A row no journal could have written (a status it does not know, a meta
    that is not JSON) raises StoreCorrupt naming the task, never a bare
    ValueError: stores skip such rows, but one may still reach this point.
    """
    try:
        status = TaskStatus(row.status)
    except ValueError:
        raise StoreCorrupt(
            f"task {row.task_id!r} has the stored status {row.status!r}, which is not a task "
            "status; run `taskjournal check --repair` on the store"
        ) from None
    return TaskRecord(
        task_id=row.task_id,
        node_id=row.node_id,
        status=status,
        result=decode_result(row.result),
        error=row.error,
        meta=decode_result(row.meta_json),
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
        deadline=row.deadline,
        detached=detached,
        streams=MappingProxyType(views),
        owner=owner,
    )
