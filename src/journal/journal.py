"""TaskJournal: task lifecycle, stream handles, result hooks, retention."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from types import MappingProxyType
from typing import Any, Optional

from journal.buffer import HeadTailBuffer
from journal.config import JournalConfig
from journal.errors import (
    DuplicateTask,
    InvalidArgument,
    InvalidTransition,
    JournalClosed,
    ResultExpired,
    StreamSealed,
    TaskLost,
    UnknownTask,
    WaitTimeout,
)
from journal.lifecycle import TaskStatus, check_transition
from journal.records import FollowChunk, Result, StreamView, TaskRecord
from journal.registry import ShardedRegistry
from journal.store import TaskRow, open_store
from journal.validation import (
    check_deadline,
    check_id,
    check_timeout,
    decode_result,
    encode_json,
    encode_result,
)

__all__ = ["TaskJournal"]

log = logging.getLogger("journal")


class _Task:
    """The journal's working state of one task; changed under its shard lock."""

    __slots__ = (
        "task_id", "node_id", "status", "meta_json", "result", "error",
        "created_at", "updated_at", "finished_at", "deadline", "detached_until",
        "streams", "done", "async_waiters", "seen_total",
    )

    def __init__(self, row: TaskRow) -> None:
        self.task_id = row.task_id
        self.node_id = row.node_id
        self.status = TaskStatus(row.status)
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
        self.async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        #: Sum of the streams' totals at the last sweep: growth means alive.
        self.seen_total = 0

    def row(self, **changes: Any) -> TaskRow:
        row = TaskRow(
            self.task_id, self.node_id, self.status.value, self.meta_json, self.result,
            self.error, self.created_at, self.updated_at, self.finished_at, self.deadline,
        )
        return row._replace(**changes) if changes else row

    def written(self) -> int:
        return sum(buf.total for buf in list(self.streams.values()))

    def record(self) -> TaskRecord:
        return TaskRecord(
            task_id=self.task_id,
            node_id=self.node_id,
            status=self.status,
            result=decode_result(self.result),
            error=self.error,
            meta=decode_result(self.meta_json),
            created_at=self.created_at,
            updated_at=self.updated_at,
            finished_at=self.finished_at,
            deadline=self.deadline,
            detached=self.detached_until is not None,
            streams=MappingProxyType(
                {name: _view(name, buf) for name, buf in list(self.streams.items())}
            ),
        )


def _view(name: str, buf: HeadTailBuffer) -> StreamView:
    return StreamView(name, *buf.parts())


class TaskJournal:
    """Tracks tasks sent to remote nodes, their output streams and results.

    Thread-safe: any number of threads may register, stream, finish and read
    tasks at once.  State changes take one lock of one registry shard;
    stream appends take no journal lock at all (see :meth:`stream`).

    Every waiter gets a final answer: a terminal record, or WaitTimeout,
    TaskLost, ResultExpired or UnknownTask.  Deadlines, node leases and
    result retention are enforced by :meth:`sweep`, which a background timer
    calls every ``config.sweep_interval`` seconds.
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

        ``clock`` returns wall-clock seconds (default ``time.time``);
        ``buffer_class`` is the HeadTailBuffer implementation to use (default
        the one ``journal.buffer`` picked).
        """
        self.config = config if config is not None else JournalConfig()
        if not isinstance(self.config, JournalConfig):
            raise InvalidArgument(f"config must be a JournalConfig, got {config!r}")
        self._clock = clock or time.time
        self._buffer_class = buffer_class or HeadTailBuffer
        self._tasks: ShardedRegistry[_Task] = ShardedRegistry(self.config.shards)
        #: Expired task id -> wall-clock time after which it may be forgotten.
        self._tombstones: dict[str, float] = {}
        self._tombstone_lock = threading.Lock()
        #: Node id -> wall-clock time it was last known alive.
        self._node_seen: dict[str, float] = {}
        self._closed = False
        self._store = open_store(store_url or self.config.store_url)
        self._sweeper: Optional[_Sweeper] = None
        if self.config.sweep_interval:
            self._sweeper = _Sweeper(self, self.config.sweep_interval)

    @classmethod
    def from_env(cls, **kwargs: Any) -> TaskJournal:
        """A journal configured from ``JOURNAL_*`` environment variables."""
        return cls(config=JournalConfig.from_env(), **kwargs)

    @property
    def store_url(self) -> str:
        return self._store.url

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
        task = _Task(
            TaskRow(
                task_id=task_id, node_id=node_id, status=TaskStatus.PENDING.value,
                meta_json=meta_json, result=None, error=None, created_at=now,
                updated_at=now, finished_at=None,
                deadline=None if relative is None else now + relative,
            )
        )
        shard = self._tasks.shard(task_id)
        with shard.lock:
            if task_id in shard.entries:
                raise DuplicateTask(
                    f"task {task_id!r} is already registered (on node "
                    f"{shard.entries[task_id].node_id!r}); use a new id for a new task"
                )
            self._store.put_task(task.row())
            shard.entries[task_id] = task
        with self._tombstone_lock:
            self._tombstones.pop(task_id, None)
        self._node_seen[node_id] = now
        return task.record()

    def start(self, task_id: str) -> TaskRecord:
        """PENDING -> RUNNING; also renews the node's lease."""
        return self._transition(task_id, TaskStatus.RUNNING)

    def complete(self, task_id: str, result: Result = None) -> TaskRecord:
        """-> COMPLETED with ``result`` (JSON-serialisable, or bytes)."""
        stored = encode_result(task_id, result)
        return self._transition(task_id, TaskStatus.COMPLETED, result=stored)

    def fail(self, task_id: str, error: object) -> TaskRecord:
        """-> FAILED; ``error`` is a message or an exception."""
        return self._transition(task_id, TaskStatus.FAILED, error=_describe(error))

    def cancel(self, task_id: str, reason: Optional[str] = None) -> TaskRecord:
        """-> CANCELLED, with an optional reason."""
        text = None if reason is None else _describe(reason)
        return self._transition(task_id, TaskStatus.CANCELLED, error=text)

    def _transition(self, task_id: str, target: TaskStatus, **changes: Any) -> TaskRecord:
        self._check_open()
        task = self._require(task_id)
        shard = self._tasks.shard(task_id)
        now = self._clock()
        with shard.lock:
            check_transition(task_id, task.status, target)
            if target.terminal:
                changes["finished_at"] = now
            row = task.row(status=target.value, updated_at=now, **changes)
            # Durable first: if the store refuses, nothing has changed.
            self._store.put_task(row)
            task.status = target
            for name in ("result", "error", "finished_at"):
                if name in changes:
                    setattr(task, name, changes[name])
            task.updated_at = now
            if target.terminal:
                task.detached_until = None
                waiters = self._seal(task)
        if target.terminal:
            _wake(task, waiters)
        else:
            self._node_seen[task.node_id] = now
        return task.record()

    def _seal(self, task: _Task) -> list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]:
        """Close a finished task's streams and keep their final state."""
        for buf in task.streams.values():
            buf.seal()
        self._store.put_streams(task.task_id, task.streams)
        waiters, task.async_waiters = task.async_waiters, []
        return waiters

    # -- streams -----------------------------------------------------------

    def stream(self, task_id: str, name: str = "stdout") -> HeadTailBuffer:
        """The append handle of one stream of a task, created on first use.

        The handle is the stream's buffer itself: ``handle.append(chunk)``
        is one call into compiled code, with no lookup and no lock, safe from
        any thread.  It stays valid for the task's whole life; once the task
        ends, appends raise StreamSealed.  Limits come from
        ``config.limits_for(name)``.
        """
        task = self._require(task_id)
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
                buf = self._buffer_class(*self.config.limits_for(name))
                task.streams[name] = buf
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
        with self._tasks.shard(task_id).lock:
            if task.status.terminal:
                return _final(task)
            if task.done is None:
                task.done = threading.Event()
            done = task.done
        if not done.wait(seconds):
            raise self._timeout(task, seconds)
        return _final(task)

    async def wait_async(self, task_id: str, timeout: Optional[float] = None) -> TaskRecord:
        """``wait`` for asyncio: the event loop is never blocked."""
        task = self._require(task_id)
        seconds = check_timeout(task_id, timeout)
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        if self._add_async_waiter(task, loop, done):
            try:
                await asyncio.wait_for(done, seconds)
            except asyncio.TimeoutError:
                raise self._timeout(task, seconds) from None
            finally:
                self._remove_async_waiter(task, loop, done)
        return _final(task)

    def _add_async_waiter(
        self, task: _Task, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]
    ) -> bool:
        """Register a future to resolve when the task ends; False if it has."""
        with self._tasks.shard(task.task_id).lock:
            if task.status.terminal:
                future.set_result(None)
                return False
            task.async_waiters.append((loop, future))
            return True

    def _remove_async_waiter(
        self, task: _Task, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]
    ) -> None:
        with self._tasks.shard(task.task_id).lock:
            try:
                task.async_waiters.remove((loop, future))
            except ValueError:
                pass

    def _timeout(self, task: _Task, seconds: Optional[float]) -> WaitTimeout:
        return WaitTimeout(
            f"task {task.task_id!r} on node {task.node_id!r} is still {task.status.name} "
            f"after {seconds:g} s; wait again, or cancel it"
        )

    # -- reading -----------------------------------------------------------

    def get(self, task_id: str) -> TaskRecord:
        """An immutable snapshot of the task, its result and its streams."""
        return self._require(task_id).record()

    def in_flight(self) -> list[TaskRecord]:
        """Every task not yet in a terminal state, oldest first."""
        tasks = [t for t in self._tasks.values() if not t.status.terminal]
        return [t.record() for t in sorted(tasks, key=lambda t: t.created_at)]

    def stats(self) -> dict[str, Any]:
        """Counts by status and the bytes the streams hold and dropped."""
        by_status = {status.value: 0 for status in TaskStatus}
        streams = held = dropped = written = 0
        for task in self._tasks.values():
            by_status[task.status.value] += 1
            for buf in list(task.streams.values()):
                streams += 1
                held += len(buf)
                dropped += buf.dropped
                written += buf.total
        with self._tombstone_lock:
            tombstones = len(self._tombstones)
        return {
            "tasks": sum(by_status.values()),
            "by_status": by_status,
            "streams": streams,
            "bytes_held": held,
            "bytes_dropped": dropped,
            "bytes_written": written,
            "tombstones": tombstones,
            "nodes": len(self._node_seen),
        }

    # -- nodes -------------------------------------------------------------

    def heartbeat(self, node_id: str) -> None:
        """Renew ``node_id``'s lease, keeping its tasks from being LOST."""
        check_id("node id", node_id)
        self._node_seen[node_id] = self._clock()

    def reattach(self, task_id: str, node_id: str) -> TaskRecord:
        """A node reports it still runs ``task_id`` (after a hub restart).

        The task is no longer detached, runs on ``node_id`` from now on, and
        the node's lease is renewed.
        """
        self._check_open()
        check_id("node id", node_id)
        task = self._require(task_id)
        now = self._clock()
        with self._tasks.shard(task_id).lock:
            if task.status.terminal:
                raise InvalidTransition(
                    f"task {task_id!r} already ended ({task.status.name}); "
                    "a node cannot re-attach to it: read its result instead"
                )
            self._store.put_task(task.row(node_id=node_id, updated_at=now))
            task.node_id = node_id
            task.updated_at = now
            task.detached_until = None
        self._node_seen[node_id] = now
        return task.record()

    # -- time-driven moves and retention ------------------------------------

    def sweep(self) -> dict[str, int]:
        """Enforce deadlines, leases, reattach grace and result retention now.

        Returns how many tasks timed out, were lost and expired, and how many
        tombstones were forgotten.
        """
        now = self._clock()
        lease = self.config.lease_timeout
        counts = {"timed_out": 0, "lost": 0, "expired": 0, "tombstones_forgotten": 0}
        expired: list[_Task] = []
        for task in self._tasks.values():
            if task.status.terminal:
                if task.finished_at is not None and now >= task.finished_at + self.config.result_ttl:
                    expired.append(task)
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
        counts["expired"] = self._expire(expired, now)
        counts["tombstones_forgotten"] = self._forget_tombstones(now)
        return counts

    def _end_quietly(self, task: _Task, status: TaskStatus, why: str) -> bool:
        try:
            self._transition(task.task_id, status, error=why)
        except (InvalidTransition, UnknownTask):
            return False  # it ended by itself meanwhile
        return True

    def _expire(self, tasks: list[_Task], now: float) -> int:
        if not tasks:
            return 0
        until = now + self.config.result_ttl
        removed = []
        for task in tasks:
            shard = self._tasks.shard(task.task_id)
            with shard.lock:
                if shard.entries.get(task.task_id) is task:
                    del shard.entries[task.task_id]
                    removed.append(task.task_id)
        self._store.expire(removed, until)
        with self._tombstone_lock:
            for task_id in removed:
                self._tombstones[task_id] = until
        return len(removed)

    def _forget_tombstones(self, now: float) -> int:
        with self._tombstone_lock:
            old = [task_id for task_id, until in self._tombstones.items() if now >= until]
            for task_id in old:
                del self._tombstones[task_id]
        if old:
            self._store.forget_tombstones(now)
        return len(old)

    # -- plumbing ----------------------------------------------------------

    def _require(self, task_id: str) -> _Task:
        task = self._tasks.get(task_id) if isinstance(task_id, str) else None
        if task is not None:
            return task
        if not isinstance(task_id, str):
            raise InvalidArgument(f"task id must be a str, got {type(task_id).__name__}")
        if task_id in self._tombstones:
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

    def iter_tasks(self) -> Iterator[TaskRecord]:
        """Records of every task the journal holds, in no particular order."""
        for task in self._tasks.values():
            yield task.record()

    def close(self) -> None:
        """Stop the background timer and close the store.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.stop()
        self._store.close()

    def __enter__(self) -> TaskJournal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<TaskJournal {self.store_url} tasks={len(self._tasks)}>"


def _final(task: _Task) -> TaskRecord:
    record = task.record()
    if record.status is TaskStatus.LOST:
        raise TaskLost(
            f"task {task.task_id!r} was lost: {record.error}; resubmit it to another node",
            record,
        )
    return record


def _wake(task: _Task, waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]) -> None:
    if task.done is not None:
        task.done.set()
    for loop, future in waiters:
        try:
            loop.call_soon_threadsafe(_resolve, future)
        except RuntimeError:
            pass  # that event loop is closed: nobody is waiting there any more


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _describe(error: object) -> str:
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {error}"
    return str(error)


class _Sweeper:
    """The background timer that calls ``TaskJournal.sweep``."""

    def __init__(self, journal: TaskJournal, interval: float) -> None:
        self._stop = threading.Event()
        # A weak reference, so that a journal nobody closed can still be
        # collected; the timer then ends by itself.
        self._thread = threading.Thread(
            target=self._run,
            args=(weakref.ref(journal), interval),
            name="journal-sweeper",
            daemon=True,
        )
        self._thread.start()

    def _run(self, journal_ref: weakref.ref[TaskJournal], interval: float) -> None:
        while not self._stop.wait(interval):
            journal = journal_ref()
            if journal is None:
                return
            try:
                journal.sweep()
            except Exception:  # noqa: BLE001 - the timer must outlive one bad sweep
                log.exception("journal sweep failed; retrying in %.1f s", interval)
            del journal

    def stop(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()
