"""The Redis store: a stream's stored state only moves forward.

No write (checkpoint, spill, final commit) may replace a stored snapshot with
an older one, whatever the interleaving of the writers (issue 13, points 1
and 2).  The rule is kept inside the store's scripts, so these tests write
through the store directly and through a journal whose checkpoint pass is
made to commit late.
"""

from __future__ import annotations

import threading
import time

import pytest

from journal import JournalConfig, TaskJournal, TaskStatus
from journal._buffer_shared import snapshot_total
from journal.store.base import TaskRow
from journal.store.redis import RedisStore
from redis_server import admin_client

pytestmark = pytest.mark.redis


def _row(task_id: str, status: str = "running", finished: float | None = None) -> TaskRow:
    return TaskRow(task_id, "n1", status, None, None, None, 1.0, 2.0, finished, None)


def _buffer(buffer_cls, size: int, *, sealed: bool = False):
    buf = buffer_cls(1000, 1000)
    buf.append(b"x" * size)
    if sealed:
        buf.seal()
    return buf


@pytest.fixture
def store(redis_url):
    opened = RedisStore(redis_url)
    yield opened
    opened.close()


def test_put_streams_never_replaces_a_snapshot_with_an_older_one(store, buffer_cls):
    store.put_task(_row("t"), new=True)
    newer, older = _buffer(buffer_cls, 100).snapshot(), _buffer(buffer_cls, 50).snapshot()
    store.put_streams([("t", "stdout", newer)])
    store.put_streams([("t", "stdout", older)])  # skipped silently
    assert snapshot_total(store.get_stream("t", "stdout")) == 100
    store.put_streams([("t", "stdout", _buffer(buffer_cls, 150).snapshot())])
    assert snapshot_total(store.get_stream("t", "stdout")) == 150


def test_put_task_never_replaces_a_snapshot_with_an_older_one(store, buffer_cls):
    store.put_task(_row("t"), {"stdout": _buffer(buffer_cls, 100)}, new=True)
    store.put_task(_row("t"), {"stdout": _buffer(buffer_cls, 50), "stderr": _buffer(buffer_cls, 7)})
    stored = store.get("t")
    assert snapshot_total(stored.streams["stdout"]) == 100
    assert snapshot_total(stored.streams["stderr"]) == 7  # the rest of the write landed


def test_a_sealed_final_snapshot_is_not_replaced_by_an_unsealed_one_of_the_same_total(
    store, buffer_cls
):
    store.put_task(_row("t"), new=True)
    final = _buffer(buffer_cls, 100, sealed=True)
    store.put_task(_row("t", "completed", 3.0), {"stdout": final})
    store.put_streams([("t", "stdout", _buffer(buffer_cls, 100).snapshot())])
    assert store.get_stream("t", "stdout") == final.snapshot()


def test_a_value_that_is_no_snapshot_is_replaced(store, buffer_cls, redis_url):
    """Whatever sits in the streams hash without a snapshot header (an older
    layout, a hand edit) counts as older than any snapshot."""
    store.put_task(_row("t"), new=True)
    client = admin_client(redis_url)
    try:
        client.hset(store.layout.task_keys("t")[1], "stdout", b"junk")
    finally:
        client.close()
    store.put_streams([("t", "stdout", _buffer(buffer_cls, 1).snapshot())])
    assert snapshot_total(store.get_stream("t", "stdout")) == 1


def test_a_new_registration_clears_a_stale_streams_key(store, buffer_cls, redis_url):
    """A streams key left without its task (the task key went first) must
    not hand a new task of that id someone else's newer output."""
    client = admin_client(redis_url)
    try:
        client.hset(store.layout.task_keys("t")[1], "stdout",
                    _buffer(buffer_cls, 500).snapshot())
    finally:
        client.close()
    store.put_task(_row("t", "pending"), new=True)
    assert store.get("t").streams == {}
    store.put_streams([("t", "stdout", _buffer(buffer_cls, 3).snapshot())])
    assert snapshot_total(store.get_stream("t", "stdout")) == 3


def test_a_checkpoint_taken_before_complete_that_commits_after_it_rolls_nothing_back(
    redis_url, buffer_cls
):
    config = JournalConfig(sweep_interval=0, checkpoint_interval=3600)
    journal = TaskJournal(redis_url, config=config, buffer_class=buffer_cls)
    journal.register("t", "n1")
    journal.start("t")
    out = journal.stream("t")
    out.append(b"a" * 100)

    # The checkpoint pass has taken its snapshot (total 100) and is about to
    # commit it when it is switched out; complete() runs meanwhile.
    snapshotted, completed = threading.Event(), threading.Event()
    real = journal._store.put_streams

    def late_put_streams(items):
        items = list(items)
        snapshotted.set()
        assert completed.wait(10)
        real(items)

    journal._store.put_streams = late_put_streams
    checkpointer = threading.Thread(target=journal.checkpoint)
    checkpointer.start()
    assert snapshotted.wait(10)
    out.append(b"b" * 100)
    journal.complete("t", 0)
    completed.set()
    checkpointer.join(10)
    journal._store.put_streams = real
    journal.close()

    fresh = TaskJournal(redis_url, config=config, buffer_class=buffer_cls)
    try:
        record = fresh.get("t")
        assert record.status is TaskStatus.COMPLETED
        assert record.streams["stdout"].total == 200
        assert record.streams["stdout"].render() == b"a" * 100 + b"b" * 100
    finally:
        fresh.close()


def test_an_overlapping_checkpoint_never_overwrites_a_spill_snapshot(redis_url, buffer_cls):
    """Pass 1 snapshots, pass 2 spills and writes the spill snapshot, pass 1
    commits its older one: the buffer must still merge back."""
    config = JournalConfig(sweep_interval=0, checkpoint_interval=3600, memory_budget=1)
    journal = TaskJournal(redis_url, config=config, buffer_class=buffer_cls)
    try:
        journal.register("t", "n1")
        journal.start("t")
        out = journal.stream("t")
        out.append(b"a" * 100)
        buf = journal._table.tasks.get("t").streams["stdout"]
        old = buf.snapshot()
        out.append(b"b" * 50)
        journal.checkpoint()  # commits and spills at total 150
        assert buf.spilled
        journal._store.put_streams([("t", "stdout", old)])  # pass 1, late
        assert journal.get("t").streams["stdout"].total == 150
        journal.complete("t", 0)
        time.sleep(0)
        assert journal.get("t").streams["stdout"].render() == b"a" * 100 + b"b" * 50
    finally:
        journal.close()
