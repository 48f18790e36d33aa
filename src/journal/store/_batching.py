"""Callers that arrive together share one trip to the store.

The first caller to arrive does the work for everyone: it takes what is
queued, hands it to the store in one go (one SQLite commit, one Redis
pipeline), then does the same for whatever queued up meanwhile, and wakes
each caller once its part is done.  A lone caller pays no thread hand-off.

Nothing here takes a lock that another thread could be left waiting on
while its holder is switched out: under the GIL such locks turn many writing
threads into a convoy.  The queue is a SimpleQueue and the leadership a
non-blocking try.

No caller depends on one leader either: a waiting caller looks up every
``TAKEOVER`` seconds and, if jobs are queued and nobody leads, leads them
itself.  A leader interrupted by KeyboardInterrupt (or any error) fails its
own batch and leaves; whoever waits behind it carries on, so every queued
job completes or fails promptly, without waiting for some unrelated call.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Optional

#: How long a waiting caller trusts the leader before it looks whether
#: queued jobs were left unattended (seconds).  Waking this often costs
#: nothing measurable; it bounds how long an abandoned queue waits.
TAKEOVER = 0.05


class Job:
    """One caller's part of a batch, and its outcome."""

    __slots__ = ("payload", "done", "result", "error")

    def __init__(self, payload: Any) -> None:
        self.payload = payload
        self.done = threading.Lock()  # released once the outcome is set
        self.done.acquire()
        self.result: Any = None
        self.error: Optional[BaseException] = None


class Batcher:
    """Subclasses say how a batch is done (``_run``) and what a caller whose
    batch was interrupted is told (``_interrupted``)."""

    #: Jobs handed to the store in one go, at most.
    limit = 1024

    def __init__(self) -> None:
        self._leader = threading.Lock()  # held by the caller doing the work
        self._queue: queue.SimpleQueue[Job] = queue.SimpleQueue()

    def _submit(self, payload: Any) -> Job:
        """Queue ``payload``, lead while nobody else does, and return its
        job once the outcome is set."""
        job = Job(payload)
        self._queue.put(job)
        self._lead_if_free()
        self._queued(job)
        while not job.done.acquire(timeout=TAKEOVER):
            # Still waiting: if our leader was interrupted, nobody leads.
            if not self._queue.empty():
                self._lead_if_free()
        return job

    def _lead_if_free(self) -> None:
        while self._leader.acquire(blocking=False):
            try:
                self._lead()
            finally:
                self._leader.release()
            # A job queued after our last look, whose owner found us still
            # leading, would wait for its next look: look again now.
            if self._queue.empty():
                break

    def _queued(self, job: Job) -> None:
        """Called after queueing, before waiting (for a store being closed)."""

    def _lead(self) -> None:
        while True:
            batch = self._take(self.limit)
            if not batch:
                return
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
                for job in batch:
                    job.done.release()

    def _take(self, limit: int) -> list[Job]:
        batch: list[Job] = []
        try:
            while len(batch) < limit:
                batch.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        return batch

    def _run(self, batch: list[Job]) -> None:
        raise NotImplementedError

    def _interrupted(self, exc: BaseException) -> BaseException:
        return exc
