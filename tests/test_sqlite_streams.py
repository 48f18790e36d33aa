"""SQLite: a stream's stored state only moves forward, whatever the order of
the writes that carry its snapshots."""

from __future__ import annotations

import sqlite3

from journal import JournalConfig, TaskJournal
from journal._buffer_shared import snapshot_total
from journal.store import TaskRow, open_store


# The schema taskjournal wrote as version 1.
_SCHEMA_V1 = (
    """CREATE TABLE tasks (task_id TEXT PRIMARY KEY, node_id TEXT NOT NULL, status TEXT NOT NULL,
        meta_json TEXT, result BLOB, error TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL,
        finished_at REAL, deadline REAL)""",
    "CREATE INDEX tasks_in_flight ON tasks(created_at) WHERE finished_at IS NULL",
    "CREATE INDEX tasks_finished ON tasks(finished_at) WHERE finished_at IS NOT NULL",
    """CREATE TABLE streams (task_id TEXT NOT NULL, name TEXT NOT NULL, snapshot BLOB NOT NULL,
        PRIMARY KEY (task_id, name))""",
    "CREATE TABLE tombstones (task_id TEXT PRIMARY KEY, until REAL NOT NULL)",
    """CREATE TRIGGER tasks_clear_tombstone AFTER INSERT ON tasks BEGIN
        DELETE FROM tombstones WHERE task_id = NEW.task_id; END""",
)


def _row(task_id, status="running", finished_at=None):
    return TaskRow(task_id, "n", status, None, None, None, 1.0, 1.0, finished_at, None)


def _snapshots(buffer_cls, *sizes):
    """Snapshots of one stream taken as it grows to each size."""
    buf = buffer_cls(1000, 1000)
    taken = []
    for size in sizes:
        buf.append(b"x" * (size - buf.total))
        taken.append(buf.snapshot())
    return buf, taken


def test_an_older_snapshot_never_replaces_a_newer_one(sqlite_url, buffer_cls):
    store = open_store(sqlite_url)
    try:
        store.put_task(_row("t"), new=True)
        _, (small, big) = _snapshots(buffer_cls, 50, 100)
        store.put_streams([("t", "out", big)])
        store.put_streams([("t", "out", small)])  # skipped, not an error
        assert snapshot_total(store.get_stream("t", "out")) == 100
        store.put_streams([("t", "out", big)])  # the same state again is fine
        assert store.get_stream("t", "out") == big
    finally:
        store.close()


def test_put_task_streams_only_move_forward_too(sqlite_url, buffer_cls):
    store = open_store(sqlite_url)
    try:
        store.put_task(_row("t"), new=True)
        buf, (old,) = _snapshots(buffer_cls, 50)
        buf.append(b"y" * 50)
        store.put_task(_row("t", "succeeded", 2.0), {"out": buf})  # the final state, 100
        store.put_streams([("t", "out", old)])  # a checkpoint pass that was late
        assert snapshot_total(store.get_stream("t", "out")) == 100
        # And a final commit older than a checkpoint leaves the checkpoint.
        late = buffer_cls.restore(old)
        store.put_task(_row("t", "succeeded", 2.0), {"out": late})
        assert snapshot_total(store.get_stream("t", "out")) == 100
    finally:
        store.close()


def test_a_new_registration_drops_stream_rows_left_for_its_id(sqlite_url, buffer_cls):
    store = open_store(sqlite_url)
    _, (big,) = _snapshots(buffer_cls, 100)
    store.put_task(_row("t"), new=True)
    store.put_streams([("t", "out", big)])
    store.close()
    # A crash between the writes of a removal leaves stream rows behind.
    conn = sqlite3.connect(sqlite_url[len("sqlite:///"):])
    conn.execute("DELETE FROM tasks")
    conn.commit()
    conn.close()
    store = open_store(sqlite_url)
    try:
        store.put_task(_row("t"), new=True)
        assert store.get_stream("t", "out") is None
        _, (small,) = _snapshots(buffer_cls, 10)
        store.put_streams([("t", "out", small)])  # not shadowed by the old total
        assert store.get_stream("t", "out") == small
    finally:
        store.close()


def test_a_late_checkpoint_does_not_roll_back_the_final_output(sqlite_url, buffer_cls):
    """A checkpoint pass snapshots, complete() commits the final streams,
    then the pass commits its older snapshot: the final output stays."""
    config = JournalConfig(sweep_interval=0, checkpoint_interval=3600)
    journal = TaskJournal(sqlite_url, config=config, buffer_class=buffer_cls)
    journal.register("t", "n")
    journal.start("t")
    out = journal.stream("t")
    out.append(b"a" * 100)
    stale = out.snapshot()  # what the pass took
    out.append(b"b" * 100)
    journal.complete("t", "done")
    journal._store.put_streams([("t", "stdout", stale)])  # what it commits, too late
    journal.close()
    again = TaskJournal(sqlite_url, config=config, buffer_class=buffer_cls)
    try:
        view = again.get("t").streams["stdout"]
        assert view.total == 200
        assert (view.head + view.tail) == b"a" * 100 + b"b" * 100
    finally:
        again.close()


def test_a_version_1_file_is_migrated_and_stays_readable(sqlite_url, buffer_cls):
    path = sqlite_url[len("sqlite:///"):]
    _, (snap,) = _snapshots(buffer_cls, 70)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    for statement in _SCHEMA_V1:
        conn.execute(statement)
    conn.execute(f"PRAGMA application_id={0x544A524E}")
    conn.execute("PRAGMA user_version=1")
    conn.execute(
        "INSERT INTO tasks VALUES ('t','n','running',NULL,NULL,NULL,1.0,1.0,NULL,NULL)"
    )
    conn.execute("INSERT INTO streams VALUES ('t','out',?)", (snap,))
    conn.close()
    reader = open_store(sqlite_url, readonly=True)  # a v1 file reads without a migration
    try:
        assert reader.get_stream("t", "out") == snap
        assert reader.get("t").streams == {"out": snap}
    finally:
        reader.close()
    store = open_store(sqlite_url)
    try:
        assert store.get_stream("t", "out") == snap
        _, (small,) = _snapshots(buffer_cls, 20)
        store.put_streams([("t", "out", small)])  # the migrated total (70) holds
        assert store.get_stream("t", "out") == snap
    finally:
        store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    assert conn.execute("SELECT total FROM streams").fetchall() == [(70,)]
    conn.close()
