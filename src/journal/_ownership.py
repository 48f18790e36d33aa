"""Ownership: which hub replica may act on a task, and how to wait for one
that another replica holds.

Two variants, chosen once by the kind of store:

* :class:`LocalOwnership` (``memory://``, SQLite): this journal owns every
  task in its store; nothing is ever held elsewhere.
* :class:`SharedOwnership` (a :class:`~journal.store.SharedStore`, Redis):
  each task has one owner replica; a replica adopts the tasks of replicas
  whose lease ran out, lets go of those another replica took, and waits
  for tasks held elsewhere through the store (woken by its "ended"
  messages, and re-reading it every poll interval in case one was lost).

Every entry point of the journal asks its ownership policy once (is this
task held elsewhere? may I act on it?), so none can forget to.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable
from typing import Optional, TypeVar

from journal._table import TaskTable
from journal._task import Deadline, Task, final_record, timeout_error
from journal.errors import OwnedElsewhere, WaitTimeout
from journal.records import TaskRecord
from journal.store import SharedStore, StoredTask

__all__ = ["LocalOwnership", "Ownership", "SharedOwnership", "ownership_for"]

_Read = TypeVar("_Read")  # a read handed to the read threads: a future of some kind

#: How a wait goes on once the task it waits for is held here.
LocalWait = Callable[[str, Optional[float]], TaskRecord]
LocalWaitAsync = Callable[[str, Optional[float]], Awaitable[TaskRecord]]
Record = Callable[[Task], TaskRecord]


def ownership_for(table: TaskTable) -> Ownership:
    store = table.store
    if isinstance(store, SharedStore):
        return SharedOwnership(table, store)
    return LocalOwnership(table)


class LocalOwnership:
    """One journal owns every task of its store."""

    #: This hub replica's id on a shared store; None here.
    replica: Optional[str] = None

    def __init__(self, table: TaskTable) -> None:
        self._table = table

    def load_in_flight(self) -> list[StoredTask]:
        """The in-flight tasks this journal takes on as it opens."""
        return self._table.store.load_in_flight()

    def start(self) -> None:
        """Begin listening to the store, once the journal is open."""

    def held_elsewhere(self, task: Task) -> bool:
        """True if another replica holds this (unfinished) task."""
        return False

    def refuse_elsewhere(self, task: Task) -> None:
        """Raise OwnedElsewhere if another replica holds the task."""

    def take_for_reattach(self, task: Task) -> Task:
        """The task as held here, for a node re-attaching to it."""
        return task

    def foreign_state(self, task: Task) -> None:
        """A spilled part of the task could not be merged back: one store,
        one owner, so it is damage, not another replica's work."""

    def sweep(self) -> dict[str, int]:
        """Adopt and let go of tasks (shared stores); what it did."""
        return {}

    def held_elsewhere_in_flight(self, held: set[str]) -> list[Task]:
        """In-flight tasks other replicas hold."""
        return []

    def find_within(self, task_id: str, deadline: Deadline, seconds: Optional[float],
                    first: bool = False) -> Task:
        """``find`` for a wait with ``deadline``: a local store answers at once."""
        return self._table.find(task_id)

    async def find_async(self, task_id: str, deadline: Deadline, seconds: Optional[float],
                         first: bool = False) -> Task:
        return self._table.find(task_id)

    def watch(self, task_id: str, call: Callable[[], None]) -> None:
        """Call ``call`` when the task may have ended on another replica."""

    def unwatch(self, task_id: str, call: Callable[[], None]) -> None:
        pass

    def wait_remote(self, task_id: str, seconds: Optional[float], deadline: Deadline,
                    record: Record, local: LocalWait) -> TaskRecord:
        return local(task_id, deadline.left())

    async def wait_remote_async(self, task_id: str, seconds: Optional[float], deadline: Deadline,
                                record: Record, local: LocalWaitAsync) -> TaskRecord:
        return await local(task_id, deadline.left())

    def poll_interval(self) -> float:
        return 1.0

    def store_errors(self) -> tuple[int, Optional[str]]:
        """Failures of the store's own background threads, and the last one."""
        return 0, None

    def wake_all(self) -> None:
        """close(): wake every remote waiter."""

    def close(self, release: bool = True) -> None:
        """close(): with ``release``, let others take this journal's tasks
        at once (a crash drill leaves its lease to run out)."""


class SharedOwnership(LocalOwnership):
    """One owner replica per task, on a store several replicas share."""

    #: The first store read of a wait gets at least this long, so that
    #: ``wait(t, 0)`` can still read t: a finished task is in the store, not
    #: in memory, and one round trip on a loaded machine (a cluster's first
    #: read, say) took more than 0.1 s.
    READ_FLOOR = 1.0
    #: A wait's later reads get the time left, or this if less: the read
    #: that finds the time up still says what state the task was left in.
    NEXT_READ_FLOOR = 0.1

    def __init__(self, table: TaskTable, store: SharedStore) -> None:
        super().__init__(table)
        self._store = store
        self.replica = store.replica
        #: Task id -> wake-up calls of waiters whose task is not held here.
        self._remote_waiters: dict[str, list[Callable[[], None]]] = {}
        self._lock = threading.Lock()
        #: Threads for the store reads of waits (made on first use): a read
        #: can hang while the server does not answer, for the URL's timeout;
        #: on a thread of its own the caller's timeout holds and an event
        #: loop is never blocked.
        self._reads: Optional[concurrent.futures.ThreadPoolExecutor] = None

    def load_in_flight(self) -> list[StoredTask]:
        # This replica's own (after a restart with the same id) and those of
        # replicas whose lease ran out: claimed, detached, as it opens.
        return self._store.adopt_orphans()

    def start(self) -> None:
        self._store.on_ended(self._on_ended)

    # -- who acts on a task -------------------------------------------------------

    def held_elsewhere(self, task: Task) -> bool:
        return not task.status.terminal and not self._table.holds(task)

    def refuse_elsewhere(self, task: Task) -> None:
        if self.held_elsewhere(task):
            raise self._owned_elsewhere(task)

    def _owned_elsewhere(self, task: Task) -> OwnedElsewhere:
        owner = task.owner or "?"
        return OwnedElsewhere(
            f"task {task.task_id!r} is held by hub replica {owner!r}, not this one "
            f"({self.replica!r}): its node streams and finishes it there",
            owner,
        )

    def take_for_reattach(self, task: Task) -> Task:
        """Make this replica the task's owner; return the task as held here.
        Raises OwnedElsewhere if a live replica has it attached."""
        if task.status.terminal:
            return task
        table = self._table
        try:
            stored = self._store.claim(task.task_id)
        except OwnedElsewhere:
            with table.shard(task.task_id).lock:
                table.drop_locked(task)
            raise
        shard = table.shard(task.task_id)
        with shard.lock:
            held = shard.entries.get(task.task_id)
            if held is not None:
                return held
            task = table.revive(stored)
            task.owner = self.replica
            task.detached_until = table.clock() + table.config.reattach_grace
            shard.entries[task.task_id] = task
        return task

    def foreign_state(self, task: Task) -> None:
        # Holding the task's shard lock (merge_back).
        owner = self._store.owners([task.task_id]).get(task.task_id)
        if owner != self.replica:
            task.owner = owner
            self._table.drop_locked(task)
            raise self._owned_elsewhere(task) from None

    def sweep(self) -> dict[str, int]:
        """Take over the in-flight tasks of replicas whose lease ran out (they
        wait detached for their nodes, as after a restart), and let go of the
        detached tasks another replica has since claimed."""
        table = self._table
        held = [t for t in table.tasks.values() if not t.status.terminal]
        detached = [t for t in held if t.detached_until is not None]
        if detached:
            owners = self._store.owners(t.task_id for t in detached)
            for task in detached:
                if owners.get(task.task_id) != self.replica:
                    with table.shard(task.task_id).lock:
                        table.drop_locked(task)
        # Never this replica's own tasks: one registered after ``held`` was
        # listed is ours and live, and "adopting" it would bring back a stale
        # copy once it has ended and been let go.  Our own tasks are taken
        # back only as the journal opens.
        orphans = self._store.adopt_orphans((t.task_id for t in held), own=False)
        adopted = [table.revive(item) for item in orphans]
        for task in adopted:
            task.owner = self.replica
        table.hold(adopted, table.clock() + table.config.reattach_grace)
        return {"adopted": len(adopted)}

    def held_elsewhere_in_flight(self, held: set[str]) -> list[Task]:
        tasks = []
        for item in self._store.in_flight_owned_elsewhere():
            if item.row.task_id not in held:
                tasks.append(self._table.revive(item))
        return tasks

    # -- reads for waits, bounded by the wait's own timeout -----------------------

    def find_within(self, task_id: str, deadline: Deadline, seconds: Optional[float],
                    first: bool = False) -> Task:
        """The task, read within the wait's time left (``first``: the wait's
        first read, which gets at least READ_FLOOR)."""
        table = self._table
        left = deadline.left()
        if self._read_here(task_id) or left is None:
            return table.find(task_id)
        allowed = max(left, self.READ_FLOOR if first else self.NEXT_READ_FLOOR)
        future = self._submit_read(lambda reads: reads.submit(table.find, task_id))
        try:
            return future.result(timeout=allowed)
        except concurrent.futures.TimeoutError:
            raise self._unreadable(task_id, seconds, allowed) from None

    async def find_async(self, task_id: str, deadline: Deadline, seconds: Optional[float],
                         first: bool = False) -> Task:
        table = self._table
        if self._read_here(task_id):
            return table.find(task_id)
        loop = asyncio.get_running_loop()
        read = self._submit_read(lambda reads: loop.run_in_executor(reads, table.find, task_id))
        left = deadline.left()
        if left is None:
            return await read
        allowed = max(left, self.READ_FLOOR if first else self.NEXT_READ_FLOOR)
        try:
            return await asyncio.wait_for(read, allowed)
        except asyncio.TimeoutError:
            raise self._unreadable(task_id, seconds, allowed) from None

    def _read_here(self, task_id: str) -> bool:
        """Whether to read without the read threads: a held task is in
        memory (unless its registration is being committed: that read goes
        to the store, within the wait's time), and a closed journal (or a
        forked child's copy, whose read threads did not come along) answers
        at once, with JournalClosed for anything it does not hold."""
        table = self._table
        if table.closed or table.forked:
            return True
        held = table.held(task_id)
        # One whose registration is being committed is read from the store.
        return held is not None and not held.registering

    def _submit_read(self, submit: Callable[[concurrent.futures.ThreadPoolExecutor], _Read]) -> _Read:
        with self._lock:
            if self._reads is None:
                self._reads = concurrent.futures.ThreadPoolExecutor(4, "journal-read")
            reads = self._reads
        try:
            return submit(reads)
        except RuntimeError:
            # close() shut the threads down since _read_here looked.
            if self._table.closed:
                raise self._table.closed_error() from None
            raise

    def _unreadable(self, task_id: str, seconds: Optional[float], allowed: float) -> WaitTimeout:
        return WaitTimeout(
            f"task {task_id!r} could not be read from {self._store.url} in "
            f"{allowed:.3g} s (the wait's timeout: {seconds or 0:g} s; the store is slow "
            "or away); wait again"
        )

    # -- waiting for a task another replica holds ---------------------------------

    def poll_interval(self) -> float:
        return self._store.poll_interval

    def _on_ended(self, task_id: Optional[str]) -> None:
        """Called by the store's listener: a task ended on some replica
        (None: messages may have been missed, so wake every remote waiter)."""
        with self._lock:
            if task_id is None:
                calls = [call for calls in self._remote_waiters.values() for call in calls]
            else:
                calls = list(self._remote_waiters.get(task_id, ()))
        for call in calls:
            call()

    def watch(self, task_id: str, call: Callable[[], None]) -> None:
        with self._lock:
            self._table.check_open()  # close() wakes only the waiters it finds
            self._remote_waiters.setdefault(task_id, []).append(call)

    def unwatch(self, task_id: str, call: Callable[[], None]) -> None:
        with self._lock:
            calls = self._remote_waiters.get(task_id, [])
            if call in calls:
                calls.remove(call)
            if not calls:
                self._remote_waiters.pop(task_id, None)

    def wait_remote(self, task_id: str, seconds: Optional[float], deadline: Deadline,
                    record: Record, local: LocalWait) -> TaskRecord:
        woken = threading.Event()
        self.watch(task_id, woken.set)
        try:
            while True:
                task = self.find_within(task_id, deadline, seconds)
                if task.status.terminal:
                    return final_record(record(task))
                if not self.held_elsewhere(task):
                    return local(task_id, deadline.left())  # it came to this replica
                if deadline.left() == 0.0:
                    raise timeout_error(task, seconds)
                woken.wait(deadline.poll_step(self.poll_interval()))
                woken.clear()
        finally:
            self.unwatch(task_id, woken.set)

    async def wait_remote_async(self, task_id: str, seconds: Optional[float], deadline: Deadline,
                                record: Record, local: LocalWaitAsync) -> TaskRecord:
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()

        def wake_up() -> None:
            try:
                loop.call_soon_threadsafe(woken.set)
            except RuntimeError:
                pass  # the loop is closed: nobody waits any more

        self.watch(task_id, wake_up)
        try:
            while True:
                task = await self.find_async(task_id, deadline, seconds)
                if task.status.terminal:
                    return final_record(record(task))
                if not self.held_elsewhere(task):
                    return await local(task_id, deadline.left())
                if deadline.left() == 0.0:
                    raise timeout_error(task, seconds)
                try:
                    await asyncio.wait_for(woken.wait(), deadline.poll_step(self.poll_interval()))
                except asyncio.TimeoutError:
                    pass
                woken.clear()
        finally:
            self.unwatch(task_id, wake_up)

    def store_errors(self) -> tuple[int, Optional[str]]:
        return self._store.background_errors, self._store.last_background_error

    def wake_all(self) -> None:
        self._on_ended(None)

    def close(self, release: bool = True) -> None:
        if self._reads is not None:
            self._reads.shutdown(wait=False)
        if release and not self._table.forked:
            self._store.release()  # others may adopt our tasks at once


Ownership = LocalOwnership
