"""Residency: where a task's stream bytes live, and how they reach the store.

Two variants, chosen once by the kind of store, so no entry point asks
"is the store durable?":

* :class:`Residency` (``memory://``): the buffers are the only copy; there
  is nothing to checkpoint or spill.
* :class:`DurableResidency` (SQLite, Redis): streams are checkpointed off the
  hot path, and under a ``memory_budget`` the buffers of running tasks are
  spilled to the store and finished tasks let go of.

Both read a task the same way: :meth:`Residency.record` and
:meth:`Residency.read_from` merge spilled parts back under the task's shard
lock, which the next spill must take, so a reader never sees a buffer that
is half spilled.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Optional

from journal._buffer_shared import snapshot_total
from journal._table import TaskTable, unsealed
from journal._task import Task
from journal.buffer import HeadTailBuffer
from journal.errors import CorruptSnapshot, InvalidArgument, StoreError, StreamSpilled
from journal.records import StreamView, TaskRecord, record_from_row

__all__ = ["DurableResidency", "Residency", "residency_for"]

log = logging.getLogger("journal")

#: Called when a spilled part cannot be merged back: the ownership policy
#: decides whether another replica took the task (and raises OwnedElsewhere).
ForeignState = Callable[[Task], None]


def residency_for(table: TaskTable, foreign_state: ForeignState) -> Residency:
    """The residency policy the table's store and config call for."""
    budget = table.config.memory_budget
    if table.store.durable:
        return DurableResidency(table, foreign_state, budget)
    if budget is not None:
        raise InvalidArgument(
            f"memory_budget needs a durable store to spill to; {table.store.url} keeps "
            "everything in memory: use sqlite:///path/journal.db, or no budget"
        )
    return Residency(table)


class Residency:
    """memory://: every byte stays in the buffers; nothing to write out."""

    durable = False

    def __init__(self, table: TaskTable) -> None:
        self._table = table
        #: When the streams were last all written to the store (None: never).
        self.checkpointed_at: Optional[float] = None

    # -- passes (nothing to do in memory) ------------------------------------

    def checkpoint_pass(self) -> int:
        """A checkpoint (and budget) pass; return the streams written."""
        return 0

    def checkpoint(self, tasks: list[Task], *, unseal: bool = False) -> int:
        """Write these tasks' changed streams; return how many."""
        return 0

    def close(self, tasks: list[Task]) -> int:
        """The last checkpoint, after close() sealed every stream."""
        return 0

    def after_end(self, task: Task) -> None:
        """A task has ended and its final state is committed."""

    def merge_back(self, task: Task) -> None:
        """Merge spilled streams back into memory; hold the shard lock."""

    # -- reads ------------------------------------------------------------------

    def record(self, task: Task) -> TaskRecord:
        try:
            views = {name: StreamView(name, *buf.view()) for name, buf in list(task.streams.items())}
        except StreamSpilled:
            with self._table.shard(task.task_id).lock:
                self.merge_back(task)
                views = {name: StreamView(name, *buf.view()) for name, buf in task.streams.items()}
        return record_from_row(
            task.row(), views, detached=task.detached_until is not None, owner=task.owner
        )

    def read_from(self, task: Task, buf: HeadTailBuffer, offset: int) -> tuple[int, bytes]:
        try:
            return buf.read_from(offset)
        except StreamSpilled:
            with self._table.shard(task.task_id).lock:
                self.merge_back(task)
                return buf.read_from(offset)


class DurableResidency(Residency):
    """Checkpoints, and with a budget, spills and let-goes, on a durable store.

    A stream's stored state only moves forward: the stores apply a snapshot
    only if it holds at least as many bytes as the stored one, inside the
    same transaction or script.  On top of that, checkpoint and budget
    passes run one at a time, so one pass never spills a buffer between
    another's snapshot and its commit.
    """

    durable = True

    def __init__(self, table: TaskTable, foreign_state: ForeignState, budget: Optional[int]) -> None:
        super().__init__(table)
        self._foreign_state = foreign_state
        self._budget = budget
        #: One checkpoint or budget pass at a time.  Never taken while a
        #: shard lock is held.
        self._passes = threading.Lock()

    def checkpoint_pass(self) -> int:
        table = self._table
        with self._passes:
            started, errors = table.clock(), table.store_errors
            written = self._checkpoint(list(table.tasks.values()))
            if table.store_errors == errors:
                self.checkpointed_at = started
            # The budget holds even when the store refused the checkpoint:
            # a spill is written (or undone) on its own.
            if self._budget is not None:
                self._enforce_budget(self._budget)
        return written

    def checkpoint(self, tasks: list[Task], *, unseal: bool = False) -> int:
        # Not under the pass lock: a task's final checkpoint must not wait
        # behind a pass over every task; the store keeps the newer snapshot.
        return self._checkpoint(tasks, unseal=unseal)

    def close(self, tasks: list[Task]) -> int:
        """The last checkpoint, after close() sealed every stream."""
        with self._passes:
            return self._checkpoint(tasks, unseal=True)

    def _checkpoint(self, tasks: list[Task], *, unseal: bool = False) -> int:
        """Write the streams that changed since their last checkpoint.

        ``unseal``: store in-flight tasks' streams as not sealed (close()
        seals them, but they go on after a restart)."""
        items: list[tuple[str, str, bytes]] = []
        totals: list[tuple[Task, str, int]] = []
        for task in tasks:
            try:
                for name, buf in list(task.streams.items()):
                    total = buf.total
                    if total == task.checkpointed.get(name, 0):
                        continue
                    if buf.spilled:
                        with self._table.shard(task.task_id).lock:
                            self.merge_back(task)
                    snapshot = buf.snapshot()
                    if unseal and not task.status.terminal:
                        snapshot = unsealed(snapshot)
                    items.append((task.task_id, name, snapshot))
                    totals.append((task, name, total))
            except Exception as exc:  # noqa: BLE001 - one task's trouble is not every task's
                self._table.note_store_error(f"task {task.task_id!r} was not checkpointed: {exc}")
        if not items or not self._write(items):
            return 0
        for task, name, total in totals:
            # The store keeps the newest snapshot it was given, so it now
            # holds at least ``total`` bytes of this stream.
            task.checkpointed[name] = max(task.checkpointed.get(name, 0), total)
        return len(items)

    def after_end(self, task: Task) -> None:
        if self._budget is not None:
            self._let_go(task)

    def _enforce_budget(self, budget: int) -> None:
        """Bring resident stream bytes under ``budget``: first let go of
        finished tasks (their final state is in the store; with a budget they
        normally leave at their terminal transition, this catches those whose
        last checkpoint failed then), then spill the buffers of running
        tasks, those idle the longest first."""
        tasks = list(self._table.tasks.values())
        resident = 0
        for task in tasks:
            written = task.written()
            task.idle_passes = task.idle_passes + 1 if written == task.seen_total else 0
            task.seen_total = written
            resident += sum(len(buf) for buf in list(task.streams.values()))
        if resident <= budget:
            return
        for task in sorted((t for t in tasks if t.status.terminal), key=lambda t: t.finished_at or 0):
            if resident <= budget:
                return
            resident -= self._let_go(task)
        # Then running tasks, least recently active first: a spilled buffer
        # keeps taking appends, so even a busy one can go if it must.
        running = sorted((t for t in tasks if not t.status.terminal), key=lambda t: -t.idle_passes)
        for task in running:
            if resident <= budget:
                return
            resident -= self._spill(task)

    def _let_go(self, task: Task) -> int:
        """Drop a finished task from memory once its final state is in the
        store (reads then come from there); return the bytes freed."""
        if any(task.checkpointed.get(name, 0) != buf.total for name, buf in list(task.streams.items())):
            return 0  # its final checkpoint has not landed yet: keep it
        shard = self._table.shard(task.task_id)
        with shard.lock:
            if shard.entries.get(task.task_id) is not task:
                return 0
            del shard.entries[task.task_id]
        return sum(len(buf) for buf in task.streams.values())

    def _spill(self, task: Task) -> int:
        """Move a task's resident stream data to the store; return the bytes
        freed.  If the store does not take it, for any reason, the buffers
        are merged back at once: nothing a spill holds is ever lost."""
        with self._table.shard(task.task_id).lock:
            if task.status.terminal:
                return 0
            spilled = []
            for name, buf in task.streams.items():
                if not buf.spilled and len(buf):
                    size = len(buf)
                    spilled.append((name, buf, buf.spill(), size))
            if not spilled:
                return 0
            items = [(task.task_id, name, snapshot) for name, _, snapshot, _ in spilled]
            written = False
            try:
                written = self._write(items)
            finally:
                if not written:
                    for _, buf, snapshot, _ in spilled:
                        buf.unspill(snapshot)
            if not written:
                return 0
            for name, _, snapshot, _ in spilled:
                durable = snapshot_total(snapshot)
                task.checkpointed[name] = max(task.checkpointed.get(name, 0), durable)
        return sum(size for *_, size in spilled)

    def merge_back(self, task: Task) -> None:
        for name, buf in task.streams.items():
            if not buf.spilled:
                continue
            snapshot = self._table.store.get_stream(task.task_id, name)
            try:
                if snapshot is None:
                    raise StoreError(
                        f"task {task.task_id!r}: the spilled part of stream {name!r} is "
                        "missing from the store"
                    )
                buf.unspill(snapshot)
            except (StoreError, CorruptSnapshot):
                # A stored state that is not our spill: on a shared store,
                # another replica may have adopted the task and written on.
                self._foreign_state(task)
                raise

    def _write(self, items: list[tuple[str, str, bytes]]) -> bool:
        """Write snapshots; False if the store refused them.

        Any exception counts, not only StoreError: a store's client can raise
        things of its own (an out-of-memory reply, a permission error), and a
        background pass that dies on one would stop every later pass."""
        try:
            self._table.store.put_streams(items)
        except Exception as exc:  # noqa: BLE001 - counted, and retried by the next pass
            self._table.note_store_error(f"journal store write failed, will retry: {exc}")
            return False
        return True
