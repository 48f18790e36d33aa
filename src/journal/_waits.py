"""Waits: result hooks that always end, and live follows of a stream.

``wait`` and ``wait_async`` end with the task's terminal record, or
WaitTimeout, TaskLost, ResultExpired, UnknownTask (also when the task's
registration failed while the wait began) or JournalClosed.  A task held
here is waited for on its own event (threads) or futures (asyncio), set at
its terminal transition, by close() and by a failed registration; a task
another replica holds is waited for by the ownership policy, through the
store.  ``follow`` reads a stream as it grows, on this replica or, through
the store's checkpoints, on the replica that holds the task.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Optional

from journal._ownership import Ownership
from journal._residency import Residency
from journal._table import TaskTable
from journal._task import Deadline, Task, final_record, timeout_error, wake
from journal.records import FollowChunk, TaskRecord
from journal.validation import check_interval, check_timeout

__all__ = ["Waits"]

#: How often a wait looks again for a task this journal does not hold.
_LOOK_AGAIN = 0.05


class Waits:
    def __init__(self, table: TaskTable, ownership: Ownership, residency: Residency) -> None:
        self._table = table
        self._ownership = ownership
        self._residency = residency

    # -- threads ---------------------------------------------------------------

    def wait(self, task_id: str, timeout: Optional[float] = None) -> TaskRecord:
        seconds = check_timeout(task_id, timeout)
        deadline = Deadline(seconds)
        first = True
        while True:
            task = self._ownership.find_within(task_id, deadline, seconds, first)
            first = False
            if task.status.terminal:
                return final_record(self._residency.record(task))
            if self._ownership.held_elsewhere(task):
                return self._ownership.wait_remote(
                    task_id, seconds, deadline, self._residency.record, self.wait
                )
            done = self._done_event(task)
            if done is None:  # not held here (any more): look again shortly
                time.sleep(deadline.poll_step(_LOOK_AGAIN))
            elif not done.wait(deadline.left()):
                raise timeout_error(task, seconds)
            if task.status.terminal:
                # Its end woke us: the record is here, even if the task has
                # left memory since (or close() came right after).
                return final_record(self._residency.record(task))
            if deadline.left() == 0.0 and not task.status.terminal:
                raise timeout_error(task, seconds)

    def _done_event(self, task: Task) -> Optional[threading.Event]:
        """The event set when ``task`` ends (or close() or a failed
        registration wakes its waiters); None if this journal does not hold
        the task.  Raises JournalClosed once closed."""
        shard = self._table.shard(task.task_id)
        with shard.lock:
            self._table.check_open()
            if task.status.terminal or shard.entries.get(task.task_id) is not task:
                return None
            if task.done is None:
                task.done = threading.Event()
            return task.done

    # -- asyncio -----------------------------------------------------------------

    async def wait_async(self, task_id: str, timeout: Optional[float] = None) -> TaskRecord:
        seconds = check_timeout(task_id, timeout)
        deadline = Deadline(seconds)
        loop = asyncio.get_running_loop()
        first = True
        while True:
            task = await self._ownership.find_async(task_id, deadline, seconds, first)
            first = False
            if task.status.terminal:
                return final_record(self._residency.record(task))
            if self._ownership.held_elsewhere(task):
                return await self._ownership.wait_remote_async(
                    task_id, seconds, deadline, self._residency.record, self.wait_async
                )
            done: asyncio.Future[None] = loop.create_future()
            if self.add_async_waiter(task, loop, done, held=True):
                try:
                    await asyncio.wait_for(done, deadline.left())
                except asyncio.TimeoutError:
                    raise timeout_error(task, seconds) from None
                finally:
                    self.remove_async_waiter(task, loop, done)
                if task.status.terminal:
                    return final_record(self._residency.record(task))
            elif not task.status.terminal:  # not held here (any more)
                await asyncio.sleep(deadline.poll_step(_LOOK_AGAIN))
            if deadline.left() == 0.0 and not task.status.terminal:
                raise timeout_error(task, seconds)

    def add_async_waiter(
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
        shard = self._table.shard(task.task_id)
        with shard.lock:
            self._table.check_open()
            if task.status.terminal or (held and shard.entries.get(task.task_id) is not task):
                future.set_result(None)
                return False
            if task.async_waiters is None:
                task.async_waiters = []
            task.async_waiters.append((loop, future))
            return True

    def remove_async_waiter(
        self, task: Task, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]
    ) -> None:
        with self._table.shard(task.task_id).lock:
            if task.async_waiters is not None:
                try:
                    task.async_waiters.remove((loop, future))
                except ValueError:
                    pass

    # -- following a stream --------------------------------------------------------

    async def follow(
        self, task_id: str, name: str, poll_interval: float
    ) -> AsyncIterator[FollowChunk]:
        poll = check_interval(task_id, "poll_interval", poll_interval)
        no_deadline = Deadline(None)
        task = await self._ownership.find_async(task_id, no_deadline, None)
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()
        followed = task  # the object its ending resolves ``ended`` on
        self.add_async_waiter(followed, loop, ended)
        woken = asyncio.Event()  # a task held elsewhere ended somewhere

        def wake_up() -> None:
            try:
                loop.call_soon_threadsafe(woken.set)
            except RuntimeError:
                pass  # the loop is closed: nobody follows any more

        self._ownership.watch(task_id, wake_up)
        offset = 0
        try:
            while True:
                if self._ownership.held_elsewhere(task) or (
                    not task.status.terminal and not self._table.holds(task)
                ):
                    # Another replica streams it (follow its checkpoints), or
                    # this is not the task this journal holds: a claim whose
                    # registration failed, the store's copy of one whose
                    # registration was being committed, one let go of and
                    # adopted again.  Look again (UnknownTask if it is gone),
                    # and wait for the end of what was found.
                    task = await self._ownership.find_async(task_id, no_deadline, None)
                    if task is not followed:
                        self.remove_async_waiter(followed, loop, ended)
                        followed, ended = task, loop.create_future()
                        self.add_async_waiter(followed, loop, ended)
                buf = task.streams.get(name)
                if buf is not None:
                    # Read the seal before the data: if it was sealed, this
                    # read is the last one.
                    sealed = buf.sealed
                    position, data = self._residency.read_from(task, buf, offset)
                    if data or position > offset:
                        yield FollowChunk(data, position, position - offset)
                        offset = position + len(data)
                    if sealed and offset >= buf.total and task.status.terminal:
                        return
                if buf is None and task.status.terminal:
                    return
                if self._table.closed and (buf is None or buf.sealed and offset >= buf.total):
                    raise self._table.closed_error(f"while following task {task_id!r}")
                if self._ownership.held_elsewhere(task):
                    step = min(poll, self._ownership.poll_interval())
                    try:
                        await asyncio.wait_for(woken.wait(), step)
                    except asyncio.TimeoutError:
                        pass
                    woken.clear()
                elif not ended.done():
                    await asyncio.wait({ended}, timeout=poll)
                else:
                    # Woken, and yet not over: never go round without giving
                    # the loop back.
                    await asyncio.sleep(poll)
        finally:
            self._ownership.unwatch(task_id, wake_up)
            self.remove_async_waiter(followed, loop, ended)

    # -- close ---------------------------------------------------------------------

    def wake_all(self, tasks: list[Task]) -> None:
        """Wake every waiter: they see the journal closed."""
        for task in tasks:
            wake(task, self._table.take_waiters(task))
        self._ownership.wake_all()
