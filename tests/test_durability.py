"""Durable stores (SQLite, Redis): a restart loses nothing acknowledged,
nodes re-attach; and the SQLite file itself."""

from __future__ import annotations

import os
import pathlib
import sqlite3
import stat
import sys
import threading
import time

import pytest

from journal import (
    InvalidArgument,
    InvalidTransition,
    JournalError,
    StoreCorrupt,
    StoreError,
    StoreLocked,
    StreamSealed,
    TaskJournal,
    TaskLost,
    TaskStatus,
)


def _path(url):
    return url[len("sqlite:///") :]


def test_a_restart_brings_back_every_task(reopen):
    first = reopen()
    first.register("done", "n1", meta={"cmd": "ls"})
    first.stream("done").append(b"file-a\nfile-b\n")
    first.complete("done", {"exit_code": 0})
    first.register("running", "n2", deadline=600)
    first.start("running")
    out = first.stream("running")
    out.append(b"x" * 50_000)
    first.register("failed", "n1")
    first.fail("failed", "no space left")
    first.close()

    second = reopen()
    assert second.recovered == 1
    done = second.get("done")
    assert (done.status, done.result, done.meta) == (TaskStatus.COMPLETED, {"exit_code": 0}, {"cmd": "ls"})
    assert done.streams["stdout"].render() == b"file-a\nfile-b\n"
    assert second.get("failed").error == "no space left"
    [running] = second.in_flight()
    assert (running.task_id, running.node_id, running.status, running.detached) == (
        "running", "n2", TaskStatus.RUNNING, True,
    )
    assert running.streams["stdout"].total == 50_000  # close() wrote a last checkpoint
    assert running.deadline is not None


def test_reattach_resumes_streaming_after_the_checkpoint(reopen):
    first = reopen()
    first.register("t", "n1")
    first.stream("t").append(b"before-")
    assert first.checkpoint() == 1
    first.stream("t").append(b"lost-in-the-crash")  # never checkpointed
    first._store.close()  # the process dies: no close(), no last checkpoint

    second = reopen()
    resumed = second.reattach("t", "n1-again")
    assert (resumed.detached, resumed.node_id) == (False, "n1-again")
    assert resumed.streams["stdout"].total == len(b"before-")
    handle = second.stream("t")
    handle.append(b"after")
    second.complete("t", 0)
    assert second.get("t").streams["stdout"].render() == b"before-after"


def test_tasks_not_reattached_in_time_are_lost(reopen, clock):
    first = reopen()
    first.register("orphan", "n1")
    first.register("adopted", "n1")
    first.close()

    second = reopen(reattach_grace=30)
    second.reattach("adopted", "n1")
    clock.advance(29)
    second.heartbeat("n1")
    second.sweep()
    assert second.get("orphan").status is TaskStatus.PENDING
    clock.advance(2)
    second.heartbeat("n1")
    assert second.sweep()["lost"] == 1
    with pytest.raises(TaskLost, match="did not re-attach"):
        second.wait("orphan", timeout=0)
    assert second.get("adopted").status is TaskStatus.PENDING
    with pytest.raises(InvalidTransition, match="already ended"):
        second.reattach("orphan", "n1")


def test_a_second_process_cannot_open_the_same_file(reopen_sqlite, sqlite_url):
    reopen_sqlite()
    with pytest.raises(StoreLocked, match="open in another TaskJournal \\(pid"):
        TaskJournal(sqlite_url)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_the_file_is_private(reopen_sqlite, sqlite_url):
    reopen_sqlite()
    mode = stat.S_IMODE(os.stat(_path(sqlite_url)).st_mode)
    assert mode == 0o600


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"hello, this is a text file\n" * 10, "not an SQLite file"),
        (b"SQLite format 3\x00" + b"\xff" * 200, "damaged"),
    ],
)
def test_foreign_or_corrupt_files_are_refused_and_untouched(sqlite_url, content, message):
    path = _path(sqlite_url)
    with open(path, "wb") as handle:
        handle.write(content)
    with pytest.raises(StoreCorrupt, match=message):
        TaskJournal(sqlite_url)
    with open(path, "rb") as handle:
        assert handle.read() == content


def test_another_applications_database_is_refused(sqlite_url):
    path = _path(sqlite_url)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance REAL)")
    conn.execute("INSERT INTO accounts VALUES (1, 100.0)")
    conn.commit()
    conn.close()
    before = pathlib.Path(path).read_bytes()
    with pytest.raises(StoreCorrupt, match="another application"):
        TaskJournal(sqlite_url)
    assert pathlib.Path(path).read_bytes() == before


def test_a_truncated_journal_is_refused(reopen_sqlite, sqlite_url):
    journal = reopen_sqlite()
    for n in range(200):
        journal.register(f"t{n}", "n")
        journal.stream(f"t{n}").append(os.urandom(2_000))
    journal.close()
    path = _path(sqlite_url)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:
        handle.truncate(size // 3)
    truncated = pathlib.Path(path).read_bytes()
    with pytest.raises(StoreCorrupt):
        TaskJournal(sqlite_url)
    assert pathlib.Path(path).read_bytes() == truncated


def test_a_newer_schema_is_refused(reopen_sqlite, sqlite_url):
    reopen_sqlite().close()
    conn = sqlite3.connect(_path(sqlite_url))
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreCorrupt, match="schema 99, newer"):
        TaskJournal(sqlite_url)


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///", "sqlite://host/x.db", "sqlite:///x.db?synchronous=maybe",
            "sqlite:///x.db?color=red"],
)
def test_bad_sqlite_urls(url):
    with pytest.raises(InvalidArgument):
        TaskJournal(url)


def test_hostile_ids_stay_inside_the_database(reopen, durable_url, tmp_path):
    journal = reopen()
    hostile = [
        "../../escape", "/etc/passwd", "'); DROP TABLE tasks; --", "x" * 256, "\u202etxt.exe",
        # Redis key layout: hash-tag braces, and ids that spell other keys.
        "a}:streams", "{b}", "}:index:counts", "c:index:status",
    ]
    for task_id in hostile:
        journal.register(task_id, "n")
        journal.stream(task_id).append(task_id.encode())
        journal.complete(task_id, task_id)
    journal.close()
    if durable_url.startswith("sqlite"):
        assert sorted(os.listdir(tmp_path)) == ["journal.db", "journal.db.lock"]
    again = reopen()
    assert again.stats()["by_status"]["completed"] == len(hostile)
    for task_id in hostile:
        assert again.get(task_id).result == task_id
        assert again.get(task_id).streams["stdout"].render() == task_id.encode()
    with pytest.raises(InvalidArgument):
        again.register("a" * (1 << 20), "n")  # a 1 MB id is refused up front


def test_a_read_only_open_sees_a_live_journal(reopen_sqlite, sqlite_url):
    from journal.store import open_store

    journal = reopen_sqlite()
    journal.register("t", "n")
    journal.complete("t", {"ok": True})
    reader = open_store(sqlite_url, readonly=True)  # no lock: the owner stays open
    try:
        assert reader.get("t").row.status == "completed"
        assert reader.count_by_status() == {"completed": 1}
        with pytest.raises(StoreError, match="read-only"):
            reader.put_streams([("t", "stdout", b"")])
    finally:
        reader.close()


def test_finished_tasks_let_go_of_are_read_back_from_the_store(reopen):
    journal = reopen(memory_budget=0)
    journal.register("t", "n")
    journal.stream("t").append(b"output " * 100)
    journal.complete("t", [1, 2])
    journal.checkpoint()  # over budget: the finished task leaves memory
    assert journal.stats()["tasks_in_memory"] == 0
    record = journal.get("t")
    assert record.result == [1, 2] and record.streams["stdout"].total == 700
    assert journal.wait("t", timeout=0).status is TaskStatus.COMPLETED
    with pytest.raises(StreamSealed):
        journal.stream("t", "late")
    with pytest.raises(InvalidTransition):
        journal.fail("t", "late")
    from journal import DuplicateTask

    with pytest.raises(DuplicateTask):
        journal.register("t", "n")


def test_idle_running_streams_are_spilled_and_come_back(reopen):
    journal = reopen(memory_budget=10_000)
    handles = {}
    for n in range(5):
        journal.register(f"t{n}", "n")
        handles[n] = journal.stream(f"t{n}")
        handles[n].append(bytes([65 + n]) * 30_000)
    journal.checkpoint()
    assert journal.stats()["bytes_resident"] <= 10_000
    handles[0].append(b"still busy")
    journal.checkpoint()
    stats = journal.stats()
    assert stats["bytes_resident"] <= 10_000
    assert stats["bytes_spilled"] > 0
    assert stats["bytes_held"] == stats["bytes_resident"] + stats["bytes_spilled"]
    # Appends keep landing in spilled buffers; reads merge them back.
    handles[3].append(b"late line")
    view = journal.get("t3").streams["stdout"]
    assert view.total == 30_009 and view.tail.endswith(b"late line")
    assert view.head == b"D" * 20_000
    for n in range(5):
        journal.complete(f"t{n}", n)
    journal.close()
    again = reopen()
    assert again.get("t3").streams["stdout"].tail.endswith(b"late line")
    assert again.get("t0").streams["stdout"].tail.endswith(b"still busy")


def test_store_failures_are_reported_and_retried(reopen_sqlite):
    journal = reopen_sqlite()
    journal.register("t", "n")
    out = journal.stream("t")
    out.append(b"first")
    # A real SQLite "disk full": cap the file at the pages it has now.
    conn = journal._store._writer._conn
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count={pages}")
    out.append(os.urandom(30_000))  # needs new pages
    assert journal.checkpoint() == 0
    stats = journal.stats()
    assert stats["store_errors"] == 1 and "full" in stats["last_store_error"]
    out.append(b"appends keep working")
    big_meta = {"pad": "x" * 20_000}  # needs new pages too
    with pytest.raises(StoreError, match="full; the change was not made, retry it"):
        journal.register("u", "n", meta=big_meta)
    assert "u" not in {r.task_id for r in journal.in_flight()}  # nothing half-made
    conn.execute("PRAGMA max_page_count=1073741823")
    assert journal.checkpoint() == 1
    assert journal.stats()["bytes_checkpointed"] == journal.stats()["bytes_written"]
    journal.register("u", "n", meta=big_meta)


def test_highlights_survive_checkpoints_spills_and_restarts(reopen):
    journal = reopen(memory_budget=1_000, head_bytes=100, tail_bytes=100)
    journal.register("t", "n")
    out = journal.stream("t")
    out.append(b"boot\n" * 40 + b"Traceback (most recent call last):\n" + b"x\n" * 200)
    journal.checkpoint()  # over budget: the stream is spilled
    assert journal.stats()["bytes_resident"] <= 1_000
    out.append(b"panic: while spilled\n" + b"y\n" * 200)  # its spilled tail leaves the ring
    view = journal.get("t").streams["stdout"]
    assert [h.line for h in view.highlights] == [41, 242]
    assert [h.text for h in view.highlights] == [b"Traceback (most recent call last):", b"panic: while spilled"]
    journal.checkpoint()
    journal.close()
    again = reopen()
    assert again.get("t").streams["stdout"].highlights == view.highlights
    again.reattach("t", "n")
    again.stream("t").append(b"ERROR after the restart\n" + b"z\n" * 100)
    assert again.get("t").streams["stdout"].highlights[-1].text == b"ERROR after the restart"


@pytest.mark.parametrize("ending", ["close", "abandon"])
def test_closing_under_concurrent_writes_leaves_no_writer_waiting(reopen, ending):
    journal = reopen()
    outcomes = []
    acknowledged = []

    def register_many(thread):
        for n in range(10_000):
            try:
                journal.register(f"t{thread}-{n}", "n")
            except JournalError as exc:  # JournalClosed, or StoreError from the closed store
                outcomes.append(type(exc).__name__)
                return
            acknowledged.append(f"t{thread}-{n}")
        outcomes.append("finished")

    threads = [threading.Thread(target=register_many, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    getattr(journal, ending)()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads), "a writer was left waiting"
    assert len(outcomes) == 8
    again = reopen()
    # Whatever a writer was told was committed is there.
    assert acknowledged
    for task_id in acknowledged:
        assert again.get(task_id).status is TaskStatus.PENDING


def test_a_store_closed_mid_write_fails_the_writes_it_never_committed(sqlite_url):
    """Writers that queue while close() holds the store used to wait forever."""
    from journal.store import TaskRow, open_store

    for attempt in range(30):
        store = open_store(sqlite_url)
        results = []

        def write(thread, store=store, results=results):
            for n in range(10_000):
                row = TaskRow(f"a{attempt}-{thread}-{n}", "n", "pending", None, None, None,
                              1.0, 1.0, None, None)
                try:
                    store.put_task(row, new=True)
                except StoreError:
                    results.append("refused")
                    return
            results.append("finished")

        threads = [threading.Thread(target=write, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(0.002 * (attempt % 5))
        store.close()
        for thread in threads:
            thread.join(timeout=10)
        assert not any(thread.is_alive() for thread in threads), f"attempt {attempt}: a writer hangs"
        assert len(results) == 8
