"""Callers that arrive together share one trip to the store.

The first caller to arrive does the work for everyone: it takes what is
queued, hands it to the store in one go (one SQLite commit, one Redis
pipeline), then does the same for whatever queued up meanwhile, and wakes
each caller once its part is done.  A lone caller pays no thread hand-off,
and no queue or lock of its own either: finding nothing queued and nobody
leading, it leads at once, its own job first in the batch.
Whatever queues while a batch is in the store (an fsync, a round trip) is
the next batch: batches grow with the wait.

Nothing here takes a lock that another thread could be left waiting on
while its holder is switched out: under the GIL such locks turn many writing
threads into a convoy.  The queue is a SimpleQueue and the leadership a
non-blocking try.

No caller depends on one leader either: a waiting caller looks up every
``TAKEOVER`` seconds and, if jobs are queued and nobody leads, leads them
itself.  A leader interrupted by KeyboardInterrupt (or any error) fails its
own batch and leaves; whoever waits behind it carries on, so every queued
job completes or fails promptly, without waiting for some unrelated call.

Coroutines queue to the same batches (``_submit_async``) but never lead: an
event loop must not wait for a commit.  A committer thread of the batcher's
own leads when no thread does.  Once a batch is done, and after the
leadership is given up (so that a finishing step may take locks, or write
again, without holding up the next batch), each async job's ``finish`` runs
on the committer thread (a batch a caller's thread led hands them over:
that caller may hold a lock a finish needs), and the futures of each event
loop are settled by
one ``call_soon_threadsafe``: one wake-up per batch per loop, whatever the
number of coroutines in it.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, Optional

#: How long a waiting caller trusts the leader before it looks whether
#: queued jobs were left unattended (seconds).  Waking this often costs
#: nothing measurable; it bounds how long an abandoned queue waits.
TAKEOVER = 0.05


class Job:
    """One caller's part of a batch, and its outcome."""

    __slots__ = ("payload", "done", "result", "error", "finished", "next")

    def __init__(self, payload: Any) -> None:
        self.payload = payload
        self.done = threading.Lock()  # released once the outcome is set
        self.done.acquire()
        self.result: Any = None
        self.error: Optional[BaseException] = None
        #: Set with the outcome, before any waiter of the batch is woken.
        self.finished = False
        #: The caller of the same batch that this one's caller wakes.
        self.next: Optional[Job] = None


class _Led(Job):
    """The job of a caller that leads the batch it is in: it waits on
    nothing, so it has no lock."""

    __slots__ = ()

    def __init__(self, payload: Any) -> None:  # no Job.__init__: no lock
        self.payload = payload
        self.result = None
        self.error = None


class AsyncJob(Job):
    """A coroutine's part of a batch: no lock to wait on, a future instead.

    ``finish(job)`` runs on the committer thread, once the outcome
    is set, whether or not anyone still awaits the future: what it returns
    (or raises) settles the future.  A cancelled await therefore neither
    stops nor repeats the job."""

    __slots__ = ("loop", "future", "finish")

    def __init__(
        self,
        payload: Any,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
        finish: Callable[[Job], Any],
    ) -> None:
        # No Job.__init__: the done lock is what an async job does without.
        self.payload = payload
        self.result = None
        self.error = None
        self.loop = loop
        self.future = future
        self.finish = finish


_Outcome = tuple["asyncio.Future[Any]", Any, Optional[BaseException]]


class Batcher:
    """Subclasses say how a batch is done (``_run``) and what a caller whose
    batch was interrupted is told (``_interrupted``)."""

    #: Jobs handed to the store in one go, at most.
    limit = 1024

    def __init__(self) -> None:
        self._leader = threading.Lock()  # held by the caller doing the work
        self._queue: queue.SimpleQueue[Job] = queue.SimpleQueue()
        #: The committer thread (made by the first async job) and its bell.
        self._committer: Optional[threading.Thread] = None
        self._bell = threading.Event()
        self._starting = threading.Lock()
        self._stopping = False
        #: Async jobs finished by a batch a caller's thread led, for the
        #: committer to finish: that thread may hold a lock (a spill holds
        #: its task's shard lock while it writes) that a finish must take.
        self._handoff: queue.SimpleQueue[list[AsyncJob]] = queue.SimpleQueue()

    def _submit(self, payload: Any) -> Job:
        """Queue ``payload``, lead while nobody else does, and return its
        job once the outcome is set."""
        if self._queue.empty() and self._leader.acquire(blocking=False):
            # Nobody waits and nobody leads: lead now, with our job first
            # (then on, as _lead_if_free, while jobs are queued).
            led = _Led(payload)
            self._lead_acquired(led)
            if not self._queue.empty():
                self._lead_if_free()
            return led
        job = Job(payload)
        self._queue.put(job)
        self._lead_if_free(job)
        self._queued(job)
        while not job.done.acquire(timeout=TAKEOVER):
            if job.finished:
                break  # the caller before us in the chain did not wake us
            # Still waiting: if our leader was interrupted, nobody leads.
            if not self._queue.empty():
                self._lead_if_free(job)
        following = job.next
        if following is not None:
            following.done.release()
        return job

    def _submit_async(self, job: AsyncJob) -> None:
        """Queue an async job and ring the committer; never waits."""
        if self._committer is None:
            self._start_committer()
        self._queue.put(job)
        # Cheap while the committer is busy (the bell is already rung): a
        # burst of coroutines costs one thread wake-up, not one each.
        self._bell.set()
        self._queued_async(job)

    def _start_committer(self) -> None:
        with self._starting:  # one committer, even if two loops start at once
            if self._committer is None and not self._stopping:
                thread = threading.Thread(target=self._commit_loop, name="journal-committer",
                                          daemon=True)
                thread.start()
                self._committer = thread

    def _commit_loop(self) -> None:
        bell = self._bell
        while not self._stopping:
            # Queued jobs that another leader holds: look again shortly, in
            # case that leader is interrupted; an empty queue waits for the bell.
            bell.wait(None if self._queue.empty() and self._handoff.empty() else TAKEOVER)
            bell.clear()
            if self._stopping:
                return
            try:
                self._deliver_handed_off()
                self._lead_if_free()
            except BaseException:  # noqa: BLE001 - its callers were told; go on
                pass

    def _deliver_handed_off(self) -> None:
        while not self._handoff.empty():
            self._deliver(self._handoff.get_nowait())

    def _stop_committer(self) -> None:
        """Let the committer thread end (its store is closing)."""
        self._stopping = True
        self._bell.set()
        committer = self._committer
        if committer is not None and committer is not threading.current_thread():
            committer.join(timeout=5.0)
        # Whatever was handed to it and not finished yet: here, so that no
        # awaiting coroutine is left without its outcome.
        self._deliver_handed_off()

    def _lead_if_free(self, own: Optional[Job] = None) -> None:
        while self._leader.acquire(blocking=False):
            self._lead_acquired(own=own)
            # A job queued after our last look, whose owner found us still
            # leading, would wait for its next look: look again now.
            if self._queue.empty():
                break

    def _lead_acquired(self, led: Optional[_Led] = None, own: Optional[Job] = None) -> None:
        """Lead one batch (``led`` first in it, if given), holding the
        leadership, then give it up; ``own`` is the leader's queued job."""
        finished: list[AsyncJob] = []
        try:
            self._lead(finished, led, own)
        finally:
            self._leader.release()
            if finished:
                if threading.current_thread() is self._committer or self._stopping:
                    self._deliver(finished)
                else:
                    self._handoff.put(finished)
                    self._bell.set()

    def _queued(self, job: Job) -> None:
        """Called after queueing, before waiting (for a store being closed)."""

    def _queued_async(self, job: AsyncJob) -> None:
        """Called after queueing an async job (for a store being closed)."""

    def _lead(self, finished: list[AsyncJob], led: Optional[_Led] = None,
              own: Optional[Job] = None) -> None:
        """Run one batch (``led``, the leader's own job, first); its async
        jobs go to ``finished``, for delivery once the leadership is given up."""
        if led is None:
            batch = self._take(self.limit)
            if not batch:
                return
        else:
            batch = [led]
            if not self._queue.empty():
                batch += self._take(self.limit - 1)
        try:
            self._run(batch)
        except BaseException as exc:
            # Interrupted (KeyboardInterrupt, a signal): fail this batch
            # rather than leave its callers waiting forever.
            for job in batch:
                if job.error is None:
                    job.error = self._interrupted(exc)
            raise
        finally:
            self._release(batch, finished, own)

    @staticmethod
    def _release(batch: list[Job], finished: list[AsyncJob], own: Optional[Job] = None) -> None:
        """Wake the batch's callers: the first, which wakes the next as
        soon as it runs, and so on (woken all at once, they would all queue
        for the GIL, each to sleep once more); the leader's ``own`` job has
        its caller awake already.  Async jobs go to ``finished``."""
        chain: list[Job] = []
        own_here = False  # with more than ``limit`` jobs ahead, the leader's is not
        for job in batch:
            kind = type(job)
            if kind is Job:
                if job is own:
                    own_here = True
                else:
                    chain.append(job)
            elif kind is AsyncJob:
                finished.append(job)  # type: ignore[arg-type]  # just checked
            # a _Led job's caller is the leader: nobody to wake
        for before, after in zip(chain, chain[1:]):
            before.next = after
        # Linked first: a caller that looks on its own (TAKEOVER) and finds
        # its job finished wakes the next one itself.
        for job in chain:
            job.finished = True
        if own_here:
            # Only a batch that ran it: another batch's leader finishing it
            # would return the caller's change before its commit.
            own.finished = True  # type: ignore[union-attr]  # own_here: not None
            own.done.release()  # type: ignore[union-attr]
        if chain:
            chain[0].done.release()

    def _deliver(self, finished: list[AsyncJob]) -> None:
        """Finish each async job here, then settle each loop's futures with
        one call into that loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for job in finished:
            value, error = None, None
            try:
                value = job.finish(job)
            except BaseException as exc:  # noqa: BLE001 - it is that caller's outcome
                error = exc
            by_loop.setdefault(job.loop, []).append((job.future, value, error))
        for loop, outcomes in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, outcomes)
            except RuntimeError:
                pass  # that loop is closed: nobody awaits there any more

    def _take(self, limit: int) -> list[Job]:
        # Only the leader takes, so what qsize() counts is there to take
        # (and no Empty is raised and caught at the end of every batch).
        get = self._queue.get_nowait
        return [get() for _ in range(min(limit, self._queue.qsize()))]

    def _run(self, batch: list[Job]) -> None:
        raise NotImplementedError

    def _interrupted(self, exc: BaseException) -> BaseException:
        return exc


def _settle(outcomes: list[_Outcome]) -> None:
    """On the loop: hand each awaiting coroutine its outcome (a cancelled
    one has stopped listening; the job was finished all the same)."""
    for future, value, error in outcomes:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)
