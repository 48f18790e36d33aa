"""SQLite reads share a few connections, however many threads read.

Each SQLite connection keeps a page cache of its own: one per thread made a
hub with 2,000 node threads spend gigabytes on caches, and left every
thread's connection open after close().
"""

from __future__ import annotations

import sqlite3
import threading

import pytest

from journal.errors import JournalError


def test_many_reading_threads_share_a_bounded_pool(reopen_sqlite):
    journal = reopen_sqlite()
    journal.register("t", "node")
    journal.stream("t").append(b"out\n")
    journal.complete("t", {"ok": True})
    pool = journal._table.store._readers
    made = []
    real = pool._connect

    def counting():
        conn = real()
        made.append(conn)
        return conn

    pool._connect = counting
    start = threading.Barrier(64)
    errors = []

    def read():
        try:
            start.wait()
            for _ in range(20):
                assert journal.get("t").result == {"ok": True}
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    assert 1 <= len(made) <= 4
    journal.close()
    # close() closed every pooled connection, not only the closing thread's.
    for conn in made:
        with pytest.raises(sqlite3.ProgrammingError):
            conn.execute("SELECT 1")
    with pytest.raises(JournalError):
        journal.get("t")
