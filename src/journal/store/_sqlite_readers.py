"""A bounded pool of SQLite read connections, shared by every thread.

One connection per calling thread (a ``threading.local``) makes memory grow
with the threads a hub happens to run: each connection keeps a page cache of
its own (up to 2 MB by default), so 2,000 node threads cost gigabytes, and
only the closing thread's connection was ever closed.  The pool holds at
most ``size`` connections, each with a small cache; a reader borrows one for
one query and gives it back.  WAL readers do not block each other, so a few
connections serve any number of threads.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["ReaderPool"]

#: Pages of cache per read connection (negative: KiB), against SQLite's 2 MB.
READER_CACHE_KIB = 512


class ReaderPool:
    def __init__(self, connect: Callable[[], sqlite3.Connection], size: int) -> None:
        self._connect = connect
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._closed = False

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """A read connection for this thread alone until the block ends."""
        with self._slots:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = self._connect()
                conn.execute(f"PRAGMA cache_size=-{READER_CACHE_KIB}")
            try:
                yield conn
            finally:
                with self._lock:
                    if self._closed:
                        conn.close()
                    else:
                        self._idle.append(conn)

    def close(self) -> None:
        """Close every idle connection; those lent out close on return."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
