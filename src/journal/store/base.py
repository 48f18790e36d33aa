"""The Store protocol: what the journal asks of a store.

The journal keeps live tasks in memory (the registry) and mirrors every
change into its store.  A durable store is the truth after a restart, and
holds finished tasks the journal has let go of to save memory.  A store never
decides anything: it records rows and gives them back.  Every write is
durable (for a durable store) when the call returns.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple, Optional, Protocol, TypeVar, Union, runtime_checkable

from journal.lifecycle import TaskStatus

__all__ = [
    "AsyncWrites", "SharedStore", "Snapshotable", "Store", "StoredTask", "TaskRow",
    "put_task_async", "row_problem",
]

T = TypeVar("T")
#: Runs once a write is done: ``error`` is None if it is durable.
Finish = Callable[[Optional[BaseException]], T]


class TaskRow(NamedTuple):
    """The stored form of one task (its streams are stored separately)."""

    task_id: str
    node_id: str
    status: str
    meta_json: Optional[str]
    #: The result: JSON text, or raw bytes for a bytes result.
    result: Union[bytes, str, None]
    error: Optional[str]
    created_at: float
    updated_at: float
    finished_at: Optional[float]
    deadline: Optional[float]


_STATUSES = frozenset(status.value for status in TaskStatus)
_TERMINAL = frozenset(status.value for status in TaskStatus if status.terminal)


def row_problem(row: TaskRow) -> Optional[str]:
    """Why a row read back from a store cannot be a task the journal wrote,
    or None if it can.  Stores skip such rows in listings, name them in
    ``check()`` and remove them in ``repair()``, so one hostile or damaged
    row never breaks a read of the others."""
    if not isinstance(row.task_id, str) or not row.task_id:
        return "its task id is not text"
    if not isinstance(row.node_id, str) or not row.node_id:
        return "its node id is not text"
    if row.status not in _STATUSES:
        return f"its status {row.status!r} is not a task status"
    for name in ("meta_json", "error"):
        value = getattr(row, name)
        if value is not None and not isinstance(value, str):
            return f"its {name} is not text"
    if row.result is not None and not isinstance(row.result, (str, bytes)):
        return "its result is neither text nor bytes"
    for name in ("created_at", "updated_at", "finished_at", "deadline"):
        value = getattr(row, name)
        if value is None and name in ("finished_at", "deadline"):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            return f"its {name} is not a number"
    if (row.finished_at is None) != (row.status not in _TERMINAL):
        return "its finished_at does not match its status"
    for name in ("meta_json", "result"):
        value = getattr(row, name)
        if isinstance(value, str):
            try:
                json.loads(value)
            except (ValueError, RecursionError):
                return f"its {name} is not valid JSON"
    return None


class StoredTask(NamedTuple):
    row: TaskRow
    #: stream name -> HeadTailBuffer snapshot
    streams: dict[str, bytes]
    #: On a shared store, the hub replica that owns the task.
    owner: Optional[str] = None


class Snapshotable(Protocol):
    def snapshot(self) -> bytes: ...


class Store(Protocol):
    url: str
    #: True if what is written survives the process.
    durable: bool

    def load_in_flight(self) -> list[StoredTask]:
        """Every task not yet finished, with its last stream checkpoints."""

    def get(self, task_id: str) -> Optional[StoredTask]: ...

    def get_stream(self, task_id: str, name: str) -> Optional[bytes]: ...

    def tombstoned(self, task_id: str) -> bool:
        """True if the task's result expired and its tombstone is still kept."""

    def count_by_status(self) -> dict[str, int]: ...

    def list_tasks(
        self, status: Optional[str] = None, node_id: Optional[str] = None, limit: Optional[int] = None
    ) -> list[TaskRow]:
        """Rows, newest first."""

    def put_task(
        self, row: TaskRow, streams: Optional[Mapping[str, Snapshotable]] = None, *, new: bool = False
    ) -> None:
        """Write a task row and (in the same commit) snapshots of ``streams``.

        ``new=True`` inserts: a task id the store already holds raises
        DuplicateTask, and a tombstone of the id is cleared.
        """

    def put_streams(self, items: Iterable[tuple[str, str, bytes]]) -> None:
        """Write ``(task_id, stream name, snapshot)`` triples in one commit."""

    def expire_finished(self, cutoff: float, tombstone_until: float) -> list[str]:
        """Delete tasks finished at or before ``cutoff``, leaving tombstones."""

    def forget_tombstones(self, now: float) -> int:
        """Drop tombstones whose time has come; return how many."""

    def check(self) -> list[str]:
        """Integrity problems found; empty when sound."""

    def repair(self) -> None:
        """Fix the problems ``check`` finds that can be fixed without losing
        anything a reader could still use."""

    def close(self) -> None: ...


@runtime_checkable
class SharedStore(Store, Protocol):
    """A store several hub replicas share (Redis).  A store declares it by
    subclassing; the journal then keeps its ownership policy: one owner per
    task, leases, adoption of a dead replica's tasks, cross-replica waits.

    Reading never claims a task: ``load_in_flight`` and ``get`` only read,
    and only ``claim`` and ``adopt_orphans`` take ownership.
    """

    #: This replica's id: the owner written into the tasks it holds.
    replica: str
    #: Seconds between store reads of a cross-replica waiter, in case an
    #: "ended" message was lost.
    poll_interval: float
    #: Failures of the store's own background threads (its lease), and the
    #: last one's message.
    background_errors: int
    last_background_error: Optional[str]

    def claim(self, task_id: str) -> StoredTask:
        """Take ownership of an in-flight task (for ``reattach``); raise
        OwnedElsewhere if a live replica has it attached."""

    def owners(self, task_ids: Iterable[str]) -> dict[str, Optional[str]]:
        """The owner replica of each task still in the store."""

    def adopt_orphans(self, holding: Iterable[str] = (), *, own: bool = True) -> list[StoredTask]:
        """Claim, detached, every in-flight task whose owner is gone, and
        with ``own`` this replica's own (a restart with the same id), except
        those in ``holding``; return them."""

    def in_flight_owned_elsewhere(self) -> list[StoredTask]:
        """In-flight tasks other replicas own, as they last wrote them."""

    def release(self) -> None:
        """Give up this replica's lease now (a clean shutdown)."""

    def on_ended(self, callback: Callable[[Optional[str]], None]) -> None:
        """Call ``callback(task_id)`` from a background thread whenever any
        replica ends a task, and ``callback(None)`` when messages may have
        been missed."""


@runtime_checkable
class AsyncWrites(Protocol):
    """A store whose writes a coroutine can queue without waiting (SQLite:
    they join the threads' group commit)."""

    def put_task_async(
        self,
        row: TaskRow,
        streams: Optional[Mapping[str, Snapshotable]] = None,
        *,
        new: bool = False,
        finish: Finish[T],
    ) -> asyncio.Future[T]:
        """``put_task``, queued: ``finish(error)`` runs (on a thread of the
        store's) once the write is done or has failed, and the future gets
        what it returns or raises.  It runs whether or not the future is
        still awaited: a cancelled await neither stops nor repeats the write."""


def put_task_async(
    store: Store,
    row: TaskRow,
    streams: Optional[Mapping[str, Snapshotable]] = None,
    *,
    new: bool = False,
    finish: Finish[T],
) -> asyncio.Future[T]:
    """``AsyncWrites.put_task_async`` for every store, in a running loop.

    A store that offers it queues the write.  A store that keeps its rows in
    memory (``durable`` False) writes at once, on the loop: nothing waits.
    Any other store (Redis) makes its sync call on the loop's default
    executor, one thread hand-off (and one loop wake-up) per call, with
    ``finish`` run there too.
    """
    if isinstance(store, AsyncWrites):
        return store.put_task_async(row, streams, new=new, finish=finish)
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    if not store.durable:
        _settle(future, _finished(finish, _put(store, row, streams, new)))
        return future

    def call() -> None:
        # finish runs here too: the journal's state follows the store even
        # if the loop has gone away meanwhile.
        outcome = _finished(finish, _put(store, row, streams, new))
        try:
            loop.call_soon_threadsafe(_settle, future, outcome)
        except RuntimeError:
            pass  # the loop is closed: nobody awaits there any more

    # Our own future, not the executor's: cancelling the await must not
    # cancel a call that has not started yet (the write would be lost).
    loop.run_in_executor(None, call)
    return future


def _put(
    store: Store, row: TaskRow, streams: Optional[Mapping[str, Snapshotable]], new: bool
) -> Optional[BaseException]:
    try:
        store.put_task(row, streams, new=new)
    except Exception as exc:  # noqa: BLE001 - the caller's outcome
        return exc
    return None


def _finished(finish: Finish[T], error: Optional[BaseException]) -> tuple[Optional[T], Optional[BaseException]]:
    try:
        return finish(error), None
    except BaseException as exc:  # noqa: BLE001 - the caller's outcome
        return None, exc


def _settle(future: asyncio.Future[T], outcome: tuple[Optional[T], Optional[BaseException]]) -> None:
    value, error = outcome
    if future.done():
        return  # cancelled: the write was made (or refused) all the same
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)  # type: ignore[arg-type]  # set when finish returned
