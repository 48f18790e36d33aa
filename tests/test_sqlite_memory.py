"""What SQLite itself holds stays small, however many snapshots went through.

SQLite keeps a statement's bound values until they are bound again, and
Python's sqlite3 caches up to 128 statements a connection without clearing
them.  A multi-row statement of n stream snapshots kept n copies of 40 KB:
with batches of every size from 1 to 64, the writer held 2,080 snapshots,
80 MB, and a simulated 2,000-node hub's SQLite memory grew from 40 to 67 MB
as its batches took new sizes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sqlite3

import pytest


def _sqlite_library():
    """The SQLite library sqlite3 runs on, where it is a shared library."""
    name = ctypes.util.find_library("sqlite3")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        lib.sqlite3_memory_used.restype = ctypes.c_int64
        lib.sqlite3_libversion.restype = ctypes.c_char_p
    except (OSError, AttributeError):
        return None
    if lib.sqlite3_libversion().decode() != sqlite3.sqlite_version:
        return None  # another copy than the one sqlite3 links (a bundled one)
    return lib


LIB = _sqlite_library()


@pytest.mark.skipif(LIB is None, reason="sqlite3's SQLite is not a shared library found here")
def test_batches_of_every_size_leave_no_snapshots_in_sqlite(reopen_sqlite, buffer_cls):
    journal = reopen_sqlite()
    store = journal._table.store
    buf = buffer_cls(20_000, 20_000)
    buf.append(bytes(range(256)) * 200)  # 51,200 bytes: a full head and tail
    snapshot = buf.snapshot()
    ids = [f"t{n}" for n in range(64)]
    for task_id in ids:
        journal.register(task_id, "node")
    # Warm up with empty streams: the statements' own memory (their
    # programs) is not the point.
    empty = buffer_cls(20_000, 20_000).snapshot()
    for size in range(1, 65):
        store.put_streams([(task_id, "stdout", empty) for task_id in ids[:size]])
    before = LIB.sqlite3_memory_used()
    for size in range(1, 65):
        store.put_streams([(task_id, "stdout", snapshot) for task_id in ids[:size]])
    held = LIB.sqlite3_memory_used() - before
    # 2,080 snapshots went through; what stays is a few pages' worth.
    assert held < 8 * len(snapshot) + 4_000_000, held
    assert store.get_stream("t63", "stdout") == snapshot
    journal.close()
