"""TaskJournal: the public API, the lifecycle moves, sweeps and close.

The journal is cut along its policies, each in the file its name says:

* ``_table.py``     the task table: registry + store, find, revive, nodes
* ``_residency.py`` where stream bytes live: checkpoints, budget, spills
* ``_ownership.py`` who may act on a task: one journal, or hub replicas
* ``_waits.py``     result hooks that always end, and live follows

This file holds what every policy serves: registering and moving tasks
through their lifecycle, the time-driven sweep, and closing.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any, Optional

from journal._async_api import AsyncCalls
from journal._background import Maintenance
from journal._changes import Changes, NoLongerDue
from journal._ownership import Ownership, ownership_for
from journal._residency import Residency, residency_for
from journal._table import TaskTable
from journal._task import Task, describe
from journal._waits import Waits
from journal.buffer import HeadTailBuffer
from journal.config import JournalConfig
from journal.errors import (
    InvalidArgument,
    InvalidTransition,
    JournalClosed,
    OwnedElsewhere,
    StoreError,
    StreamSealed,
    UnknownTask,
)
from journal.lifecycle import TaskStatus
from journal.records import FollowChunk, Result, TaskRecord, record_from_row
from journal.store import Store, open_store
from journal.validation import (
    check_id,
    check_limit,
    check_status,
    encode_result,
)

__all__ = ["TaskJournal"]

log = logging.getLogger("journal")

#: Every journal open in this process, so that a forked child can mark its
#: copies unusable: they share the parent's store connection and lock.
_open_journals: weakref.WeakSet[TaskJournal] = weakref.WeakSet()


def _forget_parents_journals() -> None:
    for journal in list(_open_journals):
        journal._table.forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parents_journals)


class TaskJournal(AsyncCalls):
    """Tracks tasks sent to remote nodes, their output streams and results.

    Thread-safe: any number of threads may register, stream, finish and read
    tasks at once.  State changes take one lock of one registry shard;
    stream appends take no journal lock at all (see :meth:`stream`).

    Every waiter gets a final answer: a terminal record, or WaitTimeout,
    TaskLost, ResultExpired, UnknownTask or JournalClosed.  Deadlines, node
    leases and result retention are enforced by :meth:`sweep`, stream data
    is written to a durable store by :meth:`checkpoint`; a background thread
    calls both.

    A hub that is an asyncio server calls the ``*_async`` twins of the
    durable calls (``register_async``, ``complete_async``, ...) from its
    coroutines: they never block the event loop.  A sync durable call made
    on the loop blocks it for a commit (an fsync with ``synchronous=full``).
    """

    def __init__(
        self,
        store_url: Optional[str] = None,
        *,
        config: Optional[JournalConfig] = None,
        clock: Optional[Callable[[], float]] = None,
        buffer_class: Optional[type[HeadTailBuffer]] = None,
    ) -> None:
        """Open a journal on ``store_url`` (default ``config.store_url``).

        On a durable store, every task that was in flight when the last
        process stopped comes back *detached*: listed by :meth:`in_flight`,
        its streams restored from their last checkpoint, and LOST unless its
        node calls :meth:`reattach` within ``config.reattach_grace``.

        ``clock`` returns wall-clock seconds (default ``time.time``);
        ``buffer_class`` is the HeadTailBuffer implementation to use (default
        the one ``journal.buffer`` picked).
        """
        self.config = config if config is not None else JournalConfig()
        if not isinstance(self.config, JournalConfig):
            raise InvalidArgument(f"config must be a JournalConfig, got {config!r}")
        store = open_store(store_url or self.config.store_url, result_ttl=self.config.result_ttl)
        try:
            self._table = TaskTable(store, self.config, clock or time.time, buffer_class or HeadTailBuffer)
            self._ownership: Ownership = ownership_for(self._table)
            self._residency: Residency = residency_for(self._table, self._ownership.foreign_state)
            self._waits = Waits(self._table, self._ownership, self._residency)
            self._changes = Changes(self._table, self._ownership, self._residency)
            #: What could not be recovered from the store when this journal
            #: opened (a damaged stream snapshot, say), one line each.
            self.recovery_problems: list[str] = []
            self.recovered = self._recover()
            self._ownership.start()
        except BaseException:
            store.close()
            raise
        self._maintenance: Optional[Maintenance] = None
        _open_journals.add(self)
        checkpoint_every = self.config.checkpoint_interval if self._residency.durable else 0.0
        if self.config.sweep_interval or checkpoint_every:
            self._maintenance = Maintenance(self, self.config.sweep_interval, checkpoint_every)

    @classmethod
    def from_env(cls, **kwargs: Any) -> TaskJournal:
        """A journal configured from ``JOURNAL_*`` environment variables."""
        return cls(config=JournalConfig.from_env(), **kwargs)

    @property
    def store_url(self) -> str:
        return self._table.store.url

    @property
    def _store(self) -> Store:
        return self._table.store

    @property
    def _clock(self) -> Callable[[], float]:
        return self._table.clock

    @_clock.setter
    def _clock(self, clock: Callable[[], float]) -> None:
        self._table.clock = clock

    def _recover(self) -> int:
        table = self._table
        tasks = []
        for item in self._ownership.load_in_flight():
            try:
                tasks.append(table.revive(item, self.recovery_problems))
            except (ValueError, TypeError) as exc:  # a row no journal wrote
                self.recovery_problems.append(f"task {item.row.task_id!r}: {exc}")
        table.hold(tasks, table.clock() + self.config.reattach_grace)
        for problem in self.recovery_problems:
            log.warning("journal recovery: %s", problem)
        return len(tasks)

    # -- lifecycle ---------------------------------------------------------

    def register(
        self,
        task_id: str,
        node_id: str,
        meta: Optional[dict[str, Any]] = None,
        deadline: Optional[float] = None,
    ) -> TaskRecord:
        """Record a task dispatched to ``node_id``; it starts PENDING.

        ``deadline`` is seconds from now after which the task is TIMED_OUT.
        Registering renews the node's lease.  Durable when it returns.
        """
        return self._changes.register(task_id, node_id, meta, deadline)

    def start(self, task_id: str) -> TaskRecord:
        """PENDING -> RUNNING; also renews the node's lease."""
        return self._transition(task_id, TaskStatus.RUNNING)

    def complete(self, task_id: str, result: Result = None) -> TaskRecord:
        """-> COMPLETED with ``result`` (JSON-serialisable, or bytes)."""
        stored = encode_result(task_id, result)
        return self._transition(task_id, TaskStatus.COMPLETED, result=stored)

    def fail(self, task_id: str, error: object, result: Result = None) -> TaskRecord:
        """-> FAILED; ``error`` is a message or an exception, ``result`` what
        the task still returned (an exit code, say), as for :meth:`complete`."""
        stored = encode_result(task_id, result)
        return self._transition(task_id, TaskStatus.FAILED, error=describe(error), result=stored)

    def cancel(self, task_id: str, reason: Optional[str] = None) -> TaskRecord:
        """-> CANCELLED, with an optional reason."""
        text = None if reason is None else describe(reason)
        return self._transition(task_id, TaskStatus.CANCELLED, error=text)

    def _transition(self, task_id: str, target: TaskStatus, *,
                    still_due: Optional[Callable[[Task], bool]] = None, **changes: Any) -> TaskRecord:
        # Every change of state goes through here (tracing wraps it).
        return self._changes.transition(task_id, target, changes, still_due)

    # -- streams -----------------------------------------------------------

    def stream(self, task_id: str, name: str = "stdout") -> HeadTailBuffer:
        """The append handle of one stream of a task, created on first use.

        The handle is the stream's buffer itself: ``handle.append(chunk)``
        is one call into compiled code, with no lookup and no lock, safe from
        any thread.  It stays valid for the task's whole life, through
        checkpoints and spills; once the task ends (or the journal closes),
        appends raise StreamSealed.  Limits come from
        ``config.limits_for(name)``.  On a shared store, a task another
        replica owns raises OwnedElsewhere.
        """
        table = self._table
        task = table.find(task_id)
        self._ownership.refuse_elsewhere(task)
        if not task.status.terminal and not table.holds(task):
            raise InvalidTransition(
                f"task {task_id!r} is no longer held by this journal; re-attach it first"
            )
        buf = task.streams.get(name)
        if buf is not None:
            return buf
        check_id("stream name", name)
        with table.shard(task_id).lock:
            table.check_open()  # close() seals what it finds: nothing is added after
            buf = task.streams.get(name)
            if buf is None:
                if task.status.terminal:
                    raise StreamSealed(
                        f"task {task_id!r} has ended ({task.status.name}); its stream "
                        f"{name!r} takes no more data: send output before finishing"
                    )
                buf = table.buffer_class(
                    *self.config.limits_for(name), self.config.highlights_for(name)
                )
                task.streams[name] = buf
                task.checkpointed.setdefault(name, 0)
        return buf

    def follow(
        self, task_id: str, name: str = "stdout", *, poll_interval: float = 0.05
    ) -> AsyncIterator[FollowChunk]:
        """Yield new data of one stream as it arrives, until the task ends.

        Bytes that were dropped before they could be delivered (the stream
        outran the follower, or the middle was already cut) are reported in
        ``FollowChunk.skipped``, never silently passed over.  On a shared
        store a task another replica holds is followed through its
        checkpoints.  If the journal is closed first, what the stream holds
        in memory is delivered and then JournalClosed is raised (at once if
        the memory budget had spilled the stream to the store).
        """
        return self._waits.follow(task_id, name, poll_interval)

    # -- waiting -----------------------------------------------------------

    def wait(self, task_id: str, timeout: Optional[float] = None) -> TaskRecord:
        """Block until the task ends; return its terminal record.

        Raises WaitTimeout after ``timeout`` seconds (None or inf: until it
        ends, which deadlines and leases guarantee), TaskLost if its node was
        lost, ResultExpired or UnknownTask (also when its registration
        failed while this wait began), and JournalClosed if the journal is
        closed first.  On a shared store, the timeout holds even while the
        store does not answer, but for the wait's first read of the task,
        which gets at least 1 s (``wait(t, 0)`` must still be able to read a
        finished task, which is in the store, not in memory), and its last,
        which gets at least 0.1 s."""
        return self._waits.wait(task_id, timeout)

    async def wait_async(self, task_id: str, timeout: Optional[float] = None) -> TaskRecord:
        """``wait`` for asyncio: the event loop is never blocked."""
        return await self._waits.wait_async(task_id, timeout)

    # -- reading -----------------------------------------------------------

    def get(self, task_id: str) -> TaskRecord:
        """An immutable snapshot of the task, its result and its streams."""
        try:
            return self._residency.record(self._table.find(task_id))
        except OwnedElsewhere:
            # Another replica took it over while its buffers were spilled
            # here: read it as that replica last wrote it.
            return self._residency.record(self._table.find(task_id))

    def in_flight(self) -> list[TaskRecord]:
        """Every task not yet in a terminal state, oldest first.

        On a shared store this includes the tasks other hub replicas own,
        as their owners last wrote them (``TaskRecord.owner`` tells whose).
        """
        self._table.check_open()
        tasks = [t for t in self._table.tasks.values() if not t.status.terminal]
        with self._table.reading_store():
            tasks += self._ownership.held_elsewhere_in_flight({t.task_id for t in tasks})
        return [self._residency.record(t) for t in sorted(tasks, key=lambda t: t.created_at)]

    def list_tasks(
        self, status: Optional[TaskStatus] = None, node_id: Optional[str] = None, limit: Optional[int] = None
    ) -> list[TaskRecord]:
        """Records of the tasks the journal holds, newest first, without streams.

        ``status`` is a TaskStatus or its value (``"running"``), ``node_id``
        a node's id, ``limit`` a count >= 0; anything else is InvalidArgument.
        """
        self._table.check_open()
        wanted = check_status(status)
        if node_id is not None:
            check_id("node id", node_id)
        most = check_limit(limit)
        if most == 0:
            return []  # every store agrees on what a limit of 0 returns
        with self._table.reading_store():
            rows = self._table.store.list_tasks(
                status=None if wanted is None else wanted.value, node_id=node_id, limit=most
            )
        return [record_from_row(row, {}) for row in rows]

    def stats(self) -> dict[str, Any]:
        """Counts by status, and the bytes the streams hold, dropped and spilled.

        ``bytes_resident`` is stream data in memory (what ``memory_budget``
        bounds), ``bytes_spilled`` kept only in the store;
        ``bytes_checkpointed`` of ``bytes_written`` are durable, and
        ``checkpoint_age`` is the seconds since every stream last was (None
        before the first checkpoint, and on memory://).  ``appends`` counts
        the append calls this process has made to the streams it holds.
        ``output_released_tasks`` and ``output_released_bytes`` count the
        finished tasks whose output ``memory_budget`` released on memory://,
        and the bytes let go (their records stay).
        ``store_errors`` counts failed store writes of background passes (and
        of a shared store's own lease thread), ``background_errors`` the
        background passes that failed as a whole.
        """
        table = self._table
        table.check_open()
        store = table.store
        by_status = {status.value: 0 for status in TaskStatus}
        try:
            by_status.update(store.count_by_status())
        except StoreError as exc:
            # The store is away (a Redis outage): count what is held here.
            table.last_store_error = str(exc)
            for task in table.tasks.values():
                by_status[task.status.value] += 1
        streams = resident = held = dropped = written = checkpointed = appends = 0
        for task in table.tasks.values():
            for name, buf in list(task.streams.items()):
                streams += 1
                total = buf.total
                lost = buf.dropped
                resident += len(buf)
                held += total - lost
                # What memory:// released is not part of the dropped middle.
                released = task.released.get(name, 0) if task.released and not len(buf) else 0
                dropped += lost - released
                written += total
                appends += buf.appends
                checkpointed += min(task.checkpointed.get(name, 0), total)
        checkpointed_at = self._residency.checkpointed_at
        own_errors, own_last = self._ownership.store_errors()
        return {
            "tasks": sum(by_status.values()),
            "by_status": by_status,
            "tasks_in_memory": len(table.tasks),
            "streams": streams,
            "bytes_held": held,
            "bytes_resident": resident,
            "bytes_spilled": held - resident,
            "bytes_dropped": dropped,
            "bytes_written": written,
            "bytes_checkpointed": checkpointed,
            "appends": appends,
            "output_released_tasks": self._residency.released_tasks,
            "output_released_bytes": self._residency.released_bytes,
            "checkpoint_age": None if checkpointed_at is None
            else max(0.0, table.clock() - checkpointed_at),
            "nodes": len(table.nodes),
            "store_errors": table.store_errors + own_errors,
            "background_errors": table.background_errors,
            "last_store_error": table.last_store_error or own_last,
        }

    # -- nodes -------------------------------------------------------------

    def heartbeat(self, node_id: str) -> None:
        """Renew ``node_id``'s lease, keeping its tasks from being LOST."""
        self._table.check_open()
        check_id("node id", node_id)
        self._table.nodes.renew(node_id, self._table.clock())

    def reattach(self, task_id: str, node_id: str) -> TaskRecord:
        """A node reports it still runs ``task_id`` (after a hub restart).

        The task is no longer detached, runs on ``node_id`` from now on, and
        the node's lease is renewed.  Its streams carry on from their last
        checkpoint: the node should resend what it sent after that (compare
        ``get(task_id).streams[name].total`` with what it has sent).  On a
        shared store the task may be re-attached through any replica, unless
        a live replica has it attached (OwnedElsewhere).
        """
        return self._changes.reattach(task_id, node_id)

    # -- time-driven moves, retention, checkpoints ---------------------------

    def sweep(self) -> dict[str, int]:
        """Enforce deadlines, leases, reattach grace and result retention now.

        Returns how many tasks timed out, were lost and expired, and how many
        tombstones were forgotten.  On a shared store it first adopts the
        in-flight tasks of replicas whose lease ran out (``adopted``): they
        wait detached for their nodes, as after a restart.  A task the sweep
        cannot end (its store write fails) is counted and tried next time;
        the others are not held up.
        """
        self._table.check_open()
        with self._table.reading_store():
            return self._sweep()

    def _sweep(self) -> dict[str, int]:
        table = self._table
        now = table.clock()
        lease = self.config.lease_timeout
        counts = {"timed_out": 0, "lost": 0, "expired": 0, "tombstones_forgotten": 0}
        counts.update(self._ownership.sweep())
        ttl = self.config.result_ttl
        past_retention = []
        active: set[str] = set()
        unfinished = []
        # Every sign of life first, then the verdicts: a node that streamed
        # on one task keeps its other tasks, whichever the sweep reaches
        # first.
        for task in table.tasks.values():
            if task.status.terminal:
                if task.finished_at is not None and task.finished_at <= now - ttl:
                    past_retention.append(task.task_id)  # another replica may have expired it
                continue
            unfinished.append(task)
            active.add(task.node_id)
            written = task.written()
            if written != task.seen_total:
                task.seen_total = written
                if task.detached_until is None:
                    # Streaming counts as alive, as of now: the ``now`` this
                    # sweep began at is older than a heartbeat that came
                    # while the ownership sweep went to the store, and
                    # renewing overwrites.
                    table.nodes.renew(task.node_id, table.clock())
        for task in unfinished:
            verdict = self._verdict(task, now)
            if verdict is not None and self._end_quietly(task, *verdict):
                counts[verdict[0].value] += 1
        # A node with nothing in flight whose lease ran out is forgotten: the
        # bookkeeping grows with the nodes that matter, not with every node
        # ever seen.
        table.nodes.forget_idle(active, seen_before=now - lease)
        expired = table.store.expire_finished(cutoff=now - ttl, tombstone_until=now + ttl)
        for task_id in set(expired).union(past_retention):
            shard = table.shard(task_id)
            with shard.lock:
                shard.entries.pop(task_id, None)
        self._residency.forget(set(expired).union(past_retention))
        counts["expired"] = len(expired)
        counts["tombstones_forgotten"] = table.store.forget_tombstones(now)
        return counts

    def _verdict(self, task: Task, now: float) -> Optional[tuple[TaskStatus, str]]:
        """How the sweep ends an unfinished task now, if it does: its
        deadline passed, its node did not re-attach in time, or its node's
        lease ran out."""
        if task.deadline is not None and now >= task.deadline:
            return TaskStatus.TIMED_OUT, f"deadline passed {now - task.deadline:.1f} s ago"
        if task.detached_until is not None:
            if now >= task.detached_until:
                return TaskStatus.LOST, "its node did not re-attach after a hub restart"
            return None
        lease = self.config.lease_timeout
        if now >= self._table.nodes.last_seen(task.node_id, task.created_at) + lease:
            return TaskStatus.LOST, f"node {task.node_id!r} sent nothing for {lease:g} s"
        return None

    def _end_quietly(self, task: Task, status: TaskStatus, why: str) -> bool:
        def still_due(held: Task) -> bool:
            # Judged again under the task's lock: a registration, start or
            # re-attach applied since the verdict renewed the lease there.
            again = self._verdict(held, self._table.clock())
            return again is not None and again[0] is status

        try:
            self._transition(task.task_id, status, still_due=still_due, error=why)
        except (InvalidTransition, UnknownTask, OwnedElsewhere, JournalClosed, NoLongerDue):
            # It ended by itself or was answered meanwhile, another replica
            # has it, or we close.
            return False
        except Exception as exc:  # noqa: BLE001 - one task's trouble must not stop the sweep
            self._table.note_store_error(f"the sweep could not end task {task.task_id!r} ({why}): {exc}")
            return False
        return True

    def checkpoint(self) -> int:
        """Write every stream that changed since its last checkpoint; then,
        with a ``memory_budget``, move idle data out of memory.

        Returns how many streams were written.  A store error is logged and
        counted in ``stats()``; the data stays in memory and the next
        checkpoint tries again.
        """
        self._table.check_open()
        return self._residency.checkpoint_pass()

    def _background_pass(self, name: str) -> None:
        """One pass of the background thread: ``sweep`` or ``checkpoint``.
        Every exception is counted and logged; the thread goes on."""
        table = self._table
        if table.closed or table.forked:
            return
        try:
            if name == "sweep":
                self._sweep()
            else:
                self._residency.checkpoint_pass()
        except Exception as exc:  # noqa: BLE001 - the thread must outlive one bad pass
            if table.closed:
                return
            table.background_errors += 1
            table.last_store_error = f"background {name} failed: {exc!r}"
            log.exception("journal background %s failed; trying again next round", name)

    # -- plumbing ----------------------------------------------------------

    def check(self) -> list[str]:
        """The store's integrity problems; an empty list means sound."""
        self._table.check_open()
        with self._table.reading_store():
            return self._table.store.check()

    def close(self) -> None:
        """Stop the background thread, seal every stream, write a last
        checkpoint, wake every waiter, close the store.  Idempotent.

        After close, appends to any handle raise StreamSealed and every call
        raises JournalClosed (reads of tasks still held in memory excepted,
        but for streams the memory budget spilled to the store), so nothing
        is accepted that would not be persisted; waiters still
        blocked get JournalClosed (or the record, if their task ended)."""
        table = self._table
        if table.closed:
            return
        table.closed = True
        if table.forked:
            self._close_forked_copy()
            return
        if self._maintenance is not None:
            self._maintenance.stop()
        tasks = self._seal_all()
        try:
            self._residency.close(tasks)
        finally:
            self._waits.wake_all(tasks)
            self._ownership.close()
            table.store_closed = True
            table.store.close()

    def _close_forked_copy(self) -> None:
        """close() in a forked child.  Nothing of this copy is the child's to
        write, wake or give up: the parent goes on with all of it.  Nor can
        the child take the journal's locks: a thread that held one at the
        fork (a spill writing under a shard lock, say) did not come along,
        so it stays held for good.  The streams are sealed all the same, so
        that the child's appends are refused, not kept where nothing would
        ever store them."""
        for task in self._table.tasks.values_unlocked():
            for buf in list(task.streams.values()):
                buf.seal()

    def _seal_all(self) -> list[Task]:
        tasks = list(self._table.tasks.values())
        for task in tasks:
            for buf in list(task.streams.values()):
                buf.seal()
        return tasks

    def abandon(self) -> None:
        """Drop this journal the way a crash would: stop its background
        thread and release the store, writing nothing more (no final
        checkpoint, no lease given up).  For restart drills (``taskjournal
        simulate --restart-at``); a hub that shuts down calls :meth:`close`."""
        table = self._table
        if table.closed:
            return
        table.closed = True
        if table.forked:
            self._close_forked_copy()
            return
        if self._maintenance is not None:
            self._maintenance.stop()
        self._waits.wake_all(self._seal_all())
        self._ownership.close(release=False)
        table.store_closed = True
        table.store.close()

    def __enter__(self) -> TaskJournal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<TaskJournal {self.store_url} tasks in memory={len(self._table.tasks)}>"
