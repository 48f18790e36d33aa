"""SQLite group commit with multi-row statements: a batch of writes is one
statement per run of a kind, chunked, and still means what the writes one
by one would: forward-only streams, one caller's duplicate failing alone."""

from __future__ import annotations

import threading
import time

import pytest

from journal.errors import DuplicateTask
from journal.store import TaskRow, open_store
from journal.store import sqlite as sqlite_store

from in_thread import WAIT


def _row(task_id, status="pending"):
    finished = None if status == "pending" else 2.0
    return TaskRow(task_id, "n", status, None, None, None, 1.0, 1.0, finished, None)


class _Snap:
    def __init__(self, buffer_cls, size):
        buf = buffer_cls(1000, 1000)
        buf.append(b"x" * size)
        self.data = buf.snapshot()

    def snapshot(self):
        return self.data


def _in_one_batch(store, calls):
    """Run ``calls`` (one thread each) so that all but the first share one
    batch: the first commit is held until the others are queued.  Return
    the batch sizes and each call's outcome."""
    writer = store._writer
    real = writer._run
    entered, release = threading.Event(), threading.Event()
    sizes = []

    def held(batch):
        entered.set()
        release.wait(WAIT)
        sizes.append(len(batch))
        return real(batch)

    writer._run = held
    outcomes = [None] * len(calls)

    def run(n):
        try:
            outcomes[n] = calls[n]()
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            outcomes[n] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(calls))]
    threads[0].start()
    assert entered.wait(WAIT)
    deadline = time.monotonic() + WAIT
    for queued, thread in enumerate(threads[1:], 1):
        thread.start()  # one at a time: the batch holds them in this order
        while writer._queue.qsize() < queued and time.monotonic() < deadline:
            time.sleep(0.001)
    release.set()
    for thread in threads:
        thread.join(WAIT)
    writer._run = real
    return sizes, outcomes


def test_a_batch_larger_than_a_chunk_is_committed_whole(sqlite_url):
    store = open_store(sqlite_url)
    try:
        count = sqlite_store._CHUNK * 3 + 5
        calls = [lambda n=n: store.put_task(_row(f"t{n}"), new=True) for n in range(count)]
        sizes, outcomes = _in_one_batch(store, calls)
        assert sizes == [1, count - 1]
        assert outcomes == [None] * count
        assert len(store.list_tasks()) == count
    finally:
        store.close()


@pytest.mark.parametrize("order", ["newer first", "older first"])
def test_streams_move_forward_within_one_statement(sqlite_url, buffer_cls, order):
    store = open_store(sqlite_url)
    try:
        store.put_task(_row("t"), new=True)
        newer, older = _Snap(buffer_cls, 500), _Snap(buffer_cls, 100)
        first, second = (newer, older) if order == "newer first" else (older, newer)
        calls = [
            lambda: store.put_task(_row("u"), new=True),
            lambda: store.put_streams([("t", "stdout", first.data)]),
            lambda: store.put_streams([("t", "stdout", second.data)]),
        ]
        sizes, outcomes = _in_one_batch(store, calls)
        assert sizes == [1, 2] and outcomes == [None] * 3
        assert store.get_stream("t", "stdout") == newer.data
    finally:
        store.close()


def test_a_duplicate_in_a_multi_row_insert_fails_only_its_caller(sqlite_url):
    store = open_store(sqlite_url)
    try:
        calls = [lambda: store.put_task(_row("lead"), new=True)]
        calls += [lambda n=n: store.put_task(_row(f"t{n}" if n != 3 else "t1"), new=True)
                  for n in range(6)]
        sizes, outcomes = _in_one_batch(store, calls)
        assert sizes[:2] == [1, 6]  # then the failed batch again, job by job
        failed = [o for o in outcomes if isinstance(o, DuplicateTask)]
        assert len(failed) == 1
        assert sorted(r.task_id for r in store.list_tasks()) == ["lead", "t0", "t1", "t2", "t4", "t5"]
    finally:
        store.close()


def test_a_terminal_row_and_its_streams_share_the_batch(sqlite_url, buffer_cls):
    store = open_store(sqlite_url)
    try:
        for n in range(4):
            store.put_task(_row(f"t{n}"), new=True)
        snaps = [_Snap(buffer_cls, 10 * (n + 1)) for n in range(4)]
        calls = [lambda: store.put_task(_row("lead"), new=True)]
        calls += [lambda n=n: store.put_task(_row(f"t{n}", "completed"), {"stdout": snaps[n]})
                  for n in range(4)]
        sizes, outcomes = _in_one_batch(store, calls)
        assert sizes == [1, 4] and outcomes == [None] * 5
        for n in range(4):
            stored = store.get(f"t{n}")
            assert stored.row.status == "completed"
            assert stored.streams == {"stdout": snaps[n].data}
    finally:
        store.close()


def _statements(store):
    """The statements the writer's connection runs from now on."""
    seen = []
    store._writer._conn.set_trace_callback(seen.append)
    return seen


def test_completions_of_distinct_tasks_are_one_statement_per_kind(sqlite_url, buffer_cls):
    store = open_store(sqlite_url)
    try:
        for n in range(8):
            store.put_task(_row(f"t{n}"), new=True)
        snaps = [_Snap(buffer_cls, 10 * (n + 1)) for n in range(8)]
        calls = [lambda: store.put_task(_row("lead"), new=True)]
        calls += [lambda n=n: store.put_task(_row(f"t{n}", "completed"),
                                             {"stdout": snaps[n], "stderr": snaps[7 - n]})
                  for n in range(8)]
        seen = _statements(store)
        sizes, outcomes = _in_one_batch(store, calls)
        assert sizes == [1, 8] and outcomes == [None] * 9
        # The shared commit: one statement of 8 task rows, one of 16 streams.
        shared = seen[seen.index("BEGIN IMMEDIATE") + 1:seen.index("COMMIT")]
        assert [sql.split(" (")[0] for sql in shared] == ["INSERT INTO tasks", "INSERT INTO streams"]
        for n in range(8):
            assert store.get(f"t{n}").streams == {"stdout": snaps[n].data, "stderr": snaps[7 - n].data}
    finally:
        store.close()


def test_writes_of_one_task_in_two_jobs_keep_their_order(sqlite_url, buffer_cls):
    """A stale checkpoint of an id, queued before the id's new registration:
    the registration's trigger clears it, as it would one write at a time."""
    store = open_store(sqlite_url)
    try:
        stale = _Snap(buffer_cls, 50)
        calls = [
            lambda: store.put_task(_row("lead"), new=True),
            lambda: store.put_streams([("t", "stdout", stale.data)]),
            lambda: store.put_task(_row("t"), new=True),
            lambda: store.put_task(_row("u"), new=True),
        ]
        sizes, outcomes = _in_one_batch(store, calls)
        assert sizes == [1, 3] and outcomes == [None] * 4
        assert store.get("t").streams == {}
    finally:
        store.close()
