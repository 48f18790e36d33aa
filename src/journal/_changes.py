"""Durable changes of a task: registering it, moving it, re-attaching it.

Each change is made in three steps, and the shard lock is held only for the
in-memory ones, never while the store commits:

1. *begin*, under the lock: check the change against the task as it is,
   take what the store needs (the row, the final stream snapshots), and
   mark the task as changing;
2. *commit*, without the lock: the store makes it durable, in one group
   commit with whatever else is queued (so the changes of one shard share a
   commit instead of queueing behind each other's);
3. *apply* (or *undo*, if the store refused), under the lock: the task
   takes its new state and the mark goes.

One change of a task is in flight at a time: a change that begins while
another is marked waits until that one is applied or undone, then checks
itself against the result.  So the store never sees two changes of a task
out of order, and nobody sees a state the store does not hold.

The async calls take the same steps.  Their commit is queued without
waiting (``put_task_async``), and step 3 runs on the thread that led the
commit, not on the event loop: the journal's state follows the store even
if the loop stops, and the loop is woken once per batch to hand the
awaiting coroutines their records.  A coroutine cancelled while it awaits
stops listening only: a change that was queued is committed and applied
exactly as if it had waited.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from types import MappingProxyType
from typing import Any, Optional

from journal._ownership import Ownership
from journal._residency import Residency
from journal._table import TaskTable
from journal._task import AsyncWaiter, Task, wake
from journal.errors import DuplicateTask, InvalidTransition, OwnedElsewhere
from journal.lifecycle import TaskStatus, check_transition
from journal.records import StreamView, TaskRecord
from journal.registry import Shard
from journal.store.base import SharedStore, Snapshotable, TaskRow, put_task_async
from journal.validation import check_deadline, check_id, encode_json, read_back_json

__all__ = ["Changes", "NoLongerDue"]

_NO_STREAMS: MappingProxyType[str, StreamView] = MappingProxyType({})


class NoLongerDue(Exception):
    """A sweep's verdict on a task no longer holds, or another change of
    the task is in flight: the next sweep judges it again."""


class _Gate:
    """Open once a task's change in flight is applied or undone; a change
    that found it closed waits here, then begins again.

    Nearly every change has no one waiting for it: the event and the list
    of async waiters are made by the first waiter of each kind (under the
    shard lock, like ``open``, so none is made after the gate opened)."""

    __slots__ = ("event", "waiters")

    def __init__(self) -> None:
        self.event: Optional[threading.Event] = None
        self.waiters: Optional[list[AsyncWaiter]] = None

    def waiter_event(self) -> threading.Event:
        """Under the task's shard lock."""
        if self.event is None:
            self.event = threading.Event()
        return self.event

    def open(self) -> None:
        """Under the task's shard lock."""
        if self.event is not None:
            self.event.set()
        for loop, future in self.waiters or ():
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:
                pass  # that loop is closed: nobody waits there any more


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Taken:
    """A stream snapshot taken at *begin*, under the lock: a spill between
    begin and commit cannot leave the commit without the stream's bytes."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def snapshot(self) -> bytes:
        return self.data


class _Move:
    """One change of a held task between *begin* and *apply*: a move to
    ``target``, or (``target`` None) a re-attach to ``node_id``."""

    __slots__ = ("task", "target", "changes", "row", "final", "totals", "now", "gate")

    def __init__(self, task: Task, target: Optional[TaskStatus], changes: dict[str, Any],
                 row: TaskRow, final: Optional[dict[str, Snapshotable]], totals: dict[str, int],
                 now: float, gate: _Gate) -> None:
        self.task = task
        self.target = target
        self.changes = changes
        self.row = row
        self.final = final
        self.totals = totals
        self.now = now
        self.gate = gate


class Changes:
    """The journal's durable changes, sync and async (see the module doc)."""

    def __init__(self, table: TaskTable, ownership: Ownership, residency: Residency) -> None:
        self._table = table
        self._ownership = ownership
        self._residency = residency
        #: Task id -> the gate of its change in flight; under the shard lock.
        self._moving: dict[str, _Gate] = {}
        #: A re-attach on a shared store claims the task from the store
        #: first, a call that waits: async, it runs on a thread.
        self._claims = isinstance(table.store, SharedStore)

    # -- register ----------------------------------------------------------------

    def register(self, task_id: str, node_id: str, meta: Optional[dict[str, Any]],
                 deadline: Optional[float]) -> TaskRecord:
        task, row, shard, record_meta = self._claim(task_id, node_id, meta, deadline)
        try:
            # The store refuses ids it holds (finished tasks the registry
            # let go of) with DuplicateTask too.
            self._table.store.put_task(row, new=True)
        except BaseException:
            self._unclaim(task)
            raise
        return self._registered(task, shard, record_meta)

    async def register_async(self, task_id: str, node_id: str, meta: Optional[dict[str, Any]],
                             deadline: Optional[float]) -> TaskRecord:
        task, row, shard, record_meta = self._claim(task_id, node_id, meta, deadline)

        def finish(error: Optional[BaseException]) -> TaskRecord:
            if error is not None:
                self._unclaim(task)
                raise error
            return self._registered(task, shard, record_meta)

        try:
            future = put_task_async(self._table.store, row, new=True, finish=finish)
        except BaseException:
            self._unclaim(task)
            raise
        return await future

    def _claim(self, task_id: str, node_id: str, meta: Optional[dict[str, Any]],
               deadline: Optional[float]) -> tuple[Task, TaskRow, Shard[Task], Any]:
        """Check the arguments, and claim the id in the registry: the
        commit is made without the shard lock, so that the registrations of
        one shard share a group commit instead of queueing behind each other."""
        table = self._table
        if table.closed or table.forked:
            raise table.closed_error()
        check_id("task id", task_id)
        check_id("node id", node_id)
        meta_json = None if meta is None else encode_json("meta", task_id, meta)
        # The record's meta, decoded now: what cannot be read back is refused
        # before anything is claimed or written.
        record_meta = None if meta_json is None else read_back_json("meta", task_id, meta_json)
        relative = None if deadline is None else check_deadline(task_id, deadline)
        now = table.clock()
        row = TaskRow(task_id, node_id, "pending", meta_json, None, None, now, now, None,
                      None if relative is None else now + relative)
        task = Task(row)
        shard = table.shard(task_id)
        with shard.lock:
            held = shard.entries.get(task_id)
            if held is not None:
                raise DuplicateTask(
                    f"task {task_id!r} is already registered (on node {held.node_id!r}); "
                    "use a new id for a new task"
                )
            shard.entries[task_id] = task
            # Until the store has it, no other change of this id may begin:
            # a finished task the registry let go of has the same id, and a
            # start() or complete() that found the claim would overwrite its
            # row.  They wait for the registration, then look again.
            task.registering = True
            self._moving[task_id] = _Gate()
        task.owner = self._ownership.replica
        return task, row, shard, record_meta

    def _unclaim(self, task: Task) -> None:
        shard = self._table.shard(task.task_id)
        with shard.lock:
            if shard.entries.get(task.task_id) is task:
                del shard.entries[task.task_id]
            self._end_registration(task)
            waiters, task.async_waiters = task.async_waiters, None
        # A wait() that found the task while it was being committed looks
        # again, and hears that there is no such task.
        wake(task, waiters)

    def _end_registration(self, task: Task) -> None:
        """Under the shard lock."""
        task.registering = False
        gate = self._moving.pop(task.task_id, None)
        if gate is not None:
            gate.open()

    def _registered(self, task: Task, shard: Shard[Task], meta: Any) -> TaskRecord:
        """The record of a registration just committed; ``shard`` is the
        task's, ``meta`` the meta as _claim read it back.  A new task has no
        streams and nothing else to decode."""
        with shard.lock:
            # Renewed before the gate opens, so that a sweep that finds the
            # gate open finds the lease renewed too; as of now, not of when
            # the registration began: its commit may have taken a while.
            self._table.nodes.renew(task.node_id, self._table.clock())
            self._end_registration(task)
        return TaskRecord(
            task.task_id, task.node_id, TaskStatus.PENDING, None, None, meta,
            task.created_at, task.created_at, None, task.deadline, False, _NO_STREAMS,
        )

    # -- moves through the lifecycle -------------------------------------------------

    def transition(self, task_id: str, target: TaskStatus, changes: dict[str, Any],
                   still_due: Optional[Callable[[Task], bool]] = None) -> TaskRecord:
        """``still_due``: the sweep's verdict, judged again under the task's
        lock; NoLongerDue if it no longer holds or another change of the
        task is in flight."""
        task = self._find(task_id)
        while True:
            move = self._begin(task, target, changes, still_due=still_due)
            if isinstance(move, _Move):
                break
            move.wait()  # the change in flight ends (applied or undone)
        return self._commit(move)

    async def transition_async(self, task_id: str, target: TaskStatus,
                               changes: dict[str, Any]) -> TaskRecord:
        task = self._find(task_id)
        loop = asyncio.get_running_loop()
        while True:
            move = self._begin(task, target, changes, loop)
            if isinstance(move, _Move):
                break
            await move
        return await self._commit_async(move)

    def reattach(self, task_id: str, node_id: str) -> TaskRecord:
        task = self._find_for_reattach(task_id, node_id)
        while True:
            move = self._begin(task, None, {"node_id": node_id})
            if isinstance(move, _Move):
                break
            move.wait()
        return self._commit(move)

    async def reattach_async(self, task_id: str, node_id: str) -> TaskRecord:
        loop = asyncio.get_running_loop()
        if self._claims:
            # The claim is a store round trip: the whole call on a thread,
            # into a future of ours, so that a cancelled await leaves it be.
            outcome: asyncio.Future[TaskRecord] = loop.create_future()
            call = loop.run_in_executor(None, self.reattach, task_id, node_id)
            call.add_done_callback(lambda done: _copy(done, outcome))
            return await outcome
        task = self._find_for_reattach(task_id, node_id)
        while True:
            move = self._begin(task, None, {"node_id": node_id}, loop)
            if isinstance(move, _Move):
                break
            await move
        return await self._commit_async(move)

    def _find(self, task_id: str) -> Task:
        self._table.check_open()
        task = self._table.find(task_id)
        self._ownership.refuse_elsewhere(task)
        return task

    def _find_for_reattach(self, task_id: str, node_id: str) -> Task:
        table = self._table
        table.check_open()
        check_id("node id", node_id)
        return self._ownership.take_for_reattach(table.find(task_id))

    def _begin(self, task: Task, target: Optional[TaskStatus], changes: dict[str, Any],
               loop: Optional[asyncio.AbstractEventLoop] = None,
               still_due: Optional[Callable[[Task], bool]] = None) -> Any:
        """The move, or, if another change of the task is in flight, what to
        wait on before beginning again: its gate's event (threads) or a
        future of ``loop``."""
        table = self._table
        task_id = task.task_id
        shard = table.shard(task_id)
        with shard.lock:
            # Again on every try: a change that waited out another one may
            # find the journal closed meanwhile.
            table.check_open()
            gate = self._moving.get(task_id)
            if gate is not None:
                if still_due is not None:
                    # The change in flight (a registration, start, re-attach
                    # or end) is news the verdict was taken without, and the
                    # sweep waits on no commit.
                    raise NoLongerDue(task_id)
                if loop is None:
                    return gate.waiter_event()
                future: asyncio.Future[None] = loop.create_future()
                if gate.waiters is None:
                    gate.waiters = []
                gate.waiters.append((loop, future))
                return future
            if target is None:
                if task.status.terminal:
                    raise InvalidTransition(
                        f"task {task_id!r} already ended ({task.status.name}); "
                        "a node cannot re-attach to it: read its result instead"
                    )
                if shard.entries.get(task_id) is not task:
                    # A registration of this id that the store refused.
                    raise InvalidTransition(f"task {task_id!r} is no longer held by this journal")
            else:
                check_transition(task_id, task.status, target)
                if shard.entries.get(task_id) is not task:
                    raise InvalidTransition(f"task {task_id!r} is no longer held by this journal")
                # A change applied since the verdict (its lease renewed under
                # this lock) may have answered it.
                if still_due is not None and not still_due(task):
                    raise NoLongerDue(task_id)
            now = table.clock()
            changes = dict(changes)
            final: Optional[dict[str, Snapshotable]] = None
            totals: dict[str, int] = {}
            if target is not None and target.terminal:
                changes["finished_at"] = now
                self._residency.merge_back(task)
                # Not spilled again until applied: the record apply returns
                # must not need a store read after the commit.
                task.ending = True
                # A terminal row goes with its streams' final state in one
                # commit.  Totals first: they must not exceed the snapshots.
                totals = {name: buf.total for name, buf in task.streams.items()}
                final = {name: _Taken(buf.snapshot()) for name, buf in task.streams.items()}
            row = task.row(
                status=task.status.value if target is None else target.value,
                updated_at=now, **changes,
            )
            gate = self._moving[task_id] = _Gate()
        return _Move(task, target, changes, row, final, totals, now, gate)

    def _commit(self, move: _Move) -> TaskRecord:
        # Durable first: if the store refuses, nothing has changed.
        try:
            self._table.store.put_task(move.row, move.final)
        except BaseException as exc:
            self._undo(move, exc)
            raise
        return self._apply(move)

    async def _commit_async(self, move: _Move) -> TaskRecord:
        def finish(error: Optional[BaseException]) -> TaskRecord:
            if error is not None:
                self._undo(move, error)
                raise error
            return self._apply(move)

        try:
            future = put_task_async(self._table.store, move.row, move.final, finish=finish)
        except BaseException as exc:
            self._undo(move, exc)
            raise
        return await future

    def _undo(self, move: _Move, error: BaseException) -> None:
        task = move.task
        with self._table.shard(task.task_id).lock:
            task.ending = False
            if isinstance(error, OwnedElsewhere):
                self._table.drop_locked(task)
            del self._moving[task.task_id]
            move.gate.open()

    def _apply(self, move: _Move) -> TaskRecord:
        task, target, changes, now = move.task, move.target, move.changes, move.now
        waiters: Optional[list[AsyncWaiter]] = None
        with self._table.shard(task.task_id).lock:
            task.updated_at = now
            if target is None:
                task.node_id = changes["node_id"]
                task.detached_until = None
            else:
                task.status = target
                for name in ("result", "error", "finished_at"):
                    if name in changes:
                        setattr(task, name, changes[name])
            if target is not None and target.terminal:
                checkpointed = task.checkpointed
                for name, total in move.totals.items():
                    # A checkpoint may have landed a later state meanwhile.
                    if total > checkpointed.get(name, 0):
                        checkpointed[name] = total
                task.detached_until = None
                for buf in task.streams.values():
                    buf.seal()
                waiters, task.async_waiters = task.async_waiters, None
            else:
                # Under the lock, before the gate opens, as of now: see
                # _registered.
                self._table.nodes.renew(task.node_id, self._table.clock())
            del self._moving[task.task_id]
            move.gate.open()
        if target is not None and target.terminal:
            # Appends that raced the seal are kept too: one more checkpoint.
            self._residency.checkpoint([task])
            self._residency.after_end(task)
            wake(task, waiters)
        return self._residency.record(task)


def _copy(done: asyncio.Future[TaskRecord], into: asyncio.Future[TaskRecord]) -> None:
    if into.done():
        return
    if done.cancelled():
        into.cancel()
    elif done.exception() is not None:
        into.set_exception(done.exception())  # type: ignore[arg-type]  # not None: just checked
    else:
        into.set_result(done.result())
