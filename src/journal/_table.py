"""The task table: the sharded registry of held tasks and the store behind it.

Every other room of the journal (residency, ownership, waits, the public
TaskJournal) reaches tasks through here: ``find`` a task by id (held in
memory, or read back from the store), ``revive`` a stored one into working
state, ``drop_locked`` one this journal no longer holds.  The table also
keeps what every room must agree on: whether the journal is open (closed, or
a forked child's copy), the error counters ``stats()`` reports, and when
each node was last known alive.

Store round trips under a shard lock.  The registry's shard locks guard a
task's in-memory state; a store call normally happens outside them, so that
one slow commit does not hold up the shard's other tasks.  A durable change
(``_changes.py``) checks under the lock, commits without it (one change of a
task in flight at a time) and applies under it.  Two places do call the
store with a shard lock held, because the store write and the in-memory
change must be one step for every other thread:

* merging a spilled buffer back (``DurableResidency.merge_back``) and a
  spill (``DurableResidency._spill``): the lock is what keeps a read from
  seeing a buffer half-spilled; a spill's write must land before a reader
  merges.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Optional

from journal._buffer_shared import decode_snapshot, encode_snapshot
from journal._task import AsyncWaiter, Task, wake
from journal.buffer import HeadTailBuffer
from journal.config import JournalConfig
from journal.errors import (
    CorruptSnapshot,
    InvalidArgument,
    JournalClosed,
    ResultExpired,
    StoreError,
    UnknownTask,
)
from journal.registry import Shard, ShardedRegistry
from journal.store import Store, StoredTask

__all__ = ["NodeLeases", "TaskTable", "unsealed"]

log = logging.getLogger("journal")


def unsealed(snapshot: bytes) -> bytes:
    """The same snapshot, not sealed: for an in-flight task whose streams
    close() sealed, so that they take its node's output after a restart."""
    state = decode_snapshot(snapshot)
    return encode_snapshot(state._replace(sealed=False)) if state.sealed else snapshot


class NodeLeases:
    """When each node was last known alive, for the lease sweep.

    Bounded: the sweep forgets a node that holds no task in flight here and
    whose lease has run out, so a hub that sees a million nodes over a week
    keeps only those it could still need.
    """

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}

    def renew(self, node_id: str, now: float) -> None:
        # The newest renewal wins, not the latest time: a wall clock stepped
        # back must not leave a lease stamped in the future.  Changes renew
        # with the clock read when they are applied, not when they began.
        self._seen[node_id] = now

    def last_seen(self, node_id: str, default: float) -> float:
        return self._seen.get(node_id, default)

    def forget_idle(self, active: set[str], seen_before: float) -> int:
        """Forget nodes not in ``active`` last seen before ``seen_before``."""
        idle = [node for node, seen in list(self._seen.items())
                if seen < seen_before and node not in active]
        for node in idle:
            self._seen.pop(node, None)
        return len(idle)

    def __len__(self) -> int:
        return len(self._seen)


class TaskTable:
    """The registry of held tasks, the store, and the journal's shared state."""

    def __init__(
        self,
        store: Store,
        config: JournalConfig,
        clock: Callable[[], float],
        buffer_class: type[HeadTailBuffer],
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.buffer_class = buffer_class
        self.tasks: ShardedRegistry[Task] = ShardedRegistry(config.shards)
        self.nodes = NodeLeases()
        self.closed = False
        #: Set by close() once its last checkpoint is over, as it closes the
        #: store: a store error then means only that.
        self.store_closed = False
        #: Set in a forked child: this copy shares its parent's store.
        self.forked = False
        self.pid = os.getpid()
        self.store_errors = 0
        self.last_store_error: Optional[str] = None
        #: Failed passes of the background thread (sweeps, checkpoints).
        self.background_errors = 0

    # -- open or closed --------------------------------------------------------

    def check_open(self) -> None:
        if self.closed or self.forked:
            raise self.closed_error()

    def closed_error(self, doing: str = "") -> JournalClosed:
        where = f" {doing}" if doing else ""
        if self.forked:
            return JournalClosed(
                f"this TaskJournal belongs to process {self.pid}, of which this process is a "
                f"fork{where}: the parent keeps its store; open a TaskJournal of your own here"
            )
        return JournalClosed(
            f"this TaskJournal was closed{where}; open a new one (a durable store keeps "
            "everything it acknowledged)"
        )

    # -- finding tasks -----------------------------------------------------------

    def shard(self, task_id: str) -> Shard[Task]:
        return self.tasks.shard(task_id)

    def held(self, task_id: object) -> Optional[Task]:
        """The task if this journal holds it in memory."""
        return self.tasks.get(task_id) if isinstance(task_id, str) else None

    def holds(self, task: Task) -> bool:
        return self.tasks.get(task.task_id) is task

    @contextmanager
    def reading_store(self) -> Iterator[None]:
        """Around a caller's read of the store: one that close() overtook
        (the store closed while the read was on its way) is JournalClosed,
        as a read that came after."""
        try:
            yield
        except StoreError:
            if self.closed:
                raise self.closed_error() from None
            raise

    def find(self, task_id: str) -> Task:
        """The task, held here or read from the store.  After close() only
        the tasks still held in memory can be read (the store is closed)."""
        if self.forked:
            raise self.closed_error()
        task = self.held(task_id)
        if task is not None and not task.registering:
            return task
        claimed = task
        self.check_open()
        if not isinstance(task_id, str):
            raise InvalidArgument(f"task id must be a str, got {type(task_id).__name__}")
        try:
            stored = self.store.get(task_id)
        except StoreError:
            if self.closed:  # closed while this read went to the store
                raise self.closed_error() from None
            raise
        if stored is not None:
            # Not held here (finished and let go, or held by another
            # replica): a snapshot of it as the store has it.  Nobody gets
            # a handle on it (stream() refuses a task not held here), so only
            # a finished one is sealed, as its record says.
            task = self.revive(stored)
            if task.status.terminal:
                for buf in task.streams.values():
                    buf.seal()
            return task
        if claimed is not None:
            return claimed  # a new registration being committed
        if self.store.tombstoned(task_id):
            raise ResultExpired(
                f"task {task_id!r} finished and its result expired after "
                f"result_ttl={self.config.result_ttl:g} s; raise result_ttl to keep results longer"
            )
        raise UnknownTask(
            f"no task {task_id!r} in this journal ({self.store.url}); "
            "register it first, or check the id"
        )

    def revive(self, item: StoredTask, problems: Optional[list[str]] = None) -> Task:
        """The working state of a stored task.  With ``problems``, a damaged
        stream snapshot is noted there and left out (its node resends that
        stream from 0); without, it raises CorruptSnapshot."""
        task = Task(item.row)
        task.owner = item.owner
        for name, snapshot in item.streams.items():
            try:
                buf = self.buffer_class.restore(snapshot)
                if buf.sealed and not task.status.terminal:
                    # Sealed by a close() while in flight: it goes on now.
                    buf = self.buffer_class.restore(unsealed(snapshot))
            except CorruptSnapshot as exc:
                if problems is None:
                    raise
                problems.append(f"task {task.task_id!r}, stream {name!r}: {exc}; left out")
                continue
            task.streams[name] = buf
            task.checkpointed[name] = buf.total
        task.seen_total = task.written()
        return task

    def hold(self, tasks: Iterable[Task], detached_until: float) -> None:
        """Hold revived in-flight tasks, detached until their nodes re-attach
        (a task already held stays as it is)."""
        for task in tasks:
            task.detached_until = detached_until
            with self.shard(task.task_id).lock:
                self.shard(task.task_id).entries.setdefault(task.task_id, task)

    def drop_locked(self, task: Task) -> None:
        """Forget a task this journal no longer holds (another replica owns
        it now); hold its shard lock.

        Its streams are sealed, so a node still sending here hears of it, and
        its waiters wake and go on waiting through the store.
        """
        shard = self.shard(task.task_id)
        if shard.entries.get(task.task_id) is task:
            del shard.entries[task.task_id]
        for buf in task.streams.values():
            buf.seal()
        waiters, task.async_waiters = task.async_waiters, None
        wake(task, waiters)

    def take_waiters(self, task: Task) -> list[AsyncWaiter]:
        with self.shard(task.task_id).lock:
            waiters, task.async_waiters = task.async_waiters, None
        return waiters or []

    # -- errors -----------------------------------------------------------------

    def note_store_error(self, message: str) -> None:
        self.store_errors += 1
        self.last_store_error = message
        log.warning("%s", message)
