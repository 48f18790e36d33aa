"""SQLite files in bad shape: a first open killed half way, a directory the
WAL files cannot be made in, flipped bytes, a missing schema version and
rows no journal wrote."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from journal import JournalConfig, TaskJournal
from journal.errors import JournalError, StoreCorrupt, StoreError
from journal.store import TaskRow, open_store

APPLICATION_ID = 0x544A524E


def _path(url):
    return url[len("sqlite:///"):]


def _row(task_id, status="pending", finished_at=None):
    return TaskRow(task_id, "n", status, '{"k": 1}', None, None, 1.0, 1.0, finished_at, None)


# -- (a) a first open killed between journal_mode=WAL and the schema --------

_KILLED_FIRST_OPEN = textwrap.dedent("""
    import os, signal, sqlite3, sys
    real_connect = sqlite3.connect

    def connect(*args, **kwargs):
        conn = real_connect(*args, **kwargs)
        seen = []

        def trace(sql):
            # The statement after journal_mode=WAL: the schema has not committed.
            if seen and "journal_mode" in seen[-1].lower() and "wal" in seen[-1].lower():
                os.kill(os.getpid(), signal.SIGKILL)
            seen.append(sql)

        conn.set_trace_callback(trace)
        return conn

    sqlite3.connect = connect
    from journal.store import open_store
    open_store(sys.argv[1])
    print("opened without being killed")
""")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_first_open_killed_before_the_schema_committed_opens_next_time(sqlite_url, buffer_cls):
    child = subprocess.run([sys.executable, "-c", _KILLED_FIRST_OPEN, sqlite_url],
                           capture_output=True, timeout=60)
    assert child.returncode == -signal.SIGKILL, child
    path = _path(sqlite_url)
    conn = sqlite3.connect(path)  # what the kill left: a WAL-mode file holding nothing
    assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
    conn.close()
    journal = TaskJournal(sqlite_url, config=JournalConfig(sweep_interval=0), buffer_class=buffer_cls)
    try:
        journal.register("t", "n")
    finally:
        journal.close()
    again = TaskJournal(sqlite_url, config=JournalConfig(sweep_interval=0), buffer_class=buffer_cls)
    assert again.get("t").task_id == "t"
    again.close()


def test_an_empty_sqlite_file_with_our_id_and_no_version_is_initialised(sqlite_url):
    conn = sqlite3.connect(_path(sqlite_url))
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.close()
    store = open_store(sqlite_url)
    store.put_task(_row("t"), new=True)
    store.close()


def test_our_id_with_tables_but_no_version_is_refused_clearly(sqlite_url):
    conn = sqlite3.connect(_path(sqlite_url))
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.execute("CREATE TABLE something (x)")
    conn.commit()
    conn.close()
    before = open(_path(sqlite_url), "rb").read()
    for readonly in (False, True):
        with pytest.raises(StoreCorrupt, match="schema version"):
            open_store(sqlite_url, readonly=readonly)
    assert open(_path(sqlite_url), "rb").read() == before


# -- (b) a directory where -wal and -shm cannot be created ------------------

@pytest.fixture
def read_only_directory(tmp_path):
    """A directory nothing can be created in, even by root: mode 0555, and
    immutable (chattr +i) when the tests run as root."""
    directory = tmp_path / "ro"
    directory.mkdir()
    made = []

    def seal():
        os.chmod(directory, 0o555)
        made.append("chmod")
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            if shutil.which("chattr") is None or subprocess.run(
                ["chattr", "+i", str(directory)], capture_output=True
            ).returncode:
                pytest.skip("running as root without chattr +i: no way to refuse a file creation")
            made.append("chattr")

    yield directory, seal
    if "chattr" in made:
        subprocess.run(["chattr", "-i", str(directory)], check=True)
    os.chmod(directory, 0o755)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX directory modes")
def test_a_directory_without_room_for_the_wal_files_is_not_called_damage(read_only_directory):
    directory, seal = read_only_directory
    url = f"sqlite:///{directory / 'journal.db'}"
    store = open_store(url)
    store.put_task(_row("t"), new=True)
    store.close()
    assert sorted(os.listdir(directory)) == ["journal.db", "journal.db.lock"]
    seal()
    for readonly in (False, True):
        with pytest.raises(StoreError) as caught:
            open_store(url, readonly=readonly)
        assert not isinstance(caught.value, StoreCorrupt)
        assert "damaged" not in str(caught.value)
        assert "-wal" in str(caught.value)


# -- (c) flipped bytes ------------------------------------------------------

def _calls(store):
    yield "load_in_flight", lambda: store.load_in_flight()
    yield "list_tasks", lambda: store.list_tasks()
    yield "count_by_status", lambda: store.count_by_status()
    for n in range(6):
        yield "get", lambda n=n: store.get(f"task-{n}")
        yield "get_stream", lambda n=n: store.get_stream(f"task-{n}", "stdout")
    yield "tombstoned", lambda: store.tombstoned("task-0")
    yield "check", lambda: store.check()
    if not store.readonly:
        yield "put_task", lambda: store.put_task(_row("new"), new=True)
        yield "put_streams", lambda: store.put_streams([("task-1", "stdout", _SNAPSHOT)])
        yield "expire_finished", lambda: store.expire_finished(1e12, 2e12)
        yield "forget_tombstones", lambda: store.forget_tombstones(1e12)
        yield "repair", lambda: store.repair()


_SNAPSHOT = b""


def test_flipped_bytes_anywhere_raise_store_corrupt_or_nothing(tmp_path, buffer_cls):
    global _SNAPSHOT
    good = tmp_path / "good.db"
    config = JournalConfig(sweep_interval=0, checkpoint_interval=3600, head_bytes=3000, tail_bytes=3000)
    journal = TaskJournal(f"sqlite:///{good}", config=config, buffer_class=buffer_cls)
    for n in range(6):
        journal.register(f"task-{n}", "n", meta={"n": n})
        journal.start(f"task-{n}")
        journal.stream(f"task-{n}").append(b"line %d\n" % n * 400)
        if n % 2:
            journal.complete(f"task-{n}", {"n": n})
    journal.checkpoint()
    buf = buffer_cls(10, 10)
    buf.append(b"z" * 10_000)
    _SNAPSHOT = buf.snapshot()
    journal.close()
    data = good.read_bytes()
    # Every byte of the header, then bytes all through the pages.
    offsets = sorted(set(range(0, 100)) | set(range(100, len(data), 131)))
    kinds = {}
    for offset in offsets:
        directory = tmp_path / f"flip-{offset}"
        directory.mkdir()
        target = directory / "j.db"
        flipped = bytearray(data)
        flipped[offset] ^= 0xFF
        target.write_bytes(bytes(flipped))
        url = f"sqlite:///{target}"
        for readonly in (True, False):
            try:
                store = open_store(url, readonly=readonly)
            except StoreError as exc:
                kinds[type(exc).__name__] = kinds.get(type(exc).__name__, 0) + 1
                continue
            try:
                for name, call in _calls(store):
                    try:
                        call()
                    except StoreError as exc:
                        kinds[type(exc).__name__] = kinds.get(type(exc).__name__, 0) + 1
                        if not isinstance(exc, StoreCorrupt):
                            # Only a write of ours may fail another way
                            # (the test's own duplicate registration).
                            assert name == "put_task", (offset, name, exc)
                    except Exception as exc:  # noqa: BLE001 - the point of the test
                        pytest.fail(f"byte {offset} flipped: {name}() raised {exc!r}")
            finally:
                store.close()
        shutil.rmtree(directory)
    assert kinds.get("StoreCorrupt", 0) > 0, kinds


def test_a_journal_on_a_flipped_file_opens_or_says_store_corrupt(tmp_path, buffer_cls):
    good = tmp_path / "good.db"
    config = JournalConfig(sweep_interval=0, checkpoint_interval=3600)
    journal = TaskJournal(f"sqlite:///{good}", config=config, buffer_class=buffer_cls)
    for n in range(4):
        journal.register(f"task-{n}", "n")
        journal.stream(f"task-{n}").append(b"x" * 500)
    journal.close()
    data = good.read_bytes()
    for offset in range(0, len(data), 211):
        target = tmp_path / f"flip-{offset}.db"
        flipped = bytearray(data)
        flipped[offset] ^= 0x5A
        target.write_bytes(bytes(flipped))
        try:
            TaskJournal(f"sqlite:///{target}", config=config, buffer_class=buffer_cls).close()
        except StoreError as exc:
            assert isinstance(exc, StoreCorrupt), (offset, exc)
        except JournalError:
            pass  # the journal's own word on what it read back (CorruptSnapshot, say)
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"byte {offset} flipped: TaskJournal() raised {exc!r}")


# -- (e) rows no journal wrote ----------------------------------------------

def _plant_hostile_rows(path, snapshot):
    conn = sqlite3.connect(path, isolation_level=None)
    cols = "task_id, node_id, status, meta_json, result, error, created_at, updated_at, finished_at, deadline"
    rows = [
        ("bogus-status", "n", "exploded", None, None, None, 1.0, 1.0, None, None),
        (b"\x00blob-id", "n", "pending", None, None, None, 1.0, 1.0, None, None),
        ("blob-node", b"\x01\x02", "pending", None, None, None, 1.0, 1.0, None, None),
        ("bad-json", "n", "pending", "{not json", None, None, 1.0, 1.0, None, None),
        ("text-time", "n", "pending", None, None, None, "yesterday", 1.0, None, None),
    ]
    conn.executemany(f"INSERT INTO tasks ({cols}) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
    conn.execute(f"INSERT INTO tasks ({cols}) VALUES (CAST(x'ff41' AS TEXT),'n','pending',"
                 "NULL,NULL,NULL,1.0,1.0,NULL,NULL)")
    conn.execute("INSERT INTO streams (task_id, name, snapshot) VALUES ('good-running', 'bad', ?)",
                 (b"TJHB garbage",))
    conn.execute("INSERT INTO streams (task_id, name, snapshot) VALUES ('good-running', 'text', ?)",
                 ("not a blob",))
    conn.close()
    return ["bogus-status", "blob-id", "blob-node", "bad-json", "text-time"]


def test_hostile_rows_are_skipped_named_and_repaired(sqlite_url, buffer_cls):
    config = JournalConfig(sweep_interval=0, checkpoint_interval=3600)
    journal = TaskJournal(sqlite_url, config=config, buffer_class=buffer_cls)
    journal.register("good-running", "n", meta={"a": 1})
    journal.start("good-running")
    journal.stream("good-running").append(b"kept\n")
    journal.register("good-done", "n")
    journal.complete("good-done", {"ok": True})
    journal.close()
    names = _plant_hostile_rows(_path(sqlite_url), None)

    # A journal opens over them.
    journal = TaskJournal(sqlite_url, config=config, buffer_class=buffer_cls)
    journal.close()

    store = open_store(sqlite_url)
    try:
        assert sorted(r.task_id for r in store.list_tasks()) == ["good-done", "good-running"]
        assert [r.task_id for r in store.list_tasks(limit=1)] in (["good-done"], ["good-running"])
        counts = store.count_by_status()
        # SQLite cannot tell text that is not UTF-8 in SQL: that one row may
        # be counted under its (valid) status; every other hostile row is not.
        assert counts in ({"running": 1, "completed": 1},
                          {"running": 1, "completed": 1, "pending": 1}), counts
        in_flight = store.load_in_flight()
        assert [t.row.task_id for t in in_flight] == ["good-running"]
        assert set(in_flight[0].streams) <= {"stdout", "bad"}
        for task_id in ("bogus-status", "blob-node", "bad-json", "text-time"):
            with pytest.raises(StoreCorrupt, match=task_id):
                store.get(task_id)
        assert store.get("good-running").row.status == "running"
        problems = store.check()
        text = "\n".join(problems)
        for name in names:
            assert name in text, (name, problems)
        assert "'bad'" in text and "'text'" in text, problems
        assert len(problems) == len(names) + 3, problems  # and the invalid UTF-8 id
        store.repair()
        assert store.check() == []
        assert sorted(r.task_id for r in store.list_tasks()) == ["good-done", "good-running"]
        assert set(store.get("good-running").streams) == {"stdout"}
    finally:
        store.close()
    journal = TaskJournal(sqlite_url, config=config, buffer_class=buffer_cls)
    try:
        view = journal.get("good-running").streams["stdout"]
        assert view.head + view.tail == b"kept\n"
    finally:
        journal.close()
