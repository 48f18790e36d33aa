"""The batcher's leader wakes only the callers of the batch it ran.

A caller that queues its job and then wins the leadership does not always
run its own job: with more than ``limit`` jobs ahead of it, its first batch
is theirs.  Waking it then would return a registration before its commit.
"""

from __future__ import annotations

import threading

from journal.store._batching import Batcher, Job


class _Recording(Batcher):
    limit = 2

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[object]] = []
        self.lock = threading.Lock()

    def _run(self, batch: list[Job]) -> None:
        with self.lock:
            self.batches.append([job.payload for job in batch])
        for job in batch:
            job.result = ("done", job.payload)

    def _interrupted(self, exc: BaseException) -> BaseException:
        return RuntimeError(f"interrupted: {exc!r}")


def test_a_leader_whose_job_is_not_in_its_batch_waits_for_the_batch_that_has_it():
    batcher = _Recording()
    # Two jobs ahead, queued by callers that have not led yet (limit 2).
    ahead = [Job("first"), Job("second")]
    for job in ahead:
        batcher._queue.put(job)
    own = batcher._submit("own")
    # Its outcome is set by a batch that ran it, never by another one.
    assert own.result == ("done", "own")
    assert batcher.batches == [["first", "second"], ["own"]]
    # The callers ahead: the first woken by the leader, the second to be
    # woken by the first's caller (a chain), both finished.
    assert all(job.finished for job in ahead)
    assert ahead[0].done.acquire(blocking=False)
    assert ahead[0].next is ahead[1]
    assert not ahead[1].done.acquire(blocking=False)


def test_a_leader_wakes_its_own_job_once_when_it_is_in_the_batch():
    batcher = _Recording()
    batcher._queue.put(Job("ahead"))
    own = batcher._submit("own")
    assert own.result == ("done", "own")
    assert batcher.batches == [["ahead", "own"]]
    assert not own.done.acquire(blocking=False)  # taken by its caller, released once
