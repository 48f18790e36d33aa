"""The async counterparts of TaskJournal's durable calls.

Each one makes the same change as its sync twin, with the same guarantees:
durable before the await returns, in one commit shared with every change
queued with it (threads' and coroutines' alike), its own error if its own
write fails.  The event loop is never blocked on the store: the change is
queued and the coroutine awaits it (see ``_changes``).  ``heartbeat`` writes
nothing and has no async twin: call it from a coroutine as it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Optional

from journal._changes import Changes
from journal._task import describe
from journal.lifecycle import TaskStatus
from journal.records import Result, TaskRecord
from journal.validation import encode_result

__all__ = ["AsyncCalls"]

#: What every async call's docstring means by "cancelled".
CANCELLED = """
        If the awaiting coroutine is cancelled, only the wait stops: a change
        that was queued (every call that got past its checks, which take no
        time and raise at once) is committed and applied exactly once, as if
        the caller had waited, or refused on its own; it is never undone or
        repeated.  The one change not yet queued is one still waiting for
        another change of the same task to end: cancelled then, it is not
        made.  To know the outcome, read ``get(task_id)``: a retry of a
        change that was made raises DuplicateTask or InvalidTransition."""


class AsyncCalls:
    """Mixed into TaskJournal: ``register_async`` and the others."""

    _changes: Changes
    close: Callable[[], None]  # TaskJournal's

    async def register_async(
        self,
        task_id: str,
        node_id: str,
        meta: Optional[dict[str, Any]] = None,
        deadline: Optional[float] = None,
    ) -> TaskRecord:
        """``register`` for asyncio: durable when the await returns, and
        the loop never waits for the store."""
        return await self._changes.register_async(task_id, node_id, meta, deadline)

    async def start_async(self, task_id: str) -> TaskRecord:
        """``start`` for asyncio."""
        return await self._changes.transition_async(task_id, TaskStatus.RUNNING, {})

    async def complete_async(self, task_id: str, result: Result = None) -> TaskRecord:
        """``complete`` for asyncio: the result and the streams' final state
        are durable when the await returns."""
        stored = encode_result(task_id, result)
        return await self._changes.transition_async(task_id, TaskStatus.COMPLETED, {"result": stored})

    async def fail_async(self, task_id: str, error: object, result: Result = None) -> TaskRecord:
        """``fail`` for asyncio."""
        stored = encode_result(task_id, result)
        changes = {"error": describe(error), "result": stored}
        return await self._changes.transition_async(task_id, TaskStatus.FAILED, changes)

    async def cancel_async(self, task_id: str, reason: Optional[str] = None) -> TaskRecord:
        """``cancel`` for asyncio (the task's cancellation in the journal;
        cancelling the coroutine that awaits this is another matter, below)."""
        text = None if reason is None else describe(reason)
        return await self._changes.transition_async(task_id, TaskStatus.CANCELLED, {"error": text})

    async def reattach_async(self, task_id: str, node_id: str) -> TaskRecord:
        """``reattach`` for asyncio.  On a shared store (Redis) the claim of
        the task is a store call of its own: the whole call then runs on the
        loop's default executor."""
        return await self._changes.reattach_async(task_id, node_id)

    async def close_async(self) -> None:
        """``close`` for asyncio: it runs on the loop's default executor (it
        stops a thread and writes a last checkpoint).  Cancelling the await
        does not stop the close; the journal is closed all the same."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        call = loop.run_in_executor(None, self.close)
        call.add_done_callback(lambda ended: _copy(ended, done))
        await done


for _call in (AsyncCalls.register_async, AsyncCalls.start_async, AsyncCalls.complete_async,
              AsyncCalls.fail_async, AsyncCalls.cancel_async, AsyncCalls.reattach_async):
    _call.__doc__ = (_call.__doc__ or "") + "\n" + CANCELLED


def _copy(ended: asyncio.Future[None], into: asyncio.Future[None]) -> None:
    if into.done():
        return
    error = None if ended.cancelled() else ended.exception()
    if error is not None:
        into.set_exception(error)
    else:
        into.set_result(None)
