"""End to end: tasks driven through register -> appends -> complete -> get.

16 threads each drive TASKS[impl] tasks through register, 200 appends of
1 KB, complete and get.  The reviewed design gets fewer tasks per round
(each of its appends copies up to 40 KB), so figures are per task.
"""

from __future__ import annotations

import pytest

from conftest import buffer_class, run_in_threads
from reviewed import HEAD, TAIL, ReviewedJournal

from journal import JournalConfig, TaskJournal

THREADS = 16
APPENDS = 200
CHUNK = b"x" * 1024
TASKS = {"c": 1_000, "python": 100, "reviewed": 50}  # per thread, per round


def _ours(impl):
    journal = TaskJournal(
        config=JournalConfig(head_bytes=HEAD, tail_bytes=TAIL, sweep_interval=0),
        buffer_class=buffer_class(impl),
    )
    return journal, _driver(journal)


def _driver(journal):
    def drive(ids):
        for task_id in ids:
            journal.register(task_id, "node")
            out = journal.stream(task_id)
            for _ in range(APPENDS):
                out.append(CHUNK)
            journal.complete(task_id, {"exit_code": 0})
            journal.get(task_id)

    return drive


def _reviewed():
    journal = ReviewedJournal()

    def drive(ids):
        for task_id in ids:
            journal.register(task_id, "node")
            for _ in range(APPENDS):
                journal.append(task_id, CHUNK)
            journal.complete(task_id, {"exit_code": 0})
            journal.get(task_id)

    return journal, drive


@pytest.mark.parametrize("impl", ["c", "python", "reviewed"])
def test_end_to_end(benchmark, per_op, impl):
    benchmark.group = f"end to end, {THREADS} threads, {APPENDS} x 1 KB per task"
    per_thread = TASKS[impl]
    journals = []

    def setup():
        # A fresh journal every round, as each keeps every result it was
        # given (16,000 x 40 KB for ours) and the next round must not pay
        # for the last one's memory.
        for old in journals:
            if hasattr(old, "close"):
                old.close()
        journal, drive = _reviewed() if impl == "reviewed" else _ours(impl)
        journals[:] = [journal]
        slices = [[f"t{thread}-{n}" for n in range(per_thread)] for thread in range(THREADS)]
        return (drive, slices), {}

    per_op(THREADS * per_thread)
    benchmark.pedantic(run_in_threads, setup=setup, rounds=5, iterations=1)
    journals.clear()


@pytest.mark.parametrize("impl", ["journal handle", "bare buffer"])
def test_handle_overhead(benchmark, per_op, impl):
    """stream() + append through the handle, against a bare buffer's append.

    Both sides append to 1,000 full buffers that already exist, so that only
    the difference is measured: the journal side looks its handle up with
    stream() for every task, 200 appends at a time.
    """
    benchmark.group = "handle vs bare buffer, 1,000 tasks x 200 x 1 KB"
    tasks = 1_000
    cls = buffer_class("c")
    journal = TaskJournal(config=JournalConfig(sweep_interval=0), buffer_class=cls)
    ids = [f"t{n}" for n in range(tasks)]
    bare = []
    for task_id in ids:
        journal.register(task_id, "node")
        journal.stream(task_id).append(b"\0" * (HEAD + TAIL))
        bare.append(cls(HEAD, TAIL))
        bare[-1].append(b"\0" * (HEAD + TAIL))

    if impl == "journal handle":
        def run():
            for task_id in ids:
                out = journal.stream(task_id)
                for _ in range(APPENDS):
                    out.append(CHUNK)
    else:
        def run():
            for out in bare:
                for _ in range(APPENDS):
                    out.append(CHUNK)

    per_op(tasks * APPENDS)
    benchmark.pedantic(run, rounds=10, iterations=1, warmup_rounds=1)
    journal.close()
