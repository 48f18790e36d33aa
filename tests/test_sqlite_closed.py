"""SQLite: every call on a closed store says it is closed."""

from __future__ import annotations

import pytest

from journal import JournalConfig, TaskJournal
from journal.errors import JournalError, StoreError
from journal.store import TaskRow, open_store

_ROW = TaskRow("t", "n", "pending", None, None, None, 1.0, 1.0, None, None)

CALLS = {
    "load_in_flight": lambda s: s.load_in_flight(),
    "get": lambda s: s.get("t"),
    "get_stream": lambda s: s.get_stream("t", "out"),
    "tombstoned": lambda s: s.tombstoned("t"),
    "count_by_status": lambda s: s.count_by_status(),
    "list_tasks": lambda s: s.list_tasks(),
    "put_task": lambda s: s.put_task(_ROW, new=True),
    "put_streams": lambda s: s.put_streams([("t", "out", b"x" * 64)]),
    "expire_finished": lambda s: s.expire_finished(0.0, 1.0),
    "forget_tombstones": lambda s: s.forget_tombstones(0.0),
    "check": lambda s: s.check(),
    "repair": lambda s: s.repair(),
}


@pytest.mark.parametrize("readonly", [False, True])
@pytest.mark.parametrize("call", sorted(CALLS))
def test_every_call_on_a_closed_store_raises_store_error(sqlite_url, call, readonly):
    open_store(sqlite_url).close()
    store = open_store(sqlite_url, readonly=readonly)
    store.get("t")  # this thread has a read connection to close
    store.close()
    with pytest.raises(StoreError, match="closed"):
        CALLS[call](store)
    store.close()  # idempotent


def test_a_closed_journal_on_sqlite_never_raises_attribute_error(sqlite_url, buffer_cls):
    """Whether the journal answers a call after close() is its own business;
    whatever reaches the closed store gets a JournalError."""
    journal = TaskJournal(sqlite_url, config=JournalConfig(sweep_interval=0), buffer_class=buffer_cls)
    journal.register("t", "n")
    journal.close()
    for call in (journal.list_tasks, journal.stats, journal.sweep, lambda: journal.get("t")):
        try:
            call()
        except JournalError:
            pass
