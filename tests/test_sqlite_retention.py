"""The SQLite file stays as large as what is retained.

Expired results free their pages to SQLite's freelist and the next rows take
those pages first, so a hub that finishes tasks at a steady rate has a file
that stops growing after one retention period.
"""

from __future__ import annotations

import sqlite3

OUT = bytes(range(250)) * 160  # 40,000 bytes a task: all of it held


def _pages(path):
    conn = sqlite3.connect(path)
    try:
        return (conn.execute("PRAGMA page_count").fetchone()[0],
                conn.execute("PRAGMA freelist_count").fetchone()[0])
    finally:
        conn.close()


def _run_period(journal, period, tasks=150):
    for n in range(tasks):
        task_id = f"p{period}-t{n}"
        journal.register(task_id, "node")
        journal.stream(task_id).append(OUT)
        journal.complete(task_id, {"n": n})


def test_expired_results_free_pages_that_later_tasks_reuse(reopen_sqlite, sqlite_url, clock):
    path = sqlite_url[len("sqlite:///"):]
    journal = reopen_sqlite(result_ttl=60, checkpoint_interval=3600)
    _run_period(journal, 0)
    journal.checkpoint()
    first, _ = _pages(path)
    for period in range(1, 4):
        clock.advance(61)
        assert journal.sweep()["expired"] == 150
        _, free = _pages(path)
        assert free > 0.5 * first, ("expired rows freed too few pages", free, first)
        _run_period(journal, period)
        journal.checkpoint()
    last, _ = _pages(path)
    # Three more retention periods of the same work: the file did not grow
    # with them (a few pages of slack for the tombstones and indexes).
    assert last <= first * 1.15, (first, last)
    assert journal.get("p3-t149").streams["stdout"].render() == OUT
