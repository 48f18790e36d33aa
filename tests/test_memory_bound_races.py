"""Races that the memory bound opened, forced (found by an attack on it).

With finished tasks out of memory, a registration of a finished task's id
claims the id before the store refuses it; a spill that writes under its
shard lock may lead a group commit whose async finishes take shard locks;
a waiter woken by a task's end may look again after close().
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from journal import JournalConfig, TaskJournal, TaskStatus
from journal.errors import DuplicateTask, InvalidTransition, StoreError


def test_registering_a_finished_ids_again_never_touches_its_row(reopen):
    journal = reopen(checkpoint_interval=3600)
    journal.register("t", "n1", meta={"m": 1})
    journal.start("t")
    journal.complete("t", {"answer": 42})
    store = journal._table.store
    real = store.put_task
    entered, gate = threading.Event(), threading.Event()

    def held(row, *args, **kwargs):
        if kwargs.get("new"):
            entered.set()
            assert gate.wait(10)
        return real(row, *args, **kwargs)

    store.put_task = held
    outcome = {}

    def register_again():
        try:
            journal.register("t", "n2")
        except DuplicateTask as exc:
            outcome["error"] = exc

    registering = threading.Thread(target=register_again)
    registering.start()
    try:
        assert entered.wait(10)
        during = journal.get("t")
        assert (during.status, during.result, during.meta) == (TaskStatus.COMPLETED, {"answer": 42}, {"m": 1})
        starting = threading.Thread(target=lambda: outcome.setdefault(
            "start", _attempt(lambda: journal.start("t"))))
        starting.start()
        time.sleep(0.1)
    finally:
        gate.set()
        registering.join()
        store.put_task = real
    starting.join()
    assert isinstance(outcome["error"], DuplicateTask)
    assert isinstance(outcome["start"], InvalidTransition)
    journal.close()
    after = reopen().get("t")
    assert (after.status, after.result, after.meta, after.node_id) == (
        TaskStatus.COMPLETED, {"answer": 42}, {"m": 1}, "n1")


def _attempt(call):
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - returned for the test to look at
        return exc
    return None


def test_async_ends_beside_budget_spills_never_deadlock(buffer_cls, tmp_path):
    # A spill writes under its task's shard lock; if its write leads a batch
    # holding async completions of tasks of the same shard, their finishes
    # must not run on that thread.  32 coroutines and the real maintenance
    # thread under a small budget: every task must keep finishing.
    config = JournalConfig(memory_budget=4096, shards=1, sweep_interval=3600,
                           checkpoint_interval=0.01)
    journal = TaskJournal(f"sqlite:///{tmp_path / 'j.db'}?synchronous=normal", config=config,
                          buffer_class=buffer_cls)
    done = [0]

    async def worker(w):
        n = 0
        while True:
            task_id = f"w{w}-{n}"
            n += 1
            await journal.register_async(task_id, "n")
            await journal.start_async(task_id)
            handle = journal.stream(task_id)
            for _ in range(4):
                handle.append(b"z" * 3000)
                await asyncio.sleep(0)
            await journal.complete_async(task_id, n)
            done[0] += 1

    async def main():
        workers = [asyncio.create_task(worker(w)) for w in range(32)]
        last = -1
        for _ in range(8):
            await asyncio.sleep(0.5)
            if done[0] == last:
                return False
            last = done[0]
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        return True

    loop = asyncio.new_event_loop()
    stalled = threading.Event()
    # A deadlock holds the loop's thread in a shard lock: look from outside.
    watchdog = threading.Timer(30, stalled.set)
    watchdog.start()
    try:
        assert loop.run_until_complete(main()), f"stuck after {done[0]} tasks"
    finally:
        watchdog.cancel()
        loop.close()
    assert not stalled.is_set()
    assert journal.stats()["background_errors"] == 0
    journal.close()


@pytest.mark.parametrize("close_first", [True])
def test_a_waiter_woken_by_the_end_gets_the_record_even_after_close(reopen, close_first):
    journal = reopen(checkpoint_interval=3600)
    journal.register("t", "n")
    journal.start("t")
    waits = journal._waits
    real = waits._done_event
    woke, go_on = threading.Event(), threading.Event()

    class Slow:
        def __init__(self, event):
            self.event = event

        def wait(self, timeout=None):
            ended = self.event.wait(timeout)
            woke.set()
            assert go_on.wait(10)  # close() runs here, after the end
            return ended

    waits._done_event = lambda task: (lambda e: Slow(e) if e is not None else None)(real(task))
    got = {}
    waiter = threading.Thread(target=lambda: got.setdefault("r", _result(lambda: journal.wait("t"))))
    waiter.start()
    time.sleep(0.1)
    journal.complete("t", {"ok": 1})
    assert woke.wait(10)
    journal.close()
    go_on.set()
    waiter.join()
    assert got["r"].result == {"ok": 1}


def _result(call):
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - returned for the test to look at
        return exc


class _ContendedLock:
    """A shard lock that says when a second thread has to wait for it."""

    def __init__(self):
        self._lock = threading.Lock()
        self.contended = threading.Event()

    def __enter__(self):
        if not self._lock.acquire(blocking=False):
            self.contended.set()
            self._lock.acquire()
        return self

    def __exit__(self, *exc_info):
        self._lock.release()


def test_a_finished_task_stays_held_until_appends_that_raced_its_end_are_stored(reopen):
    """An end being applied sets what its commit stored, then seals; an
    append lands in between, and the end's extra checkpoint is refused. A
    pass letting go of the task at that moment, on a look from outside the
    lock, left those bytes out of the store for good."""
    journal = reopen(memory_budget=None, checkpoint_interval=3600)
    journal.register("t", "n")
    out = journal.stream("t")
    out.append(b"a" * 100)
    journal.checkpoint()
    table, store = journal._table, journal._table.store
    task = table.held("t")
    lock = table.shard("t").lock = _ContendedLock()
    refuse = []
    real_put_streams = store.put_streams

    def put_streams(items):
        if refuse:
            refuse.pop()
            raise StoreError("disk full (once)")
        return real_put_streams(items)

    store.put_streams = put_streams
    completing = threading.current_thread()
    letting_go = []

    class AtTheSeal(dict):
        def values(self):
            # The end calls this under the task's lock, to seal its streams.
            if threading.current_thread() is completing and not letting_go:
                letter = threading.Thread(target=journal._residency._let_go, args=(task,))
                letting_go.append(letter)
                letter.start()
                assert lock.contended.wait(5)  # it looked, and waits for the lock
                out.append(b"b" * 50)  # not sealed yet: accepted
                refuse.append(1)  # the end's extra checkpoint is refused
            return dict.values(self)

    task.streams = AtTheSeal(task.streams)
    record = journal.complete("t")
    task.streams = dict(task.streams)
    letting_go[0].join(5)
    assert record.streams["stdout"].total == 150
    assert journal.stats()["store_errors"] == 1
    journal.checkpoint()  # the refused checkpoint is tried again
    assert table.held("t") is None
    assert journal.get("t").streams["stdout"].total == 150
