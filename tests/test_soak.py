"""A concurrency soak: 16 threads work one journal for a minute.

Workers register, stream, start, complete, read and wait on tasks while a
checkpoint thread and a sweep thread run their passes as fast as they can
(on top of the journal's own background timer), with and without a memory
budget, on every store.  Afterwards every completed task must hold exactly
the stream total its ``complete()`` acknowledged, after close and reopen on
a durable store, and waiters still blocked at close must all end.

``JOURNAL_SOAK_SECONDS`` sets the length (default 60, as CI runs it).
"""

from __future__ import annotations

import os
import random
import threading
import time

import pytest

from conftest import _store_url
from journal import JournalConfig, TaskJournal, TaskStatus
from journal.errors import InvalidTransition, JournalClosed, WaitTimeout

SECONDS = float(os.environ.get("JOURNAL_SOAK_SECONDS", "60"))
THREADS = 16

#: (store kind, memory budget): memory:// cannot spill, so no budget there.
SOAKS = [("memory", None), ("sqlite", None), ("sqlite", 64 * 1024),
         pytest.param("redis", None, marks=pytest.mark.redis),
         pytest.param("redis", 64 * 1024, marks=pytest.mark.redis)]


def _url(kind, tmp_path, request):
    url = _store_url(kind, tmp_path, request)
    # Commits without an fsync each: the soak is about interleavings, not disks.
    return f"{url}?synchronous=normal" if kind == "sqlite" else url


@pytest.mark.timeout(SECONDS * 4 + 240)
@pytest.mark.parametrize(("kind", "budget"), SOAKS)
def test_soak(tmp_path, request, buffer_cls, kind, budget):
    url = _url(kind, tmp_path, request)
    config = JournalConfig(head_bytes=2000, tail_bytes=2000, checkpoint_interval=0.05,
                           sweep_interval=0.05, memory_budget=budget, lease_timeout=600)
    journal = TaskJournal(url, config=config, buffer_class=buffer_cls)
    acknowledged: dict[str, tuple[int, int]] = {}  # task id -> (stream total, result)
    errors: list[BaseException] = []
    stop = threading.Event()
    ended_early = []

    def worker(number):
        # Each worker keeps up to 80 tasks in flight (about a thousand in
        # all), so that a checkpoint pass snapshots many tasks before it
        # commits, and tasks end in between.
        rng = random.Random(number)
        open_tasks: list[tuple[str, object]] = []
        n = 0
        try:
            while not stop.is_set():
                if len(open_tasks) < 80 and rng.random() < 0.3:
                    task_id = f"w{number}-{n}"
                    n += 1
                    journal.register(task_id, f"node-{number}", meta={"n": n})
                    if rng.random() < 0.8:
                        journal.start(task_id)
                    open_tasks.append((task_id, journal.stream(task_id)))
                    continue
                if not open_tasks:
                    continue
                task_id, out = open_tasks[rng.randrange(len(open_tasks))]
                for _ in range(rng.randrange(1, 6)):
                    out.append(rng.randbytes(rng.choice((16, 200, 3000))))
                roll = rng.random()
                if roll < 0.05:
                    journal.get(task_id)
                elif roll < 0.25:
                    open_tasks.remove((task_id, out))
                    if rng.random() < 0.05:
                        ended_early.append(task_id)  # left in flight for close()
                        continue
                    result = int(task_id.rpartition("-")[2])
                    record = journal.complete(task_id, result)
                    acknowledged[task_id] = (record.streams["stdout"].total, result)
                    assert journal.wait(task_id, timeout=10).result == result
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    def passes(call):
        try:
            while not stop.is_set():
                call()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def waiter():
        rng = random.Random()
        try:
            while not stop.is_set():
                ids = list(acknowledged) + ended_early
                if not ids:
                    time.sleep(0.01)
                    continue
                try:
                    journal.wait(rng.choice(ids), timeout=0.01)
                except WaitTimeout:
                    pass
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS - 3)]
    helpers = [threading.Thread(target=passes, args=(journal.checkpoint,)),
               threading.Thread(target=passes, args=(journal.sweep,)),
               threading.Thread(target=waiter)]
    for thread in workers + helpers:
        thread.start()
    time.sleep(SECONDS)
    stop.set()
    for thread in workers + helpers:
        thread.join(60)
    assert not any(t.is_alive() for t in workers + helpers), "a soak thread hung"
    assert errors == []
    assert len(acknowledged) > 100

    # Waiters still blocked at close end, every one of them.
    stranded = [f"w-left-{i}" for i in range(8)]
    outcomes = []
    for task_id in stranded:
        journal.register(task_id, "node")

    def blocked(task_id):
        try:
            journal.wait(task_id)
        except JournalClosed:
            outcomes.append("closed")

    blocked_threads = [threading.Thread(target=blocked, args=(t,)) for t in stranded]
    for thread in blocked_threads:
        thread.start()
    time.sleep(0.2)
    if kind == "memory":
        _check(journal, acknowledged)
    journal.close()
    for thread in blocked_threads:
        thread.join(10)
    assert outcomes == ["closed"] * len(stranded)
    if kind != "memory":
        with TaskJournal(url, config=JournalConfig(sweep_interval=0)) as again:
            _check(again, acknowledged)
            in_flight = {r.task_id for r in again.in_flight()}
            assert set(ended_early) | set(stranded) <= in_flight
    print(f"\nsoak {kind} budget={budget}: {len(acknowledged):,} tasks completed, "
          f"{sum(total for total, _ in acknowledged.values()):,} acknowledged stream bytes "
          f"checked, {len(stranded)} waiters ended by close(), 0 regressed")


def _check(journal, acknowledged):
    regressed = []
    for task_id, (total, result) in acknowledged.items():
        record = journal.get(task_id)
        if (record.status, record.result, record.streams["stdout"].total) != (
            TaskStatus.COMPLETED, result, total
        ):
            regressed.append((task_id, record.status, record.streams["stdout"].total, total))
    assert regressed == [], f"{len(regressed)} of {len(acknowledged)} tasks regressed"


def test_soak_checks_catch_a_regressed_stream(tmp_path, buffer_cls):
    """The soak's check fails when one stream holds less than acknowledged."""
    url = f"sqlite:///{tmp_path / 'j.db'}"
    with TaskJournal(url, config=JournalConfig(sweep_interval=0), buffer_class=buffer_cls) as journal:
        journal.register("t", "n")
        journal.stream("t").append(b"x" * 10)
        journal.complete("t", 1)
        with pytest.raises(AssertionError, match="1 of 1 tasks regressed"):
            _check(journal, {"t": (11, 1)})
        with pytest.raises(InvalidTransition):
            journal.complete("t")
