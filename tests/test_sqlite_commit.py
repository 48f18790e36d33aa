"""SQLite group commit: an interrupted leader strands no writer, and a bad
write fails alone without wedging the connection."""

from __future__ import annotations

import threading
import time

import pytest

from journal.errors import InvalidArgument, StoreError
from journal.store import TaskRow, open_store


def _row(task_id):
    return TaskRow(task_id, "n", "pending", None, None, None, 1.0, 1.0, None, None)


def test_writers_queued_behind_an_interrupted_leader_all_finish(sqlite_url):
    store = open_store(sqlite_url)
    writer = store._writer
    real_run = writer._run
    leading, release = threading.Event(), threading.Event()

    def interrupted_run(batch):
        # Only the first batch is interrupted: the leader gets Ctrl-C mid-commit.
        writer._run = real_run
        leading.set()
        release.wait(10)
        raise KeyboardInterrupt

    writer._run = interrupted_run
    outcomes = {}

    def write(task_id):
        try:
            store.put_task(_row(task_id), new=True)
            outcomes[task_id] = "ok"
        except KeyboardInterrupt:
            outcomes[task_id] = "interrupted"
        except StoreError as exc:
            outcomes[task_id] = type(exc).__name__

    try:
        leader = threading.Thread(target=write, args=("leader",))
        leader.start()
        assert leading.wait(10)
        followers = [threading.Thread(target=write, args=(f"f{n}",)) for n in range(6)]
        for thread in followers:
            thread.start()
        deadline = time.monotonic() + 10
        while writer._queue.qsize() < len(followers) and time.monotonic() < deadline:
            time.sleep(0.001)
        assert writer._queue.qsize() == len(followers), "the followers never queued"
        release.set()
        started = time.monotonic()
        for thread in [leader, *followers]:
            thread.join(timeout=1.0)
        waited = time.monotonic() - started
        assert not any(t.is_alive() for t in [leader, *followers]), "a writer was stranded"
        assert waited < 1.0
        assert outcomes["leader"] in ("interrupted", "StoreError")
        assert all(outcomes[f"f{n}"] == "ok" for n in range(6)), outcomes
        for n in range(6):
            assert store.get(f"f{n}") is not None
    finally:
        release.set()
        store.close()


def test_a_lone_surrogate_fails_alone_and_the_next_write_succeeds(sqlite_url):
    store = open_store(sqlite_url)
    try:
        with pytest.raises(InvalidArgument):
            store.put_task(_row("bad\ud800"), new=True)
        store.put_task(_row("good"), new=True)  # the connection is not wedged
        assert store.get("good").row.task_id == "good"
        with pytest.raises(InvalidArgument):
            store.put_streams([("good", "out\ud800", b"x")])
        with pytest.raises(InvalidArgument):
            store.get("bad\ud800")
    finally:
        store.close()


def test_a_bad_write_in_a_shared_batch_fails_only_its_caller(sqlite_url):
    store = open_store(sqlite_url)
    outcomes = {}
    barrier = threading.Barrier(8)

    def write(n):
        task_id = f"t{n}" if n % 2 else f"t{n}\udcff"
        barrier.wait()
        for attempt in range(50):
            try:
                store.put_task(_row(f"{task_id}-{attempt}"), new=True)
                outcomes.setdefault(n, set()).add("ok")
            except InvalidArgument:
                outcomes.setdefault(n, set()).add("invalid")

    try:
        threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert not any(t.is_alive() for t in threads)
        for n in range(8):
            assert outcomes[n] == ({"ok"} if n % 2 else {"invalid"}), (n, outcomes[n])
        assert len(store.list_tasks()) == 4 * 50
    finally:
        store.close()
