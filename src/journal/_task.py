"""The journal's working state of one task, and how its waiters are woken."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Optional

from journal.buffer import HeadTailBuffer
from journal.errors import TaskLost, WaitTimeout
from journal.lifecycle import TaskStatus
from journal.records import TaskRecord
from journal.store import TaskRow

__all__ = ["AsyncWaiter", "Deadline", "Task", "describe", "final_record", "timeout_error", "wake"]

AsyncWaiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]

#: Each status by its stored value: a dict read, where TaskStatus(value)
#: is a call through the enum machinery on every task made.
_STATUS_OF: dict[object, TaskStatus] = {status.value: status for status in TaskStatus}


class Task:
    """One task as the journal holds it; changed under its shard's lock."""

    __slots__ = (
        "task_id", "node_id", "status", "meta_json", "result", "error",
        "created_at", "updated_at", "finished_at", "deadline", "detached_until",
        "streams", "done", "async_waiters", "seen_total", "checkpointed",
        "idle_passes", "budget_seen_total", "owner", "released", "registering", "ending",
    )

    def __init__(self, row: TaskRow) -> None:
        self.task_id = row.task_id
        self.node_id = row.node_id
        try:
            self.status = _STATUS_OF[row.status]
        except (KeyError, TypeError):
            self.status = TaskStatus(row.status)  # raises ValueError, as it always did
        self.meta_json = row.meta_json
        self.result = row.result
        self.error = row.error
        self.created_at = row.created_at
        self.updated_at = row.updated_at
        self.finished_at = row.finished_at
        self.deadline = row.deadline
        #: Set after a restart until the node re-attaches: when it turns LOST.
        self.detached_until: Optional[float] = None
        self.streams: dict[str, HeadTailBuffer] = {}
        #: Made by the first sync waiter (most tasks never have one) and set
        #: at the terminal transition.
        self.done: Optional[threading.Event] = None
        #: Made by the first async waiter: an empty list per task would be
        #: one more object for every garbage collection to walk.
        self.async_waiters: Optional[list[AsyncWaiter]] = None
        #: Sum of the streams' totals at the last sweep: growth means alive.
        self.seen_total = 0
        #: Stream name -> total covered by its last durable checkpoint.
        self.checkpointed: dict[str, int] = {}
        #: Maintenance passes in a row that saw no append: the spill order.
        self.idle_passes = 0
        #: Sum of the streams' totals at the last budget pass.  Its own mark,
        #: not seen_total: the budget pass runs just before each sweep, and
        #: moving the sweep's mark hid every append from it (tasks that only
        #: streamed were declared LOST).
        self.budget_seen_total = 0
        #: On a shared store, the hub replica that owns the task.
        self.owner: Optional[str] = None
        #: memory:// under a budget: stream name -> bytes of output released
        #: after the task finished (None until one is).
        self.released: Optional[dict[str, int]] = None
        #: Claimed by register() and not yet committed: reads look in the
        #: store first (the id may be a finished task's), changes wait.
        self.registering = False
        #: Its terminal change is being committed: not to be spilled.
        self.ending = False

    def row(self, **changes: Any) -> TaskRow:
        row = TaskRow(
            self.task_id, self.node_id, self.status.value, self.meta_json, self.result,
            self.error, self.created_at, self.updated_at, self.finished_at, self.deadline,
        )
        return row._replace(**changes) if changes else row

    def written(self) -> int:
        return sum(buf.total for buf in list(self.streams.values()))


class Deadline:
    """What is left of a wait's timeout (None: no timeout), on the monotonic clock."""

    __slots__ = ("ends",)

    def __init__(self, seconds: Optional[float]) -> None:
        self.ends = None if seconds is None else time.monotonic() + seconds

    def left(self) -> Optional[float]:
        return None if self.ends is None else max(0.0, self.ends - time.monotonic())

    def poll_step(self, poll: float) -> float:
        """How long to sleep before looking again: ``poll``, or what is left."""
        left = self.left()
        return poll if left is None else min(left, poll)


def final_record(record: TaskRecord) -> TaskRecord:
    """What a finished wait returns: the record, or TaskLost if it was lost."""
    if record.status is TaskStatus.LOST:
        raise TaskLost(
            f"task {record.task_id!r} was lost: {record.error}; resubmit it to another node",
            record,
        )
    return record


def timeout_error(task: Task, seconds: Optional[float]) -> WaitTimeout:
    return WaitTimeout(
        f"task {task.task_id!r} on node {task.node_id!r} is still {task.status.name} "
        f"after {seconds or 0:g} s; wait again, or cancel it"
    )


def wake(task: Task, waiters: Optional[list[AsyncWaiter]]) -> None:
    if task.done is not None:
        task.done.set()
    for loop, future in waiters or ():
        try:
            loop.call_soon_threadsafe(_resolve, future)
        except RuntimeError:
            pass  # that event loop is closed: nobody is waiting there any more


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def describe(error: object) -> str:
    """An error or reason as text every store can hold: a lone surrogate
    (from a badly decoded byte string) becomes a backslash escape instead of
    failing the commit that records the task's end."""
    text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
