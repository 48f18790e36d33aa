"""Durability costs: SQLite against memory, registrations, recovery.

Streaming: 16 threads append 1 KB chunks to 100 tasks while the background
checkpointer writes changed streams every 0.1 s.  Registrations: each one is
durable (committed) before register() returns, side by side with ``plain``,
what a hub team would write in an afternoon: one sqlite3 connection per
thread, BEGIN IMMEDIATE / INSERT / COMMIT per call, on the same schema and
settings (WAL, the same ``synchronous``).  Recovery: opening a store of
100,000 tasks of which 10,000 are in flight.  Checkpoint pass: one pass
with 100,000 tasks held and 100 streaming, beside a bare walk over them.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import threading
import time

import pytest

from conftest import buffer_class, run_in_threads, stream_1k_appends

from journal import JournalConfig, TaskJournal
from journal.store import sqlite as sqlite_store


def _url(kind, directory, synchronous="full"):
    if kind == "memory":
        return "memory://"
    return f"sqlite:///{directory}/journal.db?synchronous={synchronous}"


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_streaming(benchmark, per_op, kind, tmp_path):
    benchmark.group = "streaming 1 KB appends, 16 threads, 100 tasks, checkpoint every 0.1 s"
    config = JournalConfig(checkpoint_interval=0.1, sweep_interval=0)
    journal = TaskJournal(_url(kind, tmp_path), config=config, buffer_class=buffer_class("c"))
    stream_1k_appends(benchmark, per_op, [journal], appends=4_000_000, rounds=5)
    journal.close()


#: The small meta a hub sends with a registration.
META = {"argv": ["python", "-m", "pytest", "-q"], "cwd": "/srv/build", "attempt": 1}


class PlainSQLite:
    """The hand-written baseline: a connection per thread, one commit per call."""

    def __init__(self, path: str, synchronous: str) -> None:
        self.path = path
        self.synchronous = synchronous
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        for statement in sqlite_store._SCHEMA:
            conn.execute(statement)
        conn.close()
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []

    def register(self, task_id: str, node_id: str, meta: dict) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            self._opened.append(conn)
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(sqlite_store._INSERT_TASK,
                     (task_id, node_id, "pending", json.dumps(meta), None, None, now, now, None, None))
        conn.execute("COMMIT")

    def close(self) -> None:
        for conn in self._opened:
            conn.close()


def open_registrar(impl: str, synchronous: str):
    """A fresh store of ``impl`` in a directory of its own."""
    directory = tempfile.mkdtemp(dir=os.environ.get("BENCH_TMP"))
    if impl == "plain":
        return PlainSQLite(f"{directory}/plain.db", synchronous)
    return TaskJournal(_url("sqlite", directory, synchronous), config=JournalConfig(sweep_interval=0))


@pytest.mark.parametrize("threads", [1, 16])
@pytest.mark.parametrize("synchronous", ["full", "normal"])
@pytest.mark.parametrize("impl", ["taskjournal", "plain"])
def test_durable_registrations(benchmark, per_op, impl, synchronous, threads):
    benchmark.group = f"durable registrations, {synchronous}, {threads} thread(s)"
    total = 4_000 if synchronous == "normal" else 1_600
    per_thread = total // threads
    opened = []

    def setup():
        for old in opened:
            old.close()
        registrar = open_registrar(impl, synchronous)
        opened[:] = [registrar]
        slices = [[f"t{t}-{n}" for n in range(per_thread)] for t in range(threads)]

        def work(ids):
            for task_id in ids:
                registrar.register(task_id, "node", META)

        return (work, slices), {}

    per_op(per_thread * threads)
    benchmark.pedantic(run_in_threads, setup=setup, rounds=3, iterations=1)
    opened[0].close()


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    """100,000 tasks, 10,000 of them in flight with a 2 KB stdout checkpoint each."""
    directory = tmp_path_factory.mktemp("recovery")
    url = f"sqlite:///{directory}/journal.db"
    TaskJournal(url, config=JournalConfig(sweep_interval=0)).close()  # creates the schema
    cls = buffer_class("c")
    snapshot_buf = cls(20_000, 20_000)
    snapshot_buf.append(os.urandom(2_048))
    snapshot = snapshot_buf.snapshot()
    rows, streams = [], []
    for n in range(100_000):
        in_flight = n % 10 == 0
        rows.append((f"task-{n}", f"node-{n % 100}", "running" if in_flight else "completed",
                     None, None if in_flight else '{"exit_code":0}', None, 1.0, 2.0,
                     None if in_flight else 2.0, None))
        if in_flight:
            streams.append((f"task-{n}", "stdout", snapshot, snapshot_buf.total))
    conn = sqlite3.connect(f"{directory}/journal.db")
    with conn:
        conn.executemany(sqlite_store._INSERT_TASK, rows)
        conn.executemany(sqlite_store._UPSERT_STREAM, streams)
    conn.close()
    return url


def test_recovery(benchmark, per_op, big_store):
    benchmark.group = "recovery of 100,000 tasks, 10,000 in flight"
    opened = []

    def setup():
        for journal in opened:
            journal.close()
        opened.clear()
        return (), {}

    def recover():
        journal = TaskJournal(big_store, config=JournalConfig(sweep_interval=0))
        opened.append(journal)
        assert journal.recovered == 10_000

    per_op(1)
    benchmark.pedantic(recover, setup=setup, rounds=5, iterations=1)
    for journal in opened:
        journal.close()


@pytest.fixture(scope="module")
def crowded_journal(tmp_path_factory):
    """100,000 tasks held, 100 of them streaming: a hub whose nodes have
    queued most of what they were sent and run a few."""
    directory = tmp_path_factory.mktemp("crowded")
    journal = TaskJournal(_url("sqlite", directory, "normal"),
                          # The bench calls checkpoint() itself: no background pass between.
                          config=JournalConfig(sweep_interval=0, checkpoint_interval=3600))
    for n in range(100_000):
        journal.register(f"t{n}", f"node-{n % 100}", META)
    handles = [journal.stream(f"t{n}") for n in range(0, 100_000, 1_000)]
    yield journal, handles
    journal.close()


@pytest.mark.parametrize("impl", ["taskjournal", "walk"])
def test_checkpoint_pass(benchmark, per_op, crowded_journal, impl):
    """One checkpoint pass (``checkpoint()``: changed streams written, the
    memory budget checked), beside ``walk``: a loop that only looks at each
    held task once, the least any pass over all of them costs."""
    benchmark.group = "checkpoint pass, 100,000 tasks held, 100 streaming"
    journal, handles = crowded_journal
    line = b"x" * 100 + b"\n"

    def setup():
        for handle in handles:
            handle.append(line)  # something to write, every round
        return (), {}

    def walk():
        for task in list(journal._table.tasks.values()):
            task.streams

    per_op(1)
    benchmark.pedantic(journal.checkpoint if impl == "taskjournal" else walk, setup=setup,
                       rounds=5, iterations=1)
