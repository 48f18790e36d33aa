"""TaskJournal: task lifecycle, stream handles, result hooks, durability."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from types import MappingProxyType
from typing import Any, Optional

from journal._background import Maintenance
from journal._buffer_shared import snapshot_total
from journal._task import AsyncWaiter, Task, describe, final_record, wake
from journal.buffer import HeadTailBuffer
from journal.config import JournalConfig
from journal.errors import (
    DuplicateTask,
    InvalidArgument,
    InvalidTransition,
    JournalClosed,
    OwnedElsewhere,
    ResultExpired,
    StoreError,
    StreamSealed,
    UnknownTask,
    WaitTimeout,
)
from journal.lifecycle import TaskStatus, check_transition
from journal.records import FollowChunk, Result, StreamView, TaskRecord, record_from_row
from journal.registry import ShardedRegistry
from journal.store import StoredTask, TaskRow, open_store
from journal.validation import (
    check_deadline,
    check_id,
    check_timeout,
    decode_result,
    encode_json,
    encode_result,
)

__all__ = ["TaskJournal"]

_NO_STREAMS: MappingProxyType[str, StreamView] = MappingProxyType({})

log = logging.getLogger("journal")


class TaskJournal:
    """Tracks tasks sent to remote nodes, their output streams and results.

    Thread-safe: any number of threads may register, stream, finish and read
    tasks at once.  State changes take one lock of one registry shard;
    stream appends take no journal lock at all (see :meth:`stream`).

    Every waiter gets a final answer: a terminal record, or WaitTimeout,
    TaskLost, ResultExpired or UnknownTask.  Deadlines, node leases and
    result retention are enforced by :meth:`sweep`, stream data is written to
    a durable store by :meth:`checkpoint`; a background thread calls both.
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
        self._clock = clock or time.time
        self._buffer_class = buffer_class or HeadTailBuffer
        self._tasks: ShardedRegistry[Task] = ShardedRegistry(self.config.shards)
        #: Node id -> wall-clock time it was last known alive.
        self._node_seen: dict[str, float] = {}
        self._closed = False
        self._store_errors = 0
        self._last_store_error: Optional[str] = None
        #: When the streams were last all written to the store (durable stores).
        self._checkpointed_at: Optional[float] = None
        self._store = open_store(store_url or self.config.store_url, result_ttl=self.config.result_ttl)
        #: On a shared store (Redis), the id this hub replica writes as owner.
        self._replica: Optional[str] = getattr(self._store, "replica", None)
        #: Task id -> wake-up calls of waiters whose task is not held here.
        self._remote_waiters: dict[str, list[Callable[[], None]]] = {}
        self._remote_lock = threading.Lock()
        if self.config.memory_budget is not None and not self._store.durable:
            self._store.close()
            raise InvalidArgument(
                f"memory_budget needs a durable store to spill to; {self._store.url} keeps "
                "everything in memory: use sqlite:///path/journal.db, or no budget"
            )
        try:
            self.recovered = self._recover()
            if self._replica is not None:
                self._store.on_ended(self._on_ended)
        except BaseException:
            self._store.close()
            raise
        self._maintenance: Optional[Maintenance] = None
        checkpoint_every = self.config.checkpoint_interval if self._store.durable else 0.0
        if self.config.sweep_interval or checkpoint_every:
            self._maintenance = Maintenance(self, self.config.sweep_interval, checkpoint_every)

    @classmethod
    def from_env(cls, **kwargs: Any) -> TaskJournal:
        """A journal configured from ``JOURNAL_*`` environment variables."""
        return cls(config=JournalConfig.from_env(), **kwargs)

    @property
    def store_url(self) -> str:
        return self._store.url

    def _recover(self) -> int:
        stored = self._store.load_in_flight()
        until = self._clock() + self.config.reattach_grace
        for item in stored:
            task = self._revive(item)
            task.detached_until = until
            self._tasks.shard(task.task_id).entries[task.task_id] = task
        return len(stored)

    def _revive(self, item: StoredTask) -> Task:
        task = Task(item.row)
        task.owner = item.owner
        for name, snapshot in item.streams.items():
            buf = self._buffer_class.restore(snapshot)
            task.streams[name] = buf
            task.checkpointed[name] = buf.total
        task.seen_total = task.written()
        return task

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
        self._check_open()
        check_id("task id", task_id)
        check_id("node id", node_id)
        meta_json = encode_json("meta", task_id, meta)
        relative = check_deadline(task_id, deadline)
        now = self._clock()
        task = Task(
            TaskRow(
                task_id, node_id, TaskStatus.PENDING.value, meta_json, None, None, now, now,
                None, None if relative is None else now + relative,
            )
        )
        shard = self._tasks.shard(task_id)
        with shard.lock:
            held = shard.entries.get(task_id)
            if held is not None:
                raise DuplicateTask(
                    f"task {task_id!r} is already registered (on node {held.node_id!r}); "
                    "use a new id for a new task"
                )
            # Claim the id, then commit without the shard lock, so that the
            # registrations of one shard share a group commit instead of
            # queueing behind each other's.
            shard.entries[task_id] = task
        task.owner = self._replica
        try:
            # The store refuses ids it holds (finished tasks the registry
            # let go of) with DuplicateTask too.
            self._store.put_task(task.row(), new=True)
        except BaseException:
            with shard.lock:
                if shard.entries.get(task_id) is task:
                    del shard.entries[task_id]
            raise
        self._node_seen[node_id] = now
        # A new task has no streams and nothing to decode but its meta.
        return TaskRecord(
            task_id, node_id, TaskStatus.PENDING, None, None,
            None if meta_json is None else decode_result(meta_json),
            now, now, None, task.deadline, False, _NO_STREAMS,
        )

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

    def _transition(self, task_id: str, target: TaskStatus, **changes: Any) -> TaskRecord:
        self._check_open()
        task = self._require(task_id)
        if self._held_elsewhere(task):
            raise self._owned_elsewhere(task)
        shard = self._tasks.shard(task_id)
        now = self._clock()
        waiters: list[AsyncWaiter] = []
        with shard.lock:
            check_transition(task_id, task.status, target)
            if shard.entries.get(task_id) is not task:
                raise InvalidTransition(f"task {task_id!r} is no longer held by this journal")
            if target.terminal:
                changes["finished_at"] = now
                self._unspill_all(task)
            row = task.row(status=target.value, updated_at=now, **changes)
            # Durable first: if the store refuses, nothing has changed.  A
            # terminal row goes with its streams' final state in one commit.
            final = dict(task.streams) if target.terminal else None
            totals = {name: buf.total for name, buf in task.streams.items()}
            try:
                self._store.put_task(row, final)
            except OwnedElsewhere:
                self._drop_locked(task)
                raise
            task.status = target
            task.updated_at = now
            for name in ("result", "error", "finished_at"):
                if name in changes:
                    setattr(task, name, changes[name])
            if target.terminal:
                task.checkpointed.update(totals)
                task.detached_until = None
                for buf in task.streams.values():
                    buf.seal()
                waiters, task.async_waiters = task.async_waiters, []
        if target.terminal:
            # Appends that raced the seal are kept too: one more checkpoint.
            self._checkpoint_tasks([task])
            if self.config.memory_budget is not None:
                self._let_go(task)
            wake(task, waiters)
        else:
            self._node_seen[task.node_id] = now
        return self._record(task)

    # -- streams -----------------------------------------------------------

    def stream(self, task_id: str, name: str = "stdout") -> HeadTailBuffer:
        """The append handle of one stream of a task, created on first use.

        The handle is the stream's buffer itself: ``handle.append(chunk)``
        is one call into compiled code, with no lookup and no lock, safe from
        any thread.  It stays valid for the task's whole life, through
        checkpoints and spills; once the task ends, appends raise
        StreamSealed.  Limits come from ``config.limits_for(name)``.
        On a shared store, a task another replica owns raises OwnedElsewhere.
        """
        task = self._require(task_id)
        if self._held_elsewhere(task):
            raise self._owned_elsewhere(task)
        buf = task.streams.get(name)
        if buf is not None:
            return buf
        check_id("stream name", name)
        with self._tasks.shard(task_id).lock:
            buf = task.streams.get(name)
            if buf is None:
                if task.status.terminal:
                    raise StreamSealed(
                        f"task {task_id!r} has ended ({task.status.name}); its stream "
                        f"{name!r} takes no more data: send output before finishing"
                    )
                buf = self._buffer_class(
                    *self.config.limits_for(name), self.config.highlights_for(name)
                )
                task.streams[name] = buf
                task.checkpointed.setdefault(name, 0)
        return buf

    async def follow(
        self, task_id: str, name: str = "stdout", *, poll_interval: float = 0.05
    ) -> AsyncIterator[FollowChunk]:
        """Yield new data of one stream as it arrives, until the task ends.

        Bytes that were dropped before they could be delivered (the stream
        outran the follower, or the middle was already cut) are reported in
        ``FollowChunk.skipped``, never silently passed over.
        """
        task = self._require(task_id)
        loop = asyncio.get_running_loop()
        ended = loop.create_future()
        self._add_async_waiter(task, loop, ended)
        offset = 0
        try:
            while True:
                buf = task.streams.get(name)
                if buf is None:
                    if task.status.terminal:
                        return
                else:
                    if buf.spilled:
                        self._unspill(task)
                    # Read the seal before the data: if it was sealed, this
                    # read is the last one.
                    sealed = buf.sealed
                    position, data = buf.read_from(offset)
                    if data or position > offset:
                        yield FollowChunk(data, position, position - offset)
                        offset = position + len(data)
                    if sealed and offset >= buf.total:
                        return
                if not ended.done():
                    await asyncio.wait({ended}, timeout=poll_interval)
        finally:
            self._remove_async_waiter(task, loop, ended)

    # -- waiting -----------------------------------------------------------

    def wait(self, task_id: str, timeout: Optional[float] = None) -> TaskRecord:
        """Block until the task ends; return its terminal record.

        Raises WaitTimeout after ``timeout`` seconds (None: until it ends,
        which deadlines and leases guarantee), TaskLost if its node was
        lost, ResultExpired or UnknownTask.
        """
        task = self._require(task_id)
        seconds = check_timeout(task_id, timeout)
        started = time.monotonic()
        if self._held_elsewhere(task):
            return self._wait_remote(task_id, seconds)
        with self._tasks.shard(task_id).lock:
            if not task.status.terminal:
                if task.done is None:
                    task.done = threading.Event()
                done = task.done
            else:
                done = None
        if done is not None and not done.wait(seconds):
            raise self._timeout(task, seconds)
        if not task.status.terminal:  # another replica took the task over
            left = None if seconds is None else max(0.0, seconds - (time.monotonic() - started))
            return self._wait_remote(task_id, left)
        return final_record(self._record(task))

    async def wait_async(self, task_id: str, timeout: Optional[float] = None) -> TaskRecord:
        """``wait`` for asyncio: the event loop is never blocked."""
        task = self._require(task_id)
        seconds = check_timeout(task_id, timeout)
        started = time.monotonic()
        if self._held_elsewhere(task):
            return await self._wait_remote_async(task_id, seconds)
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        if self._add_async_waiter(task, loop, done):
            try:
                await asyncio.wait_for(done, seconds)
            except asyncio.TimeoutError:
                raise self._timeout(task, seconds) from None
            finally:
                self._remove_async_waiter(task, loop, done)
        if not task.status.terminal:  # another replica took the task over
            left = None if seconds is None else max(0.0, seconds - (time.monotonic() - started))
            return await self._wait_remote_async(task_id, left)
        return final_record(self._record(task))

    # -- waiting for a task another hub replica holds (shared stores) --------

    def _held_elsewhere(self, task: Task) -> bool:
        return (
            self._replica is not None
            and not task.status.terminal
            and self._tasks.get(task.task_id) is not task
        )

    def _owned_elsewhere(self, task: Task) -> OwnedElsewhere:
        owner = task.owner or "?"
        return OwnedElsewhere(
            f"task {task.task_id!r} is held by hub replica {owner!r}, not this one "
            f"({self._replica!r}): its node streams and finishes it there",
            owner,
        )

    def _on_ended(self, task_id: Optional[str]) -> None:
        """Called by the store's listener: a task ended on some replica
        (None: messages may have been missed, so wake every remote waiter)."""
        with self._remote_lock:
            if task_id is None:
                calls = [call for calls in self._remote_waiters.values() for call in calls]
            else:
                calls = list(self._remote_waiters.get(task_id, ()))
        for call in calls:
            call()

    def _watch(self, task_id: str, call: Callable[[], None]) -> None:
        with self._remote_lock:
            self._remote_waiters.setdefault(task_id, []).append(call)

    def _unwatch(self, task_id: str, call: Callable[[], None]) -> None:
        with self._remote_lock:
            calls = self._remote_waiters.get(task_id, [])
            if call in calls:
                calls.remove(call)
            if not calls:
                self._remote_waiters.pop(task_id, None)

    def _wait_remote(self, task_id: str, seconds: Optional[float]) -> TaskRecord:
        """Wait for a task another replica holds: woken by the store's
        "ended" messages, and re-reading the store every poll interval in
        case one was lost."""
        woken = threading.Event()
        deadline = None if seconds is None else time.monotonic() + seconds
        self._watch(task_id, woken.set)
        try:
            while True:
                task = self._require(task_id)
                if task.status.terminal:
                    return final_record(self._record(task))
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise self._timeout(task, seconds)
                woken.wait(self._poll_step(left))
                woken.clear()
        finally:
            self._unwatch(task_id, woken.set)

    async def _wait_remote_async(self, task_id: str, seconds: Optional[float]) -> TaskRecord:
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()

        def wake_up() -> None:
            try:
                loop.call_soon_threadsafe(woken.set)
            except RuntimeError:
                pass  # the loop is closed: nobody waits any more

        deadline = None if seconds is None else time.monotonic() + seconds
        self._watch(task_id, wake_up)
        try:
            while True:
                task = await loop.run_in_executor(None, self._require, task_id)
                if task.status.terminal:
                    return final_record(self._record(task))
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise self._timeout(task, seconds)
                try:
                    await asyncio.wait_for(woken.wait(), self._poll_step(left))
                except asyncio.TimeoutError:
                    pass
                woken.clear()
        finally:
            self._unwatch(task_id, wake_up)

    def _poll_step(self, left: Optional[float]) -> float:
        poll = float(getattr(self._store, "poll_interval", 1.0))
        return poll if left is None else min(left, poll)

    def _add_async_waiter(
        self, task: Task, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]
    ) -> bool:
        """Register a future to resolve when the task ends; False if it has."""
        with self._tasks.shard(task.task_id).lock:
            if task.status.terminal:
                future.set_result(None)
                return False
            task.async_waiters.append((loop, future))
            return True

    def _remove_async_waiter(
        self, task: Task, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]
    ) -> None:
        with self._tasks.shard(task.task_id).lock:
            try:
                task.async_waiters.remove((loop, future))
            except ValueError:
                pass

    def _timeout(self, task: Task, seconds: Optional[float]) -> WaitTimeout:
        return WaitTimeout(
            f"task {task.task_id!r} on node {task.node_id!r} is still {task.status.name} "
            f"after {seconds:g} s; wait again, or cancel it"
        )

    # -- reading -----------------------------------------------------------

    def get(self, task_id: str) -> TaskRecord:
        """An immutable snapshot of the task, its result and its streams."""
        return self._record(self._require(task_id))

    def in_flight(self) -> list[TaskRecord]:
        """Every task not yet in a terminal state, oldest first.

        On a shared store this includes the tasks other hub replicas own,
        as their owners last wrote them (``TaskRecord.owner`` tells whose).
        """
        tasks = [t for t in self._tasks.values() if not t.status.terminal]
        if self._replica is not None:
            held = {t.task_id for t in tasks}
            for item in self._store.in_flight_owned_elsewhere():
                if item.row.task_id not in held:
                    task = self._revive(item)
                    for buf in task.streams.values():
                        buf.seal()
                    tasks.append(task)
        return [self._record(t) for t in sorted(tasks, key=lambda t: t.created_at)]

    def list_tasks(
        self, status: Optional[TaskStatus] = None, node_id: Optional[str] = None, limit: Optional[int] = None
    ) -> list[TaskRecord]:
        """Records of the tasks the journal holds, newest first, without streams."""
        value = None if status is None else TaskStatus(status).value
        return [
            record_from_row(row, {})
            for row in self._store.list_tasks(status=value, node_id=node_id, limit=limit)
        ]

    def stats(self) -> dict[str, Any]:
        """Counts by status, and the bytes the streams hold, dropped and spilled.

        ``bytes_resident`` is stream data in memory (what ``memory_budget``
        bounds), ``bytes_spilled`` kept only in the store;
        ``bytes_checkpointed`` of ``bytes_written`` are durable, and
        ``checkpoint_age`` is the seconds since every stream last was (None
        before the first checkpoint, and on memory://).  ``appends`` counts
        the append calls this process has made to the streams it holds.
        """
        by_status = {status.value: 0 for status in TaskStatus}
        try:
            by_status.update(self._store.count_by_status())
        except StoreError as exc:
            # The store is away (a Redis outage): count what is held here.
            self._last_store_error = str(exc)
            for task in self._tasks.values():
                by_status[task.status.value] += 1
        streams = resident = held = dropped = written = checkpointed = appends = 0
        for task in self._tasks.values():
            for name, buf in list(task.streams.items()):
                streams += 1
                total = buf.total
                lost = buf.dropped
                resident += len(buf)
                held += total - lost
                dropped += lost
                written += total
                appends += buf.appends
                checkpointed += min(task.checkpointed.get(name, 0), total)
        return {
            "tasks": sum(by_status.values()),
            "by_status": by_status,
            "tasks_in_memory": len(self._tasks),
            "streams": streams,
            "bytes_held": held,
            "bytes_resident": resident,
            "bytes_spilled": held - resident,
            "bytes_dropped": dropped,
            "bytes_written": written,
            "bytes_checkpointed": checkpointed,
            "appends": appends,
            "checkpoint_age": None if self._checkpointed_at is None
            else max(0.0, self._clock() - self._checkpointed_at),
            "nodes": len(self._node_seen),
            "store_errors": self._store_errors,
            "last_store_error": self._last_store_error,
        }

    def _record(self, task: Task) -> TaskRecord:
        if any(buf.spilled for buf in list(task.streams.values())):
            self._unspill(task)
        views = {name: StreamView(name, *buf.view()) for name, buf in list(task.streams.items())}
        return record_from_row(
            task.row(), views, detached=task.detached_until is not None, owner=task.owner
        )

    # -- nodes -------------------------------------------------------------

    def heartbeat(self, node_id: str) -> None:
        """Renew ``node_id``'s lease, keeping its tasks from being LOST."""
        check_id("node id", node_id)
        self._node_seen[node_id] = self._clock()

    def reattach(self, task_id: str, node_id: str) -> TaskRecord:
        """A node reports it still runs ``task_id`` (after a hub restart).

        The task is no longer detached, runs on ``node_id`` from now on, and
        the node's lease is renewed.  Its streams carry on from their last
        checkpoint: the node should resend what it sent after that (compare
        ``get(task_id).streams[name].total`` with what it has sent).
        """
        self._check_open()
        check_id("node id", node_id)
        task = self._require(task_id)
        if self._replica is not None and not task.status.terminal:
            task = self._claim(task)
        now = self._clock()
        with self._tasks.shard(task_id).lock:
            if task.status.terminal:
                raise InvalidTransition(
                    f"task {task_id!r} already ended ({task.status.name}); "
                    "a node cannot re-attach to it: read its result instead"
                )
            try:
                self._store.put_task(task.row(node_id=node_id, updated_at=now))
            except OwnedElsewhere:
                self._drop_locked(task)
                raise
            task.node_id = node_id
            task.updated_at = now
            task.detached_until = None
        self._node_seen[node_id] = now
        return self._record(task)

    # -- ownership on a shared store ------------------------------------------

    def _claim(self, task: Task) -> Task:
        """Make this replica the task's owner (for ``reattach``); return the
        task as held here.  Raises OwnedElsewhere if a live replica has it
        attached."""
        try:
            stored = self._store.claim(task.task_id)
        except OwnedElsewhere:
            with self._tasks.shard(task.task_id).lock:
                self._drop_locked(task)
            raise
        shard = self._tasks.shard(task.task_id)
        with shard.lock:
            held = shard.entries.get(task.task_id)
            if held is not None:
                return held
            task = self._revive(stored)
            task.owner = self._replica
            task.detached_until = self._clock() + self.config.reattach_grace
            shard.entries[task.task_id] = task
        return task

    def _adopt(self) -> int:
        """Take over the in-flight tasks of replicas whose lease ran out (they
        wait detached for their nodes, as after a restart), and let go of the
        detached tasks another replica has since claimed."""
        held = [t for t in self._tasks.values() if not t.status.terminal]
        detached = [t for t in held if t.detached_until is not None]
        if detached:
            owners = self._store.owners(t.task_id for t in detached)
            for task in detached:
                if owners.get(task.task_id) != self._replica:
                    with self._tasks.shard(task.task_id).lock:
                        self._drop_locked(task)
        adopted = self._store.adopt_orphans(t.task_id for t in held)
        until = self._clock() + self.config.reattach_grace
        for item in adopted:
            task = self._revive(item)
            task.owner = self._replica
            task.detached_until = until
            shard = self._tasks.shard(task.task_id)
            with shard.lock:
                shard.entries.setdefault(task.task_id, task)
        return len(adopted)

    def _drop_locked(self, task: Task) -> None:
        """Forget a task another replica now owns; hold its shard lock.

        Its streams are sealed, so a node still sending here hears of it, and
        its waiters wake and go on waiting through the store.
        """
        shard = self._tasks.shard(task.task_id)
        if shard.entries.get(task.task_id) is task:
            del shard.entries[task.task_id]
        for buf in task.streams.values():
            buf.seal()
        waiters, task.async_waiters = task.async_waiters, []
        wake(task, waiters)

    # -- time-driven moves, retention, checkpoints, the memory budget -------

    def sweep(self) -> dict[str, int]:
        """Enforce deadlines, leases, reattach grace and result retention now.

        Returns how many tasks timed out, were lost and expired, and how many
        tombstones were forgotten.  On a shared store it first adopts the
        in-flight tasks of replicas whose lease ran out (``adopted``): they
        wait detached for their nodes, as after a restart.
        """
        now = self._clock()
        lease = self.config.lease_timeout
        counts = {"timed_out": 0, "lost": 0, "expired": 0, "tombstones_forgotten": 0}
        if self._replica is not None:
            counts["adopted"] = self._adopt()
        ttl = self.config.result_ttl
        past_retention = []
        for task in self._tasks.values():
            if task.status.terminal:
                if task.finished_at is not None and task.finished_at <= now - ttl:
                    past_retention.append(task.task_id)  # another replica may have expired it
                continue
            written = task.written()
            if written != task.seen_total:
                task.seen_total = written
                if task.detached_until is None:
                    self._node_seen[task.node_id] = now  # streaming counts as alive
            verdict = None
            if task.deadline is not None and now >= task.deadline:
                verdict = (TaskStatus.TIMED_OUT, f"deadline passed {now - task.deadline:.1f} s ago")
            elif task.detached_until is not None:
                if now >= task.detached_until:
                    verdict = (TaskStatus.LOST, "its node did not re-attach after a hub restart")
            elif now >= self._node_seen.get(task.node_id, task.created_at) + lease:
                verdict = (TaskStatus.LOST, f"node {task.node_id!r} sent nothing for {lease:g} s")
            if verdict is not None and self._end_quietly(task, *verdict):
                counts[verdict[0].value] += 1
        expired = self._store.expire_finished(cutoff=now - ttl, tombstone_until=now + ttl)
        for task_id in set(expired).union(past_retention):
            shard = self._tasks.shard(task_id)
            with shard.lock:
                shard.entries.pop(task_id, None)
        counts["expired"] = len(expired)
        counts["tombstones_forgotten"] = self._store.forget_tombstones(now)
        return counts

    def _end_quietly(self, task: Task, status: TaskStatus, why: str) -> bool:
        try:
            self._transition(task.task_id, status, error=why)
        except (InvalidTransition, UnknownTask, OwnedElsewhere):
            return False  # it ended by itself meanwhile, or another replica has it
        return True

    def checkpoint(self) -> int:
        """Write every stream that changed since its last checkpoint; then,
        with a ``memory_budget``, move idle data out of memory.

        Returns how many streams were written.  A store error is logged and
        counted in ``stats()``; the data stays in memory and the next
        checkpoint tries again.
        """
        if not self._store.durable:
            return 0
        started, errors = self._clock(), self._store_errors
        written = self._checkpoint_tasks(list(self._tasks.values()))
        if self._store_errors == errors:
            self._checkpointed_at = started
        if self.config.memory_budget is not None:
            self._enforce_budget(self.config.memory_budget)
        return written

    def _checkpoint_tasks(self, tasks: list[Task]) -> int:
        if not self._store.durable:
            return 0
        items, totals = [], []
        for task in tasks:
            for name, buf in list(task.streams.items()):
                total = buf.total
                if total == task.checkpointed.get(name, 0):
                    continue
                if buf.spilled:
                    self._unspill(task)
                items.append((task.task_id, name, buf.snapshot()))
                totals.append((task, name, total))
        if not items:
            return 0
        if not self._store_call(self._store.put_streams, items):
            return 0
        for task, name, total in totals:
            task.checkpointed[name] = max(task.checkpointed.get(name, 0), total)
        return len(items)

    def _enforce_budget(self, budget: int) -> None:
        """Bring resident stream bytes under ``budget``: first let go of
        finished tasks (their final state is in the store; with a budget they
        normally leave at their terminal transition, this catches those whose
        last checkpoint failed then), then spill the buffers of running
        tasks, those idle the longest first."""
        tasks = list(self._tasks.values())
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
        running = sorted(
            (t for t in tasks if not t.status.terminal), key=lambda t: -t.idle_passes
        )
        for task in running:
            if resident <= budget:
                return
            resident -= self._spill(task)

    def _let_go(self, task: Task) -> int:
        """Drop a finished task from memory once its final state is in the
        store (reads then come from there); return the bytes freed."""
        if not self._store.durable or any(
            task.checkpointed.get(name, 0) != buf.total for name, buf in list(task.streams.items())
        ):
            return 0  # its final checkpoint has not landed yet: keep it
        shard = self._tasks.shard(task.task_id)
        with shard.lock:
            if shard.entries.get(task.task_id) is not task:
                return 0
            del shard.entries[task.task_id]
        return sum(len(buf) for buf in task.streams.values())

    def _spill(self, task: Task) -> int:
        """Move a task's resident stream data to the store; return the bytes freed."""
        with self._tasks.shard(task.task_id).lock:
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
            if not self._store_call(self._store.put_streams, items):
                for _, buf, snapshot, _ in spilled:
                    buf.unspill(snapshot)
                return 0
            for name, _, snapshot, _ in spilled:
                durable = snapshot_total(snapshot)
                task.checkpointed[name] = max(task.checkpointed.get(name, 0), durable)
        return sum(size for *_, size in spilled)

    def _unspill(self, task: Task) -> None:
        with self._tasks.shard(task.task_id).lock:
            self._unspill_all(task)

    def _unspill_all(self, task: Task) -> None:
        """Merge spilled streams back into memory; hold the shard lock."""
        for name, buf in task.streams.items():
            if buf.spilled:
                snapshot = self._store.get_stream(task.task_id, name)
                if snapshot is None:
                    raise StoreError(
                        f"task {task.task_id!r}: the spilled part of stream {name!r} is "
                        "missing from the store"
                    )
                buf.unspill(snapshot)

    def _store_call(self, call: Callable[..., None], *args: Any) -> bool:
        try:
            call(*args)
        except StoreError as exc:
            self._store_errors += 1
            self._last_store_error = str(exc)
            log.warning("journal store write failed, will retry: %s", exc)
            return False
        return True

    # -- plumbing ----------------------------------------------------------

    def _require(self, task_id: str) -> Task:
        task = self._tasks.get(task_id) if isinstance(task_id, str) else None
        if task is not None:
            return task
        if not isinstance(task_id, str):
            raise InvalidArgument(f"task id must be a str, got {type(task_id).__name__}")
        stored = self._store.get(task_id)
        if stored is not None:
            # A finished task the registry let go of: read it from the store.
            task = self._revive(stored)
            for buf in task.streams.values():
                buf.seal()
            return task
        if self._store.tombstoned(task_id):
            raise ResultExpired(
                f"task {task_id!r} finished and its result expired after "
                f"result_ttl={self.config.result_ttl:g} s; raise result_ttl to keep results longer"
            )
        raise UnknownTask(
            f"no task {task_id!r} in this journal ({self.store_url}); "
            "register it first, or check the id"
        )

    def _check_open(self) -> None:
        if self._closed:
            raise JournalClosed("this TaskJournal is closed; open a new one")

    def check(self) -> list[str]:
        """The store's integrity problems; an empty list means sound."""
        return self._store.check()

    def close(self) -> None:
        """Stop the background thread, write a last checkpoint, close the
        store.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._maintenance is not None:
            self._maintenance.stop()
        try:
            self._checkpoint_tasks(list(self._tasks.values()))
        finally:
            if self._replica is not None:
                self._store.release()  # others may adopt our tasks at once
            self._store.close()

    def abandon(self) -> None:
        """Drop this journal the way a crash would: stop its background
        thread and release the store, writing nothing more (no final
        checkpoint).  For restart drills (``taskjournal simulate
        --restart-at``); a hub that shuts down calls :meth:`close`."""
        if self._closed:
            return
        self._closed = True
        if self._maintenance is not None:
            self._maintenance.stop()
        self._store.close()

    def __enter__(self) -> TaskJournal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<TaskJournal {self.store_url} tasks in memory={len(self._tasks)}>"
