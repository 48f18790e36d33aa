"""Residency: where a task's stream bytes live, and how they reach the store.

Two variants, chosen once by the kind of store, so no entry point asks
"is the store durable?":

* :class:`Residency` (``memory://``): the buffers are the only copy; there
  is nothing to checkpoint or spill.  Under ``memory_budget`` the output of
  the oldest finished tasks is released (their records stay, saying so).
* :class:`DurableResidency` (SQLite, Redis): streams are checkpointed off the
  hot path, a finished task leaves memory once its final state is in the
  store, and under ``memory_budget`` the buffers of running tasks are
  spilled to the store.

Both read a task the same way: :meth:`Residency.record` and
:meth:`Residency.read_from` merge spilled parts back under the task's shard
lock, which the next spill must take, so a reader never sees a buffer that
is half spilled.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Optional

from journal._buffer_shared import SnapshotState, encode_snapshot, snapshot_total
from journal._table import TaskTable, unsealed
from journal._task import Task
from journal.buffer import HeadTailBuffer
from journal.errors import CorruptSnapshot, StoreError, StreamSpilled
from journal.lifecycle import TERMINAL
from journal.records import StreamView, TaskRecord, record_from_row

__all__ = ["DurableResidency", "Residency", "residency_for"]

log = logging.getLogger("journal")

#: Snapshot bytes a checkpoint pass writes at once (one store write each).
_CHECKPOINT_BATCH = 4 * 1024 * 1024

#: Called when a spilled part cannot be merged back: the ownership policy
#: decides whether another replica took the task (and raises OwnedElsewhere).
ForeignState = Callable[[Task], None]


def residency_for(table: TaskTable, foreign_state: ForeignState) -> Residency:
    """The residency policy the table's store and config call for."""
    budget = table.config.memory_budget
    if table.store.durable:
        return DurableResidency(table, foreign_state, budget)
    return Residency(table, budget)


def released_buffer(buffer_class: type[HeadTailBuffer], total: int) -> HeadTailBuffer:
    """A sealed stream that holds no bytes but remembers how many were
    written: what a finished task's stream becomes once its output is
    released (about 200 bytes, against up to head + tail before)."""
    return buffer_class.restore(encode_snapshot(SnapshotState(0, 0, total, True, b"", b"")))


class Residency:
    """memory://: the buffers are the only copy; nothing to write out.

    With a ``memory_budget`` (the default), the stream bytes of finished
    tasks are bounded by it: past it, the output of the tasks that finished
    first is released.  Their records keep status, result, meta and totals,
    and say how many bytes were released (``StreamView.released``).  The
    output of running tasks is never released: nothing else holds it.
    """

    durable = False

    def __init__(self, table: TaskTable, budget: Optional[int] = None) -> None:
        self._table = table
        self._budget = budget
        #: When the streams were last all written to the store (None: never).
        self.checkpointed_at: Optional[float] = None
        #: Finished tasks that still hold output, oldest first, and the bytes
        #: each holds; ``_finished_bytes`` is their sum.
        self._finished: OrderedDict[str, tuple[Task, int]] = OrderedDict()
        self._finished_bytes = 0
        self._finished_lock = threading.Lock()
        #: Finished tasks whose output was released, and the bytes let go.
        self.released_tasks = 0
        self.released_bytes = 0

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
        budget = self._budget
        if budget is None:
            return
        size = sum(len(buf) for buf in list(task.streams.values()))
        if not size:
            return
        released: list[Task] = []
        with self._finished_lock:
            self._finished[task.task_id] = (task, size)
            self._finished_bytes += size
            while self._finished_bytes > budget and self._finished:
                _, (oldest, held) = self._finished.popitem(last=False)
                self._finished_bytes -= held
                released.append(oldest)
        for oldest in released:
            self._release(oldest)

    def forget(self, task_ids: Iterable[str]) -> None:
        """These tasks left the journal (their results expired)."""
        with self._finished_lock:
            for task_id in task_ids:
                entry = self._finished.pop(task_id, None)
                if entry is not None:
                    self._finished_bytes -= entry[1]

    def _release(self, task: Task) -> None:
        """Let go of a finished task's output; its record stays."""
        make = self._table.buffer_class
        with self._table.shard(task.task_id).lock:
            if not self._table.holds(task):
                return  # expired meanwhile: nothing left to release
            freed = 0
            for name, buf in list(task.streams.items()):
                held = len(buf)
                if not held:
                    continue
                # Marked first: a record taken in between holds the bytes,
                # and a mark counts only on a view that holds none.
                if task.released is None:
                    task.released = {}
                task.released[name] = held
                task.streams[name] = released_buffer(make, buf.total)
                freed += held
        if freed:
            with self._finished_lock:
                self.released_tasks += 1
                self.released_bytes += freed

    def merge_back(self, task: Task, only_grown: bool = False) -> None:
        """Merge spilled streams back into memory (``only_grown``: those that
        took appends since they were spilled); hold the shard lock."""

    # -- reads ------------------------------------------------------------------

    def record(self, task: Task) -> TaskRecord:
        try:
            views = {name: StreamView(name, *buf.view()) for name, buf in list(task.streams.items())}
        except StreamSpilled:
            with self._table.shard(task.task_id).lock:
                self.merge_back(task)
                views = {name: StreamView(name, *buf.view()) for name, buf in task.streams.items()}
        if task.released:
            for name, released in list(task.released.items()):
                view = views.get(name)
                if view is not None and not view.held:
                    views[name] = view._replace(released=released)
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
        super().__init__(table, budget)
        self._foreign_state = foreign_state
        #: One checkpoint or budget pass at a time.  Never taken while a
        #: shard lock is held.
        self._passes = threading.Lock()

    def checkpoint_pass(self) -> int:
        table = self._table
        with self._passes:
            started, errors = table.clock(), table.store_errors
            # Only tasks with a stream have anything to write or spill, and
            # only finished ones anything to let go of: a hub holding
            # 100,000 pending sub-tasks of which a hundred stream pays for
            # the hundred (measured: 207-226 ms a pass over every task, 40-54 ms
            # with this filter, most of it the one look at each task).
            candidates = [
                task for task in table.tasks.values() if task.streams or task.status in TERMINAL
            ]
            written = self._checkpoint(candidates)
            if table.store_errors == errors:
                self.checkpointed_at = started
            # Finished tasks whose final checkpoint failed at their end, and
            # has landed now, leave memory here.
            for task in candidates:
                if task.status in TERMINAL:
                    self._let_go(task)
            # The budget holds even when the store refused the checkpoint:
            # a spill is written (or undone) on its own.
            if self._budget is not None:
                self._enforce_budget(self._budget, candidates)
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
        batched = written = 0
        for task in tasks:
            if batched >= _CHECKPOINT_BATCH:
                # Snapshots are copies: a pass over thousands of streams
                # that wrote them all at once would hold a second copy of
                # every buffer.  If the store refuses, the rest waits for
                # the next pass.
                if not self._flush(items, totals):
                    return written
                written += len(items)
                items, totals, batched = [], [], 0
            try:
                # (A task that ended meanwhile is merged back instead: its
                # final state is written whole, and then it leaves memory.)
                if not unseal and not task.status.terminal and self._changed_while_spilled(task):
                    # Written as a new spill, so it stays spilled: merging
                    # every such stream back for the pass would bring them
                    # all back into memory at once, far past the budget.
                    written += self._spill(task) > 0
                    continue
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
                    batched += len(snapshot)
            except Exception as exc:  # noqa: BLE001 - one task's trouble is not every task's
                self._table.note_store_error(f"task {task.task_id!r} was not checkpointed: {exc}")
        if items and self._flush(items, totals):
            written += len(items)
        return written

    def _flush(self, items: list[tuple[str, str, bytes]], totals: list[tuple[Task, str, int]]) -> bool:
        if not self._write(items):
            return False
        for task, name, total in totals:
            # The store keeps the newest snapshot it was given, so it now
            # holds at least ``total`` bytes of this stream.
            task.checkpointed[name] = max(task.checkpointed.get(name, 0), total)
        return True

    @staticmethod
    def _changed_while_spilled(task: Task) -> bool:
        return any(
            buf.spilled and buf.total != task.checkpointed.get(name, 0)
            for name, buf in list(task.streams.items())
        )

    def after_end(self, task: Task) -> None:
        # Its final state is in the store: reads go there from now on, so a
        # finished task costs no memory for the whole of result_ttl.
        self._let_go(task)

    def forget(self, task_ids: Iterable[str]) -> None:
        """Nothing to do: finished tasks are not kept here."""

    def _enforce_budget(self, budget: int, tasks: list[Task]) -> None:
        """Bring resident stream bytes under ``budget``: first let go of
        finished tasks (their final state is in the store; they normally
        leave at their terminal transition, this catches those whose last
        checkpoint has not landed), then spill the buffers of running tasks,
        those idle the longest first.  ``tasks``: every task that had a
        stream or had ended when the pass began (the others hold no stream
        bytes; one whose first stream came since is counted next pass)."""
        # Those that left memory since (let go by this pass, or at their end
        # meanwhile) hold nothing: counted, their bytes would have running
        # tasks spilled for memory already freed.
        tasks = [task for task in tasks if self._table.holds(task)]
        resident = 0
        for task in tasks:
            written = task.written()
            task.idle_passes = task.idle_passes + 1 if written == task.budget_seen_total else 0
            task.budget_seen_total = written
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
            try:
                resident -= self._spill(task)
            except Exception as exc:  # noqa: BLE001 - one task's trouble is not every task's
                self._table.note_store_error(f"task {task.task_id!r} was not spilled: {exc}")

    def _let_go(self, task: Task) -> int:
        """Drop a finished task from memory once its final state is in the
        store (reads then come from there); return the bytes freed."""
        if not self._all_stored(task):
            return 0  # its final checkpoint has not landed yet: keep it
        shard = self._table.shard(task.task_id)
        with shard.lock:
            # Again under the lock: an end being applied sets what its commit
            # stored, then seals, and an append may land in between; looked
            # at from outside, it seemed all stored, and a refused last
            # checkpoint was then never tried again.
            if shard.entries.get(task.task_id) is not task or not self._all_stored(task):
                return 0
            del shard.entries[task.task_id]
        return sum(len(buf) for buf in task.streams.values())

    @staticmethod
    def _all_stored(task: Task) -> bool:
        return all(task.checkpointed.get(name, 0) == buf.total for name, buf in list(task.streams.items()))

    def _spill(self, task: Task) -> int:
        """Move a task's resident stream data to the store; return the bytes
        freed.  If the store does not take it, for any reason, the buffers
        are merged back at once: nothing a spill holds is ever lost."""
        with self._table.shard(task.task_id).lock:
            if task.status.terminal or task.ending or not self._table.holds(task):
                return 0
            # A spilled stream that took appends since is merged with its
            # stored part first, and spilled again as a whole.
            self.merge_back(task, only_grown=True)
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

    def merge_back(self, task: Task, only_grown: bool = False) -> None:
        for name, buf in task.streams.items():
            if not buf.spilled or (only_grown and not len(buf)):
                continue
            try:
                snapshot = self._table.store.get_stream(task.task_id, name)
            except StoreError:
                if self._table.store_closed:
                    # What the budget spilled is in the store, closed now:
                    # a held task is read after close() only from memory.
                    raise self._table.closed_error(
                        f"before task {task.task_id!r} could be read: the memory budget had "
                        f"moved its stream {name!r} to the store"
                    ) from None
                raise
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
