"""TaskJournal: task lifecycle, stream handles, result hooks, durability."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from types import MappingProxyType
from typing import Any, Optional

from journal._background import Maintenance
from journal._buffer_shared import decode_snapshot, encode_snapshot, snapshot_total
from journal._task import AsyncWaiter, Task, describe, final_record, wake
from journal.buffer import HeadTailBuffer
from journal.config import JournalConfig
from journal.errors import (
    CorruptSnapshot,
    DuplicateTask,
    InvalidArgument,
    InvalidTransition,
    JournalClosed,
    OwnedElsewhere,
    ResultExpired,
    StoreError,
    StreamSealed,
    StreamSpilled,
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
    check_interval,
    check_limit,
    check_status,
    check_timeout,
    decode_result,
    encode_json,
    encode_result,
)

__all__ = ["TaskJournal"]

_NO_STREAMS: MappingProxyType[str, StreamView] = MappingProxyType({})

log = logging.getLogger("journal")

#: Every journal open in this process, so that a forked child can mark its
#: copies unusable: they share the parent's store connection and lock.
_open_journals: weakref.WeakSet[TaskJournal] = weakref.WeakSet()


def _forget_parents_journals() -> None:
    for journal in list(_open_journals):
        journal._forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parents_journals)


def _unsealed(snapshot: bytes) -> bytes:
    """The same snapshot, not sealed: for an in-flight task whose streams
    close() sealed, so that they take its node's output after a restart."""
    state = decode_snapshot(snapshot)
    return encode_snapshot(state._replace(sealed=False)) if state.sealed else snapshot


class _Deadline:
    """What is left of a wait's timeout (None: no timeout), on the monotonic clock."""

    __slots__ = ("ends",)

    def __init__(self, seconds: Optional[float]) -> None:
        self.ends = None if seconds is None else time.monotonic() + seconds

    def left(self) -> Optional[float]:
        return None if self.ends is None else max(0.0, self.ends - time.monotonic())


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
        #: Set in a forked child: this copy shares its parent's store.
        self._forked = False
        self._pid = os.getpid()
        self._store_errors = 0
        self._last_store_error: Optional[str] = None
        #: Failed passes of the background thread (sweeps, checkpoints).
        self._background_errors = 0
        #: One checkpoint or budget pass at a time: two overlapping passes
        #: could otherwise spill a buffer between another's snapshot and its
        #: commit.  Never taken while a shard lock is held.
        self._residency = threading.Lock()
        #: What could not be recovered from the store when this journal
        #: opened (a damaged stream snapshot, say), one line each.
        self.recovery_problems: list[str] = []
        #: When the streams were last all written to the store (durable stores).
        self._checkpointed_at: Optional[float] = None
        self._store = open_store(store_url or self.config.store_url, result_ttl=self.config.result_ttl)
        #: On a shared store (Redis), the id this hub replica writes as owner.
        self._replica: Optional[str] = getattr(self._store, "replica", None)
        #: Task id -> wake-up calls of waiters whose task is not held here.
        self._remote_waiters: dict[str, list[Callable[[], None]]] = {}
        self._remote_lock = threading.Lock()
        #: Threads for the store reads of waits on a shared store (made on
        #: first use; see _find_within).
        self._reads: Optional[concurrent.futures.ThreadPoolExecutor] = None
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
        _open_journals.add(self)
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
        recovered = 0
        for item in stored:
            try:
                task = self._revive(item, self.recovery_problems)
            except (ValueError, TypeError) as exc:  # a row no journal wrote
                self.recovery_problems.append(f"task {item.row.task_id!r}: {exc}")
                continue
            task.detached_until = until
            self._tasks.shard(task.task_id).entries[task.task_id] = task
            recovered += 1
        for problem in self.recovery_problems:
            log.warning("journal recovery: %s", problem)
        return recovered

    def _revive(self, item: StoredTask, problems: Optional[list[str]] = None) -> Task:
        """The working state of a stored task.  With ``problems``, a damaged
        stream snapshot is noted there and left out (its node resends that
        stream from 0); without, it raises CorruptSnapshot."""
        task = Task(item.row)
        task.owner = item.owner
        for name, snapshot in item.streams.items():
            try:
                buf = self._buffer_class.restore(snapshot)
                if buf.sealed and not task.status.terminal:
                    # Sealed by a close() while in flight: it goes on now.
                    buf = self._buffer_class.restore(_unsealed(snapshot))
            except CorruptSnapshot as exc:
                if problems is None:
                    raise
                problems.append(f"task {task.task_id!r}, stream {name!r}: {exc}; left out")
                continue
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
                waiters, task.async_waiters = task.async_waiters, []
            # A wait() that found the task while it was being committed
            # looks again, and hears that there is no such task.
            wake(task, waiters)
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
            self._check_open()  # close() seals what it finds: nothing is added after
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
        ``FollowChunk.skipped``, never silently passed over.  If the journal
        is closed first, what the stream holds is delivered and then
        JournalClosed is raised.
        """
        poll_interval = check_interval(task_id, "poll_interval", poll_interval)
        task = await self._find_async(task_id, _Deadline(None), None)
        loop = asyncio.get_running_loop()
        ended = loop.create_future()
        self._add_async_waiter(task, loop, ended)
        offset = 0
        try:
            while True:
                buf = task.streams.get(name)
                if buf is not None:
                    # Read the seal before the data: if it was sealed, this
                    # read is the last one.
                    sealed = buf.sealed
                    position, data = self._read_from(task, buf, offset)
                    if data or position > offset:
                        yield FollowChunk(data, position, position - offset)
                        offset = position + len(data)
                    if sealed and offset >= buf.total and task.status.terminal:
                        return
                if buf is None and task.status.terminal:
                    return
                if self._closed and (buf is None or buf.sealed and offset >= buf.total):
                    raise self._closed_error(f"while following task {task_id!r}")
                if not ended.done():
                    await asyncio.wait({ended}, timeout=poll_interval)
        finally:
            self._remove_async_waiter(task, loop, ended)

    def _read_from(self, task: Task, buf: HeadTailBuffer, offset: int) -> tuple[int, bytes]:
        try:
            return buf.read_from(offset)
        except StreamSpilled:
            # The budget pass spilled it since we looked: merge it back and
            # read under the shard lock, which the next spill must take.
            with self._tasks.shard(task.task_id).lock:
                self._unspill_all(task)
                return buf.read_from(offset)

    # -- waiting -----------------------------------------------------------

    def wait(self, task_id: str, timeout: Optional[float] = None) -> TaskRecord:
        """Block until the task ends; return its terminal record.

        Raises WaitTimeout after ``timeout`` seconds (None or inf: until it
        ends, which deadlines and leases guarantee), TaskLost if its node was
        lost, ResultExpired or UnknownTask (also when its registration
        failed while this wait began), and JournalClosed if the journal is
        closed first.
        """
        seconds = check_timeout(task_id, timeout)
        deadline = _Deadline(seconds)
        while True:
            task = self._find_within(task_id, deadline, seconds)
            if task.status.terminal:
                return final_record(self._record(task))
            if self._held_elsewhere(task):
                return self._wait_remote(task_id, seconds, deadline)
            done = self._done_event(task)
            if done is None:  # not held here (any more): look again shortly
                time.sleep(self._poll_step(deadline.left(), 0.05))
            elif not done.wait(deadline.left()):
                raise self._timeout(task, seconds)
            if deadline.left() == 0.0 and not task.status.terminal:
                raise self._timeout(task, seconds)

    # A wait reads a task it does not hold from the store.  On a shared store
    # that read can hang while the server does not answer (for the URL's
    # ``timeout``); it runs on a reader thread, so the caller's own timeout
    # holds and an event loop is never blocked.  Local stores answer at once.
    _READ_FLOOR = 0.1  # seconds a read always gets, so wait(t, 0) can read t

    def _find_within(self, task_id: str, deadline: _Deadline, seconds: Optional[float]) -> Task:
        held = self._tasks.get(task_id) if isinstance(task_id, str) else None
        left = deadline.left()
        if (held is not None and not self._forked) or self._replica is None or left is None:
            return self._require(task_id)
        future = self._reader().submit(self._require, task_id)
        try:
            return future.result(timeout=max(left, self._READ_FLOOR))
        except concurrent.futures.TimeoutError:
            raise self._unreadable(task_id, seconds) from None

    async def _find_async(self, task_id: str, deadline: _Deadline, seconds: Optional[float]) -> Task:
        held = self._tasks.get(task_id) if isinstance(task_id, str) else None
        if (held is not None and not self._forked) or self._replica is None:
            return self._require(task_id)
        read = asyncio.get_running_loop().run_in_executor(self._reader(), self._require, task_id)
        left = deadline.left()
        if left is None:
            return await read
        try:
            return await asyncio.wait_for(read, max(left, self._READ_FLOOR))
        except asyncio.TimeoutError:
            raise self._unreadable(task_id, seconds) from None

    def _reader(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._remote_lock:
            if self._reads is None:
                self._reads = concurrent.futures.ThreadPoolExecutor(4, "journal-read")
            return self._reads

    def _unreadable(self, task_id: str, seconds: Optional[float]) -> WaitTimeout:
        return WaitTimeout(
            f"task {task_id!r} could not be read from {self.store_url} within {seconds:g} s "
            "(the store is slow or away); wait again"
        )

    def _done_event(self, task: Task) -> Optional[threading.Event]:
        """The event set when ``task`` ends (or close() or a failed
        registration wakes its waiters); None if this journal does not hold
        the task.  Raises JournalClosed once closed."""
        shard = self._tasks.shard(task.task_id)
        with shard.lock:
            self._check_open()
            if task.status.terminal or shard.entries.get(task.task_id) is not task:
                return None
            if task.done is None:
                task.done = threading.Event()
            return task.done

    async def wait_async(self, task_id: str, timeout: Optional[float] = None) -> TaskRecord:
        """``wait`` for asyncio: the event loop is never blocked."""
        seconds = check_timeout(task_id, timeout)
        deadline = _Deadline(seconds)
        loop = asyncio.get_running_loop()
        while True:
            task = await self._find_async(task_id, deadline, seconds)
            if task.status.terminal:
                return final_record(self._record(task))
            if self._held_elsewhere(task):
                return await self._wait_remote_async(task_id, seconds, deadline)
            done = loop.create_future()
            if self._add_async_waiter(task, loop, done, held=True):
                try:
                    await asyncio.wait_for(done, deadline.left())
                except asyncio.TimeoutError:
                    raise self._timeout(task, seconds) from None
                finally:
                    self._remove_async_waiter(task, loop, done)
            elif not task.status.terminal:  # not held here (any more)
                await asyncio.sleep(self._poll_step(deadline.left(), 0.05))
            if deadline.left() == 0.0 and not task.status.terminal:
                raise self._timeout(task, seconds)

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
            self._check_open()  # close() wakes only the waiters it finds
            self._remote_waiters.setdefault(task_id, []).append(call)

    def _unwatch(self, task_id: str, call: Callable[[], None]) -> None:
        with self._remote_lock:
            calls = self._remote_waiters.get(task_id, [])
            if call in calls:
                calls.remove(call)
            if not calls:
                self._remote_waiters.pop(task_id, None)

    def _wait_remote(self, task_id: str, seconds: Optional[float], deadline: _Deadline) -> TaskRecord:
        """Wait for a task another replica holds: woken by the store's
        "ended" messages, and re-reading the store every poll interval in
        case one was lost."""
        woken = threading.Event()
        self._watch(task_id, woken.set)
        try:
            while True:
                task = self._find_within(task_id, deadline, seconds)
                if task.status.terminal:
                    return final_record(self._record(task))
                if not self._held_elsewhere(task):
                    return self.wait(task_id, deadline.left())  # it came to this replica
                left = deadline.left()
                if left is not None and left <= 0:
                    raise self._timeout(task, seconds)
                woken.wait(self._poll_step(left))
                woken.clear()
        finally:
            self._unwatch(task_id, woken.set)

    async def _wait_remote_async(
        self, task_id: str, seconds: Optional[float], deadline: _Deadline
    ) -> TaskRecord:
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()

        def wake_up() -> None:
            try:
                loop.call_soon_threadsafe(woken.set)
            except RuntimeError:
                pass  # the loop is closed: nobody waits any more

        self._watch(task_id, wake_up)
        try:
            while True:
                task = await self._find_async(task_id, deadline, seconds)
                if task.status.terminal:
                    return final_record(self._record(task))
                if not self._held_elsewhere(task):
                    return await self.wait_async(task_id, deadline.left())
                left = deadline.left()
                if left is not None and left <= 0:
                    raise self._timeout(task, seconds)
                try:
                    await asyncio.wait_for(woken.wait(), self._poll_step(left))
                except asyncio.TimeoutError:
                    pass
                woken.clear()
        finally:
            self._unwatch(task_id, wake_up)

    def _poll_step(self, left: Optional[float], poll: Optional[float] = None) -> float:
        if poll is None:
            poll = float(getattr(self._store, "poll_interval", 1.0))
        return poll if left is None else min(left, poll)

    def _add_async_waiter(
        self,
        task: Task,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[None],
        held: bool = False,
    ) -> bool:
        """Register a future to resolve when the task ends (or close() or a
        failed registration wakes its waiters); False, with the future
        resolved, if it has ended or (``held``) this journal does not hold
        it.  Raises JournalClosed once closed."""
        shard = self._tasks.shard(task.task_id)
        with shard.lock:
            self._check_open()
            if task.status.terminal or (held and shard.entries.get(task.task_id) is not task):
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
        try:
            return self._record(self._require(task_id))
        except OwnedElsewhere:
            # Another replica took it over while its buffers were spilled
            # here: read it as that replica last wrote it.
            return self._record(self._require(task_id))

    def in_flight(self) -> list[TaskRecord]:
        """Every task not yet in a terminal state, oldest first.

        On a shared store this includes the tasks other hub replicas own,
        as their owners last wrote them (``TaskRecord.owner`` tells whose).
        """
        self._check_open()
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
        """Records of the tasks the journal holds, newest first, without streams.

        ``status`` is a TaskStatus or its value (``"running"``), ``node_id``
        a node's id, ``limit`` a count >= 0; anything else is InvalidArgument.
        """
        self._check_open()
        wanted = check_status(status)
        if node_id is not None:
            check_id("node id", node_id)
        most = check_limit(limit)
        if most == 0:
            return []  # every store agrees on what a limit of 0 returns
        rows = self._store.list_tasks(
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
        """
        self._check_open()
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
            "store_errors": self._store_errors + int(getattr(self._store, "background_errors", 0)),
            "background_errors": self._background_errors,
            "last_store_error": self._last_store_error
            or getattr(self._store, "last_background_error", None),
        }

    def _record(self, task: Task) -> TaskRecord:
        try:
            views = {name: StreamView(name, *buf.view()) for name, buf in list(task.streams.items())}
        except StreamSpilled:
            # Merge the spilled parts back and read under the shard lock, so
            # that a budget pass cannot spill them again before we have read.
            with self._tasks.shard(task.task_id).lock:
                self._unspill_all(task)
                views = {name: StreamView(name, *buf.view()) for name, buf in task.streams.items()}
        return record_from_row(
            task.row(), views, detached=task.detached_until is not None, owner=task.owner
        )

    # -- nodes -------------------------------------------------------------

    def heartbeat(self, node_id: str) -> None:
        """Renew ``node_id``'s lease, keeping its tasks from being LOST."""
        self._check_open()
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
        self._check_open()
        return self._sweep()

    def _sweep(self) -> dict[str, int]:
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
        except (InvalidTransition, UnknownTask, OwnedElsewhere, JournalClosed):
            return False  # it ended by itself meanwhile, another replica has it, or we close
        except Exception as exc:  # noqa: BLE001 - one task's trouble must not stop the sweep
            self._note_store_error(f"the sweep could not end task {task.task_id!r} ({why}): {exc}")
            return False
        return True

    def checkpoint(self) -> int:
        """Write every stream that changed since its last checkpoint; then,
        with a ``memory_budget``, move idle data out of memory.

        Returns how many streams were written.  A store error is logged and
        counted in ``stats()``; the data stays in memory and the next
        checkpoint tries again.
        """
        self._check_open()
        return self._checkpoint_pass()

    def _checkpoint_pass(self) -> int:
        if not self._store.durable:
            return 0
        # One pass at a time (the timer's and a caller's may overlap): what
        # one spills, another must not overwrite with an older snapshot.
        # The store refuses older snapshots too; this keeps passes from
        # doing each other's work twice.
        with self._residency:
            started, errors = self._clock(), self._store_errors
            written = self._checkpoint_tasks(list(self._tasks.values()))
            if self._store_errors == errors:
                self._checkpointed_at = started
            # The budget holds even when the store refused the checkpoint:
            # a spill is written (or undone) on its own.
            if self.config.memory_budget is not None:
                self._enforce_budget(self.config.memory_budget)
        return written

    def _checkpoint_tasks(self, tasks: list[Task], *, unseal: bool = False) -> int:
        """Write the streams that changed since their last checkpoint.

        ``unseal``: store in-flight tasks' streams as not sealed (close()
        seals them, but they go on after a restart)."""
        if not self._store.durable:
            return 0
        items, totals = [], []
        for task in tasks:
            try:
                for name, buf in list(task.streams.items()):
                    total = buf.total
                    if total == task.checkpointed.get(name, 0):
                        continue
                    if buf.spilled:
                        self._unspill(task)
                    snapshot = buf.snapshot()
                    if unseal and not task.status.terminal:
                        snapshot = _unsealed(snapshot)
                    items.append((task.task_id, name, snapshot))
                    totals.append((task, name, total))
            except Exception as exc:  # noqa: BLE001 - one task's trouble is not every task's
                self._note_store_error(f"task {task.task_id!r} was not checkpointed: {exc}")
        if not items:
            return 0
        if not self._store_call(self._store.put_streams, items):
            return 0
        for task, name, total in totals:
            # The store keeps the newest snapshot it was given, so it now
            # holds at least ``total`` bytes of this stream.
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
        """Move a task's resident stream data to the store; return the bytes
        freed.  If the store does not take it, for any reason, the buffers
        are merged back at once: nothing a spill holds is ever lost."""
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
            written = False
            try:
                written = self._store_call(self._store.put_streams, items)
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

    def _unspill(self, task: Task) -> None:
        with self._tasks.shard(task.task_id).lock:
            self._unspill_all(task)

    def _unspill_all(self, task: Task) -> None:
        """Merge spilled streams back into memory; hold the shard lock."""
        for name, buf in task.streams.items():
            if not buf.spilled:
                continue
            snapshot = self._store.get_stream(task.task_id, name)
            try:
                if snapshot is None:
                    raise StoreError(
                        f"task {task.task_id!r}: the spilled part of stream {name!r} is "
                        "missing from the store"
                    )
                buf.unspill(snapshot)
            except (StoreError, CorruptSnapshot):
                # On a shared store, a stored state that is not our spill
                # means another replica adopted the task and wrote on.
                if self._replica is not None:
                    owner = self._store.owners([task.task_id]).get(task.task_id)
                    if owner != self._replica:
                        task.owner = owner
                        self._drop_locked(task)
                        raise self._owned_elsewhere(task) from None
                raise

    def _store_call(self, call: Callable[..., None], *args: Any) -> bool:
        """Make a background write; False if the store refused it.

        Any exception counts, not only StoreError: a store's client can raise
        things of its own (an out-of-memory reply, a permission error), and a
        background pass that dies on one would stop every later pass."""
        try:
            call(*args)
        except Exception as exc:  # noqa: BLE001 - counted, and retried by the next pass
            self._note_store_error(f"journal store write failed, will retry: {exc}")
            return False
        return True

    def _note_store_error(self, message: str) -> None:
        self._store_errors += 1
        self._last_store_error = message
        log.warning("%s", message)

    def _background_pass(self, name: str) -> None:
        """One pass of the background thread: ``sweep`` or ``checkpoint``.
        Every exception is counted and logged; the thread goes on."""
        if self._closed or self._forked:
            return
        try:
            if name == "sweep":
                self._sweep()
            else:
                self._checkpoint_pass()
        except Exception as exc:  # noqa: BLE001 - the thread must outlive one bad pass
            if self._closed:
                return
            self._background_errors += 1
            self._last_store_error = f"background {name} failed: {exc!r}"
            log.exception("journal background %s failed; trying again next round", name)

    # -- plumbing ----------------------------------------------------------

    def _require(self, task_id: str) -> Task:
        """The task, held here or read from the store.  After close() only
        the tasks still held in memory can be read (the store is closed)."""
        if self._forked:
            raise self._closed_error()
        task = self._tasks.get(task_id) if isinstance(task_id, str) else None
        if task is not None:
            return task
        self._check_open()
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
        if self._closed or self._forked:
            raise self._closed_error()

    def _closed_error(self, doing: str = "") -> JournalClosed:
        where = f" {doing}" if doing else ""
        if self._forked:
            return JournalClosed(
                f"this TaskJournal belongs to process {self._pid}, of which this process is a "
                f"fork{where}: the parent keeps its store; open a TaskJournal of your own here"
            )
        return JournalClosed(
            f"this TaskJournal was closed{where}; open a new one (a durable store keeps "
            "everything it acknowledged)"
        )

    def check(self) -> list[str]:
        """The store's integrity problems; an empty list means sound."""
        self._check_open()
        return self._store.check()

    def close(self) -> None:
        """Stop the background thread, seal every stream, write a last
        checkpoint, wake every waiter, close the store.  Idempotent.

        After close, appends to any handle raise StreamSealed and every call
        raises JournalClosed, so nothing is accepted that would not be
        persisted; waiters still blocked get JournalClosed (or the record,
        if their task ended)."""
        if self._closed:
            return
        self._closed = True
        if self._maintenance is not None:
            self._maintenance.stop()
        tasks = self._seal_all()
        try:
            if not self._forked:
                with self._residency:
                    self._checkpoint_tasks(tasks, unseal=True)
        finally:
            self._wake_all(tasks)
            if self._reads is not None:
                self._reads.shutdown(wait=False)
            if not self._forked:
                if self._replica is not None:
                    self._store.release()  # others may adopt our tasks at once
                self._store.close()

    def _seal_all(self) -> list[Task]:
        tasks = list(self._tasks.values())
        for task in tasks:
            for buf in list(task.streams.values()):
                buf.seal()
        return tasks

    def _wake_all(self, tasks: list[Task]) -> None:
        """Wake every waiter: they see the journal closed."""
        for task in tasks:
            with self._tasks.shard(task.task_id).lock:
                waiters, task.async_waiters = task.async_waiters, []
            wake(task, waiters)
        self._on_ended(None)

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
        self._wake_all(self._seal_all())
        if not self._forked:
            self._store.close()

    def __enter__(self) -> TaskJournal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<TaskJournal {self.store_url} tasks in memory={len(self._tasks)}>"
