"""sqlite:///path/to/journal.db: the embedded default store.

What is safe when:

* Every write goes through one connection that commits in groups: calls
  made at the same time share one transaction, and none returns before the
  commit that holds its change.  With the default ``synchronous=full`` a
  commit is fsynced, so it survives a power cut; ``?synchronous=normal``
  survives a crash or SIGKILL of the hub but not of the machine, for about
  ten times the commit rate.  A write that cannot be stored (a lone
  surrogate in a str, say) fails alone with InvalidArgument, rolled back;
  the writes committed with it, and the next ones, are not affected.
* A stream's stored snapshot only moves forward: a snapshot is written only
  if its stream total is at least the stored one, checked by the same
  statement, so a checkpoint taken before ``complete()`` (or before a spill)
  and committed after it is skipped, not written over the newer state.  A
  new registration drops any stream rows left under its id.
* The file runs in WAL mode and is owned by one TaskJournal at a time.  The
  owner holds ``flock`` on ``<real path>.lock`` (symlinks resolved, so every
  name that reaches the file through a symlink meets the same lock; the
  file also says which pid holds it), and on Linux ``flock`` on the
  database file itself, which is what catches a second name made by a hard
  link.  Linux keeps flock locks apart from the POSIX (fcntl) locks SQLite
  takes on the same file.  The BSDs and macOS do not, so there the database
  file is not flocked and a hard link to a held journal is not detected.
  On NFS, Linux emulates flock with POSIX locks on the whole file, which
  would block SQLite's own locks in other processes; but WAL mode needs
  every process on one host anyway: a journal on a network filesystem is
  not supported.  On Windows the lock is an msvcrt lock on the lock file.
  Read-only opens (``readonly=True``, for inspection) take no lock.
* The lock file is opened without following a symlink, and only a regular
  file with one link is used: a planted symlink or hard link is refused
  with StoreError and its target never written.
* Every file the journal creates or opens for writing is private (0600): a
  new database is created so, and an existing one and its -wal and -shm
  (SQLite gives those the database's mode) are made so at every writable
  open.
* After ``os.fork()`` the child's copy of the store refuses every call with
  StoreError: SQLite connections must not cross a fork, and two processes
  writing one journal overwrite each other.  The parent keeps its
  connection and its locks; the child closes its copies of the lock files
  at once, so a child that outlives its parent never keeps the journal
  locked.
* A file that is not ours (not SQLite, another application's SQLite, a newer
  schema) is refused with StoreCorrupt and never written to.  An SQLite file
  that holds nothing (no tables, no schema version: what a first open killed
  half way leaves) is initialised.  Damage SQLite detects raises
  StoreCorrupt from every call; rows no journal wrote are skipped by
  ``list_tasks``, ``count_by_status`` and ``load_in_flight``, raise
  StoreCorrupt from ``get``, are named by ``check`` and removed by
  ``repair``.  A directory where the -wal and -shm files cannot be created
  gives a StoreError that says so: the file is not damaged.
* A schema 1 file is migrated at its first writable open; read-only opens
  read it as it is.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sqlite3
import stat
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Optional, TypeVar, Union
from urllib.parse import parse_qsl, urlsplit

from journal._buffer_shared import decode_snapshot, snapshot_total
from journal.errors import (
    CorruptSnapshot,
    DuplicateTask,
    InvalidArgument,
    StoreCorrupt,
    StoreError,
    StoreLocked,
)
from journal.lifecycle import TaskStatus
from journal.store._batching import AsyncJob, Batcher, Job
from journal.store._sqlite_readers import ReaderPool
from journal.store.base import Snapshotable, StoredTask, TaskRow, row_problem

__all__ = ["SQLiteStore"]

SCHEMA_VERSION = 2
APPLICATION_ID = 0x544A524E  # "TJRN" in the file header: this file is ours
_SQLITE_MAGIC = b"SQLite format 3\x00"

# A registration starts its task's streams afresh: rows a crash left under
# the id must not shadow the new task's (smaller) totals.
_CLEAR_STREAMS = """CREATE TRIGGER tasks_clear_streams AFTER INSERT ON tasks BEGIN
        DELETE FROM streams WHERE task_id = NEW.task_id;
    END"""

# The schema, once, at SCHEMA_VERSION.  _MIGRATIONS holds, under each older
# version, the statements that upgrade it to the next.
_SCHEMA = (
    """CREATE TABLE tasks (
        task_id     TEXT PRIMARY KEY,
        node_id     TEXT NOT NULL,
        status      TEXT NOT NULL,
        meta_json   TEXT,
        result      BLOB,            -- JSON text, or raw bytes for a bytes result
        error       TEXT,
        created_at  REAL NOT NULL,
        updated_at  REAL NOT NULL,
        finished_at REAL,            -- NULL while in flight
        deadline    REAL
    )""",
    "CREATE INDEX tasks_in_flight ON tasks(created_at) WHERE finished_at IS NULL",
    "CREATE INDEX tasks_finished ON tasks(finished_at) WHERE finished_at IS NOT NULL",
    """CREATE TABLE streams (
        task_id  TEXT NOT NULL,
        name     TEXT NOT NULL,
        snapshot BLOB NOT NULL,      -- HeadTailBuffer.snapshot()
        total    INTEGER NOT NULL DEFAULT 0,  -- the snapshot's stream total
        PRIMARY KEY (task_id, name)
    )""",
    """CREATE TABLE tombstones (
        task_id TEXT PRIMARY KEY,
        until   REAL NOT NULL        -- when "expired" may become "unknown"
    )""",
    # An id registered again is no longer "expired".
    """CREATE TRIGGER tasks_clear_tombstone AFTER INSERT ON tasks BEGIN
        DELETE FROM tombstones WHERE task_id = NEW.task_id;
    END""",
    _CLEAR_STREAMS,
)
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "ALTER TABLE streams ADD COLUMN total INTEGER NOT NULL DEFAULT 0",
        "UPDATE streams SET total = journal_snapshot_total(snapshot)",
        _CLEAR_STREAMS,
    ),
}

# The columns of each table, as a sound file of this version has them.
_TABLES = {
    "tasks": ["task_id", "node_id", "status", "meta_json", "result", "error", "created_at",
              "updated_at", "finished_at", "deadline"],
    "streams": ["task_id", "name", "snapshot", "total"],
    "tombstones": ["task_id", "until"],
}

_COLUMNS = "task_id, node_id, status, meta_json, result, error, created_at, updated_at, finished_at, deadline"
# Stream rows whose task row is gone.
_ORPHANS = "FROM streams WHERE task_id NOT IN (SELECT task_id FROM tasks)"
_INSERT_TASK = f"INSERT INTO tasks ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)"
# An upsert, not INSERT OR REPLACE: a replace is a delete and an insert, and
# would fire the registration triggers for every update of a task.
_UPSERT_TASK = _INSERT_TASK + " ON CONFLICT(task_id) DO UPDATE SET " + ", ".join(
    f"{column} = excluded.{column}" for column in _COLUMNS.split(", ")[1:]
)
# Forward only, decided in the statement itself (so inside the transaction):
# an older snapshot leaves the stored one as it is.
_UPSERT_STREAM = (
    "INSERT INTO streams (task_id, name, snapshot, total) VALUES (?,?,?,?) "
    "ON CONFLICT(task_id, name) DO UPDATE SET snapshot = excluded.snapshot, "
    "total = excluded.total WHERE excluded.total >= streams.total"
)

def _in(values: Iterable[str]) -> str:
    return "(" + ", ".join(f"'{value}'" for value in values) + ")"


_NUMBER = "('integer', 'real')"
# row_problem() in SQL, for counting without reading every row into Python;
# test_sqlite_files checks the two agree on hostile rows.
_SOUND = " AND ".join((
    "typeof(task_id) = 'text' AND task_id != ''",
    "typeof(node_id) = 'text' AND node_id != ''",
    f"status IN {_in(s.value for s in TaskStatus)}",
    f"(finished_at IS NULL) = (status IN {_in(s.value for s in TaskStatus if not s.terminal)})",
    "typeof(meta_json) IN ('null', 'text') AND typeof(error) IN ('null', 'text')",
    "typeof(result) IN ('null', 'text', 'blob')",
    f"typeof(created_at) IN {_NUMBER} AND typeof(updated_at) IN {_NUMBER}",
    f"typeof(finished_at) IN ('null', 'integer', 'real') AND typeof(deadline) IN ('null', 'integer', 'real')",
    "(meta_json IS NULL OR json_valid(meta_json))",
    "(typeof(result) != 'text' OR json_valid(result))",
))

# SQLite's primary result codes this module tells apart.
_ERROR, _CORRUPT, _CANTOPEN, _NOTADB = 1, 11, 14, 26
# What SQLITE_ERROR says when the schema is not the one we wrote (our own
# SQL is fixed): damage, like a malformed page.
_SCHEMA_DAMAGE = ("no such table", "no such column", "no such function", "malformed")

_Op = tuple[str, tuple[Any, ...]]
_T = TypeVar("_T")

#: Open stores, for the fork handler.
_OPEN: weakref.WeakSet[SQLiteStore] = weakref.WeakSet()


#: Read connections per store: WAL readers run side by side, and the GIL
#: lets only one thread step Python at a time, so a few are enough.
_READERS = 4
#: Bytes the WAL file is cut back to after a checkpoint.
_WAL_LIMIT = 64 * 1024 * 1024


class SQLiteStore:
    durable = True

    def __init__(self, url: str, *, readonly: bool = False) -> None:
        self.url = url
        self.path, self._synchronous = _parse_url(url)
        self.readonly = readonly
        #: Read connections, at most a few whatever the number of threads.
        self._readers = ReaderPool(self._connect, _READERS)
        self._lock_fd: Optional[int] = None
        self._db_fd: Optional[int] = None
        self._writer: Optional[_GroupCommit] = None
        self._pid = os.getpid()
        #: Why every call is refused (closed, or a forked child), or None.
        self._refusal: Optional[str] = None
        #: The real file: locks, modes and SQLite all go by it, whatever name
        #: (symlink) it was reached by.
        self._file = _real_file(self.path, must_exist=readonly)
        self._version = SCHEMA_VERSION
        if readonly:
            if self._check_file() is None:
                raise StoreError(f"{self.path} holds no journal yet; nothing to read")
            _OPEN.add(self)
            return
        self._lock_fd = _take_lock(self.path, self._file + ".lock")
        try:
            self._db_fd = _open_database(self.path, self._file)
            if self._check_file() is None:
                self._initialise()
            self._writer = _GroupCommit(self._connect(), self.path)
        except BaseException:
            self._release_locks()
            raise
        _OPEN.add(self)

    # -- opening -----------------------------------------------------------

    def _initialise(self) -> None:
        conn = self._raw_connection()
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("BEGIN IMMEDIATE")
            # Looked at again under the write lock: nothing was made meanwhile.
            if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise StoreError(f"{self.path} changed while it was being opened; retry")
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except Exception as exc:  # noqa: BLE001 - translated, never raw
            raise _translate(exc, self.path) from None
        finally:
            conn.close()

    def _check_file(self) -> Optional[int]:
        """Refuse, without writing a byte, any file that is not a journal;
        migrate an older one (writable opens).  Return the schema version,
        or None for a file that holds nothing yet."""
        try:
            with open(self._file, "rb") as handle:
                header = handle.read(20)
        except OSError as exc:
            raise StoreError(f"{self.path} cannot be read ({exc.strerror})") from None
        if not header:
            return None  # created, then killed before SQLite wrote a byte
        if header[:16] != _SQLITE_MAGIC:
            raise StoreCorrupt(
                f"{self.path} is not a taskjournal database (not an SQLite file); "
                "it was left untouched: point the store URL at another path"
            )
        if len(header) < 20 or header[18] not in (1, 2) or header[19] not in (1, 2):
            # Versions SQLite reads, if at all, as read-only: damage, in a journal.
            raise StoreCorrupt(f"{self.path} is damaged (its file format bytes are "
                               f"{header[18:20].hex()}); it was left untouched")
        conn = self._raw_connection(readonly=True)
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version: int = conn.execute("PRAGMA user_version").fetchone()[0]
            objects = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            columns = {
                table: [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
                for table in _TABLES
            }
        except Exception as exc:  # noqa: BLE001 - translated, never raw
            raise _translate(exc, self.path) from None
        finally:
            conn.close()
        if app_id not in (0, APPLICATION_ID) or (app_id == 0 and objects):
            raise StoreCorrupt(
                f"{self.path} is an SQLite database of another application "
                f"(application_id {app_id:#x}); it was left untouched"
            )
        if version == 0:
            if not objects:
                return None
            raise StoreCorrupt(
                f"{self.path} has taskjournal's id but no schema version, and holds tables: "
                "it was not written by taskjournal as it is; it was left untouched"
            )
        if version < 0:
            raise StoreCorrupt(f"{self.path} is damaged (schema version {version}); "
                               "it was left untouched")
        if version > SCHEMA_VERSION:
            raise StoreCorrupt(
                f"{self.path} has journal schema {version}, newer than this taskjournal "
                f"({SCHEMA_VERSION}); upgrade taskjournal to open it"
            )
        expected = dict(_TABLES, streams=_TABLES["streams"][:3]) if version == 1 else _TABLES
        if columns != expected:
            raise StoreCorrupt(f"{self.path} is damaged (its tables are not the journal's: "
                               f"{columns}); it was left untouched")
        if version < SCHEMA_VERSION and not self.readonly:
            self._migrate(version)
            version = SCHEMA_VERSION
        self._version = version
        return version

    def _migrate(self, version: int) -> None:
        conn = self._raw_connection()
        conn.create_function("journal_snapshot_total", 1, _checked_total, deterministic=True)
        try:
            conn.execute("BEGIN IMMEDIATE")
            while version < SCHEMA_VERSION:
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
                version += 1
            conn.execute(f"PRAGMA user_version={version}")
            conn.execute("COMMIT")
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc, self.path) from None
        finally:
            conn.close()

    def _raw_connection(self, readonly: bool = False) -> sqlite3.Connection:
        target = f"file:{_quote(self._file)}" + ("?mode=ro" if readonly else "")
        try:
            conn = sqlite3.connect(target, uri=True, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=10000")
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc, self.path) from None
        return conn

    def _connect(self) -> sqlite3.Connection:
        conn = self._raw_connection(readonly=self.readonly)
        if not self.readonly:
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            # The file stays as large as what is retained: rows that expire
            # free their pages to SQLite's freelist, and new rows take those
            # first.  The WAL is reset at each checkpoint, and cut back to
            # this size if one burst made it larger.
            conn.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT}")
        return conn

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self._refusal is not None:
            raise StoreError(self._refusal)
        try:
            with self._readers.connection() as conn:
                return self._read_on(conn, sql, params)
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - opening one: translated, never raw
            raise _translate(exc, self.path) from None

    def _read_on(
        self, conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]
    ) -> list[tuple[Any, ...]]:
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "decode" not in str(exc):
                raise _translate(exc, self.path) from None
        except Exception as exc:  # noqa: BLE001 - translated, never raw
            raise _translate(exc, self.path) from None
        # Text that is not UTF-8 (no journal writes it): read it as bytes,
        # which row_problem() then names, instead of failing every row.
        conn.text_factory = _text_or_bytes
        try:
            return conn.execute(sql, params).fetchall()
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc, self.path) from None
        finally:
            conn.text_factory = str

    # -- the Store protocol ------------------------------------------------

    def load_in_flight(self) -> list[StoredTask]:
        """In-flight tasks, rows no journal wrote left out (``check`` names them)."""
        rows = map(TaskRow._make, self._read(f"SELECT {_COLUMNS} FROM tasks WHERE finished_at IS NULL"))
        streams: dict[str, dict[str, bytes]] = {}
        for task_id, name, snapshot in self._read(
            "SELECT s.task_id, s.name, s.snapshot FROM streams s "
            "JOIN tasks t ON t.task_id = s.task_id WHERE t.finished_at IS NULL"
        ):
            if isinstance(name, str) and isinstance(snapshot, bytes):
                streams.setdefault(task_id, {})[name] = snapshot
        return [StoredTask(row, streams.get(row.task_id, {})) for row in rows if row_problem(row) is None]

    def get(self, task_id: str) -> Optional[StoredTask]:
        rows = self._read(f"SELECT {_COLUMNS} FROM tasks WHERE task_id = ?", (task_id,))
        if not rows:
            return None
        row = TaskRow(*rows[0])
        problem = row_problem(row)
        if problem is not None:
            raise StoreCorrupt(
                f"task {task_id!r} in {self.path} is damaged: {problem}; it was left "
                "untouched (taskjournal check --repair removes it)"
            )
        rows = self._read("SELECT name, snapshot FROM streams WHERE task_id = ?", (task_id,))
        streams = {  # rows that are no snapshot are left out: check() names them
            name: snapshot for name, snapshot in rows if isinstance(name, str) and isinstance(snapshot, bytes)
        }
        return StoredTask(row, streams)

    def get_stream(self, task_id: str, name: str) -> Optional[bytes]:
        rows = self._read(
            "SELECT snapshot FROM streams WHERE task_id = ? AND name = ?", (task_id, name)
        )
        if rows and not isinstance(rows[0][0], bytes):
            raise StoreCorrupt(f"stream {name!r} of task {task_id!r} in {self.path} is not a snapshot")
        return rows[0][0] if rows else None

    def tombstoned(self, task_id: str) -> bool:
        return bool(self._read("SELECT 1 FROM tombstones WHERE task_id = ?", (task_id,)))

    def count_by_status(self) -> dict[str, int]:
        """Tasks per status; rows no journal wrote are not counted."""
        return dict(self._read(f"SELECT status, count(*) FROM tasks WHERE {_SOUND} GROUP BY status"))

    def list_tasks(
        self, status: Optional[str] = None, node_id: Optional[str] = None, limit: Optional[int] = None
    ) -> list[TaskRow]:
        """Rows, newest first; rows no journal wrote are left out."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise InvalidArgument(f"limit must be None or an int >= 0, got {limit!r}")
        clauses, params = [], []
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if node_id is not None:
            clauses.append("node_id = ?")
            params.append(node_id)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT {_COLUMNS} FROM tasks {where} ORDER BY created_at DESC"
        rows = self._read(sql if limit is None else f"{sql} LIMIT {limit}", tuple(params))
        good = [row for row in map(TaskRow._make, rows) if row_problem(row) is None]
        if limit is not None and len(good) < len(rows):
            # Hostile rows took places in the page: read on past them.
            good = [row for row in map(TaskRow._make, self._read(sql, tuple(params)))
                    if row_problem(row) is None][:limit]
        return good

    def put_task(
        self,
        row: TaskRow,
        streams: Optional[Mapping[str, Snapshotable]] = None,
        *,
        new: bool = False,
    ) -> None:
        ops: list[_Op] = (_task_ops(row, streams, new) if streams
                          else [(_INSERT_TASK if new else _UPSERT_TASK, row)])
        error = self._ready().submit(ops)
        if error is not None:
            raise self._outcome(error, row.task_id if new else None)

    def put_task_async(
        self,
        row: TaskRow,
        streams: Optional[Mapping[str, Snapshotable]] = None,
        *,
        new: bool = False,
        finish: Callable[[Optional[BaseException]], _T],
    ) -> asyncio.Future[_T]:
        """``put_task`` for a coroutine: queued to the same group commit as
        the threads' writes, without waiting.  Once the commit is done (or
        has failed), ``finish(error)`` runs on the committing thread (error
        None: durable); the future gets what it returns or raises."""
        writer = self._ready()
        task_id = row.task_id if new else None

        def done(job: Job) -> _T:
            error = job.error
            return finish(None if error is None else self._outcome(error, task_id))

        return writer.submit_async(_task_ops(row, streams, new), done)

    def put_streams(self, items: Iterable[tuple[str, str, bytes]]) -> None:
        self._ready()
        self._write([(_UPSERT_STREAM, (t, n, s, _total(s))) for t, n, s in items])

    def expire_finished(self, cutoff: float, tombstone_until: float) -> list[str]:
        ids = [
            task_id
            for (task_id,) in self._read(
                "SELECT task_id FROM tasks WHERE finished_at IS NOT NULL AND finished_at <= ?",
                (cutoff,),
            )
        ]
        ops: list[_Op] = []
        for task_id in ids:
            ops.append(("INSERT OR REPLACE INTO tombstones VALUES (?, ?)", (task_id, tombstone_until)))
            ops.append(("DELETE FROM streams WHERE task_id = ?", (task_id,)))
            ops.append(("DELETE FROM tasks WHERE task_id = ?", (task_id,)))
        if ops:
            self._write(ops)
        return ids

    def forget_tombstones(self, now: float) -> int:
        count = len(self._read("SELECT 1 FROM tombstones WHERE until <= ?", (now,)))
        if count:
            self._write([("DELETE FROM tombstones WHERE until <= ?", (now,))])
        return count

    def check(self) -> list[str]:
        """SQLite's integrity check, rows no journal wrote, stream snapshots
        that do not decode, and stream rows whose task is gone (a crash
        between the writes of a removal can leave them); an empty list means
        the file is sound.  Damage that stops SQLite reading raises
        StoreCorrupt."""
        problems = [row[0] for row in self._read("PRAGMA integrity_check")]
        problems = [] if problems == ["ok"] else problems
        problems += [problem for _, problem in self._hostile()]
        for task_id, name in self._read(f"SELECT task_id, name {_ORPHANS}"):
            problems.append(f"stream {name!r} of task {task_id!r} has no task row")
        return problems

    def repair(self) -> None:
        """Fix what is safe to fix: rebuild the indexes, drop rows no journal
        wrote (those ``check`` names) and stream rows of tasks that no longer
        exist.  Rows of sound tasks are never touched."""
        ops: list[_Op] = [("REINDEX", ())]
        ops += [delete for delete, _ in self._hostile()]
        ops.append((f"DELETE {_ORPHANS}", ()))
        self._write(ops)

    def _hostile(self) -> list[tuple[_Op, str]]:
        """Each row no journal wrote: the statement that deletes exactly it
        (and only while it is still as read), and what is wrong with it."""
        found: list[tuple[_Op, str]] = []
        for rowid, raw_id, *columns in self._read(
            f"SELECT rowid, CAST(task_id AS BLOB), {_COLUMNS} FROM tasks"
        ):
            problem = row_problem(TaskRow(*columns))
            if problem is not None:
                found.append(
                    (("DELETE FROM tasks WHERE rowid = ? AND CAST(task_id AS BLOB) IS ?", (rowid, raw_id)),
                     f"task {columns[0]!r}: {problem}")
                )
        total = "total" if self._version >= 2 else "NULL"
        for rowid, task_id, name, snapshot, stored in self._read(
            f"SELECT rowid, task_id, name, snapshot, {total} FROM streams"
        ):
            problem = _stream_problem(name, snapshot, stored)
            if problem is not None:
                found.append(
                    (("DELETE FROM streams WHERE rowid = ? AND snapshot IS ?", (rowid, snapshot)),
                     f"stream {name!r} of task {task_id!r}: {problem}")
                )
        return found

    def close(self) -> None:
        if self._refusal is not None:
            return
        self._refusal = f"{self.path} is closed; open the store again"
        _OPEN.discard(self)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._readers.close()
        self._release_locks()

    # -- plumbing ----------------------------------------------------------

    def _ready(self) -> _GroupCommit:
        """The writer, or the error that says why there is none."""
        if self._refusal is not None:
            raise StoreError(self._refusal)
        if self._writer is None:
            raise StoreError(f"{self.path} is open read-only; no writes")
        return self._writer

    def _write(self, ops: list[_Op]) -> None:
        error = self._ready().submit(ops)
        if error is not None:
            raise self._outcome(error, None)

    def _outcome(self, error: BaseException, task_id: Optional[str]) -> BaseException:
        """What the caller of a failed write is told; ``task_id`` for an
        insert, whose UNIQUE failure is a duplicate task."""
        if isinstance(error, StoreError):
            return error
        if (isinstance(error, sqlite3.IntegrityError) and task_id is not None
                and "UNIQUE" in str(error)):
            return DuplicateTask(
                f"task {task_id!r} is already in the journal {self.path}; "
                "use a new id for a new task"
            )
        return _translate(error, self.path)

    def _forked(self) -> None:
        """In a forked child: refuse every call from now on.  The inherited
        connections and the leader lock are the parent's (a parent thread may
        have held it at the fork) and are never touched here; the copies of
        the lock files are closed, which leaves the parent's locks held (a
        flock belongs to the open file, which the parent still has open)."""
        self._refusal = (
            f"this journal ({self.path}) belongs to process {self._pid}; this is a forked "
            f"child (pid {os.getpid()}): a forked child must open its own TaskJournal "
            "(on another file, or read-only)"
        )
        for fd in (self._lock_fd, self._db_fd):
            if fd is not None:
                os.close(fd)
        self._lock_fd = self._db_fd = None

    def _release_locks(self) -> None:
        # Closing drops each flock.  The database fd goes last, after every
        # connection of ours: closing a file drops the POSIX locks SQLite
        # holds on it in this process.
        for fd in (self._lock_fd, self._db_fd):
            if fd is not None:
                os.close(fd)
        self._lock_fd = self._db_fd = None


def _after_fork_in_child() -> None:
    for store in list(_OPEN):
        store._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _GroupCommit(Batcher):
    """Every write of the store goes through here, on one connection.

    Calls made at the same time share one transaction and one commit (one
    fsync); see ``_batching``.  A batch that fails is rolled back, whatever
    the error, and retried one caller at a time, so one caller's bad write
    never fails another's.
    """

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        super().__init__()
        self._conn = conn
        self._path = path
        self._closed = False

    def submit(self, ops: list[_Op]) -> Optional[BaseException]:
        """Run ``ops`` in a committed transaction; return the error, if any."""
        return self._submit(ops).error

    def submit_async(self, ops: list[_Op], finish: Callable[[Job], _T]) -> asyncio.Future[_T]:
        """Queue ``ops`` for the next commit; ``finish(job)`` runs once it
        is done and settles the returned future (see ``_batching``)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        self._submit_async(AsyncJob(ops, loop, future, finish))
        return future

    def _queued(self, job: Job) -> None:
        if self._closed:
            # close() may have drained the queue before our job was in it.
            self._fail_after_close()

    def _queued_async(self, job: AsyncJob) -> None:
        if self._closed:
            # As above, but an event loop must not wait for the leadership:
            # a thread of its own fails what close() left.
            threading.Thread(target=self._fail_after_close, daemon=True).start()

    def _fail_after_close(self) -> None:
        finished: list[AsyncJob] = []
        with self._leader:
            self._fail_queued(finished)
        self._deliver(finished)

    def _run(self, batch: list[Job]) -> None:
        if self._closed:
            self._fail(batch)
        elif self._commit(batch) is not None and len(batch) > 1:
            for job in batch:
                self._commit([job])

    def _interrupted(self, exc: BaseException) -> BaseException:
        return StoreError(f"{self._path}: the commit was interrupted ({exc!r}); "
                          "nothing of it was written, retry it")

    def close(self) -> None:
        finished: list[AsyncJob] = []
        with self._leader:
            self._closed = True
            self._conn.close()
            self._fail_queued(finished)
        self._deliver(finished)
        self._stop_committer()

    def _fail_queued(self, finished: list[AsyncJob]) -> None:
        """Fail the writes queued but never committed; hold the leadership.
        The async ones go to ``finished``, to deliver once it is given up."""
        while True:
            batch = self._take(self.limit)
            if not batch:
                return
            self._fail(batch)
            self._release(batch, finished)

    def _fail(self, batch: list[Job]) -> None:
        for job in batch:
            job.error = StoreError(f"{self._path} was closed before this write was "
                                   "committed; nothing of it was written")

    def _commit(self, batch: list[Job]) -> Optional[BaseException]:
        conn = self._conn
        payload = batch[0].payload
        try:
            if conn.in_transaction:  # a ROLLBACK that failed, last time
                conn.execute("ROLLBACK")
            if len(batch) == 1 and len(payload) == 1:
                # One write of one row (a lone registration): one statement,
                # nothing to group.
                conn.execute(*payload[0])
            else:
                runs = _grouped(batch)
                if len(runs) == 1 and len(_statement_sizes(*runs[0])) == 1:
                    # One statement is a transaction of its own: no BEGIN and
                    # COMMIT, each of which is one more trip out of the GIL
                    # (and, with many threads, back in after them).
                    _execute_run(conn, *runs[0])
                else:
                    conn.execute("BEGIN IMMEDIATE")
                    for sql, rows in runs:
                        _execute_run(conn, sql, rows)
                    conn.execute("COMMIT")
        except BaseException as exc:
            # Whatever it was (a bad value, KeyboardInterrupt), the
            # transaction must not outlive it: the next caller's BEGIN would fail.
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # retried before the next BEGIN
            if not isinstance(exc, Exception):
                raise  # _lead fails the batch and lets it through
            for job in batch:
                job.error = exc
            return exc
        for job in batch:
            job.error = None
        return None


def _multi_row(sql: str) -> tuple[str, str, str, int]:
    """``sql`` as a multi-row statement: its text around the row groups,
    one group, and the columns of a row.  The rows come from a ``VALUES``
    list that may be padded with rows of NULLs, which the ``WHERE`` leaves
    out (no row the journal writes has a NULL first column, its task id):
    one text of each size serves every smaller run too."""
    head, _, rest = sql.partition(" VALUES (")
    group, _, tail = rest.partition(")")
    return (head + " SELECT * FROM (VALUES ", "(" + group + ")",
            ") WHERE column1 IS NOT NULL" + tail, group.count("?"))


#: The statements a run of which is one multi-row statement.  The leader
#: leaves the GIL twice per statement it steps (its step and its reset;
#: executemany: twice per row), and every time has to get it back from the
#: threads whose calls it serves: fewer statements, shorter batches.  A
#: conflict on one row is handled row by row as in the one-row statement
#: (the upserts), or fails the whole statement (a duplicate registration),
#: which the batch then retries job by job.
_MULTI_ROW = {sql: _multi_row(sql) for sql in (_INSERT_TASK, _UPSERT_TASK, _UPSERT_STREAM)}
#: Rows per statement, at most (10 columns each: far below SQLite's
#: smallest variable limit, 999 before 3.32, for any chunk).
_CHUNK = 64
#: Stream rows per statement, at most.  SQLite keeps a statement's bound
#: values until they are bound again, and sqlite3 keeps up to 128 statements
#: a connection: every statement of n snapshots held n copies of them, 40 KB
#: each (85 MB for the sizes 1 to 64; tests/test_sqlite_memory.py).
_STREAM_CHUNK = 16
#: The order of the kinds when a batch is grouped: a job writes its task
#: row before its streams (a new row's trigger clears stream rows).
_GROUP_ORDER = (_INSERT_TASK, _UPSERT_TASK, _UPSERT_STREAM)
#: The NULLs that pad a statement's unused rows.
_PADDING = (None,) * (_CHUNK * 10)
#: The text of each multi-row statement, by statement and size.
#: Stream rows are not padded: each of their statements is a plain
#: ``VALUES`` list of exactly its rows (a checkpoint pass, which writes them,
#: is no caller waiting at 16 threads, and its 40 KB snapshots are best not
#: sent through a subquery).
_TEXTS = {
    (sql, 1 << power): head + ",".join([group] * (1 << power)) + tail
    for sql, (head, group, tail, _) in _MULTI_ROW.items() if sql != _UPSERT_STREAM
    for power in range(1, _CHUNK.bit_length())
}
_TEXTS.update({
    (_UPSERT_STREAM, 1 << power): _UPSERT_STREAM.replace(
        "VALUES (?,?,?,?)", "VALUES " + ",".join(["(?,?,?,?)"] * (1 << power)))
    for power in range(1, _STREAM_CHUNK.bit_length())
})
_chain = itertools.chain.from_iterable


def _grouped(batch: list[Job]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The batch's statements as runs of one kind each, to execute in order.

    When every job is a ``put_task``/``put_streams`` and no task is written
    by two jobs, the runs are one per kind, in the order task rows first,
    then stream rows, which is each job's own order: no row then sees its
    writes in another order than the jobs' (a batch of 64 completions is
    two statements, not 128).  Otherwise (two changes of one task, a
    removal) runs of the same statement are merged only where they follow
    each other, so everything happens in the order it was queued."""
    if len(batch) == 1:
        return _in_order(batch)  # nothing to group: the job's own order
    kinds: dict[str, list[tuple[Any, ...]]] = {}
    owner: dict[str, int] = {}
    for index, job in enumerate(batch):
        for op_sql, params in job.payload:
            if op_sql not in _MULTI_ROW or owner.setdefault(params[0], index) != index:
                return _in_order(batch)
            kinds.setdefault(op_sql, []).append(params)
    return [(sql, kinds[sql]) for sql in _GROUP_ORDER if sql in kinds]


def _in_order(batch: list[Job]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    runs: list[tuple[str, list[tuple[Any, ...]]]] = []
    sql = ""
    rows: list[tuple[Any, ...]] = []
    for job in batch:
        for op_sql, params in job.payload:
            if op_sql != sql:
                sql, rows = op_sql, []
                runs.append((sql, rows))
            rows.append(params)
    return runs


def _statement_sizes(sql: str, rows: list[tuple[Any, ...]]) -> list[int]:
    """The row slots of each statement that writes ``rows``: one statement
    each where there is no multi-row form, else chunks of the largest size
    and then one statement of the next power of two for the rest, padded,
    so that a few statement texts (seven at most) serve every batch and a
    run up to the largest size is one statement; stream rows, unpadded,
    in powers of two.  With a text for every size, the 192 of them did not
    fit sqlite3's cache of 128, and each kept the values last bound to it."""
    if sql not in _MULTI_ROW:
        return [1] * len(rows)
    if sql == _UPSERT_STREAM:
        sizes, left = [], len(rows)
        while left:
            size = _STREAM_CHUNK if left >= _STREAM_CHUNK else 1 << (left.bit_length() - 1)
            sizes.append(size)
            left -= size
        return sizes
    full, left = divmod(len(rows), _CHUNK)
    sizes = [_CHUNK] * full
    if left:
        sizes.append(1 << (left - 1).bit_length())
    return sizes


def _execute_run(conn: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    multi = _MULTI_ROW.get(sql)
    if multi is None:
        conn.executemany(sql, rows)
        return
    if len(rows) == 1:
        conn.execute(sql, rows[0])
        return
    width = multi[3]
    start = 0
    for size in _statement_sizes(sql, rows):
        chunk = rows[start:start + size]
        start += size
        if size == 1:
            conn.execute(sql, chunk[0])
            continue
        values = list(_chain(chunk))
        if len(chunk) < size:
            values += _PADDING[:(size - len(chunk)) * width]
        conn.execute(_TEXTS[sql, size], values)


def _task_ops(row: TaskRow, streams: Optional[Mapping[str, Snapshotable]], new: bool) -> list[_Op]:
    """The statements of one ``put_task``: its row, then its streams (a
    new row's trigger clears stream rows, so the order matters)."""
    ops: list[_Op] = [(_INSERT_TASK if new else _UPSERT_TASK, row)]
    if streams:
        task_id = row.task_id
        for name, buf in streams.items():
            snapshot = buf.snapshot()
            ops.append((_UPSERT_STREAM, (task_id, name, snapshot, _total(snapshot))))
    return ops


def _parse_url(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc:
        raise InvalidArgument(
            f"an SQLite store URL looks like sqlite:///relative/journal.db or "
            f"sqlite:////absolute/journal.db, got {url!r}"
        )
    if "#" in url:
        raise InvalidArgument(
            f"the store URL {url!r} has a fragment ('#...'): an SQLite store URL has none "
            "(a '#' in a file name is written %23)"
        )
    path = parts.path[1:]  # sqlite:///x.db -> "x.db"; sqlite:////x.db -> "/x.db"
    if not path:
        raise InvalidArgument(f"the store URL {url!r} names no file")
    # keep_blank_values: "x?y.db" is the option "y.db", not silently "x".
    options: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        options[name] = value
    synchronous = options.pop("synchronous", "full").upper()
    if synchronous not in ("FULL", "NORMAL", "EXTRA"):
        raise InvalidArgument(f"synchronous must be full, normal or extra, got {synchronous.lower()!r}")
    if options:
        raise InvalidArgument(
            f"unknown SQLite store URL option {', '.join(map(repr, sorted(options)))} in {url!r}: "
            "the one option is synchronous=full|normal|extra ('?' starts the options; "
            "a '?' in a file name is written %3F)"
        )
    return path, synchronous


def _real_file(path: str, *, must_exist: bool) -> str:
    """The file ``path`` names, symlinks resolved; checked before anything
    (a lock file included) is created beside it."""
    real = os.path.realpath(path)
    if os.path.isdir(real):
        raise StoreError(f"{path} is a directory, not a journal file: name a file in it")
    parent = os.path.dirname(real)
    if not os.path.isdir(parent):
        where = f"the directory {parent} does not exist"
        if must_exist:
            raise StoreError(f"{path}: no such journal file ({where})")
        raise StoreError(f"{path}: {where}; create it first")
    if must_exist and not os.path.exists(real):
        raise StoreError(f"{path}: no such journal file (a read-only open creates none)")
    return real


def _open_database(path: str, real: str) -> Optional[int]:
    """Open (creating it 0600) the database file and make it private.  On
    Linux, lock it by its identity, which every name of it shares, and
    return the fd that holds the lock; elsewhere close it and return None."""
    try:
        fd = os.open(real, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as exc:
        raise StoreError(f"{path} cannot be opened for writing ({exc.strerror})") from None
    keep = False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StoreError(f"{path} is not a regular file")
        if sys.platform != "win32":
            _make_private(path, fd)
            for suffix in ("-wal", "-shm"):
                _make_private_if_there(real + suffix)
        if sys.platform.startswith("linux"):
            import fcntl

            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise StoreLocked(
                    f"{path} is open in another TaskJournal under another name (a hard link); "
                    "one hub process owns a journal file: stop it, or use another file"
                ) from None
            keep = True
    finally:
        if not keep:
            os.close(fd)
    return fd if keep else None

def _make_private(path: str, fd: int) -> None:
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    if mode & 0o077:
        try:
            os.fchmod(fd, 0o600)
        except OSError as exc:
            raise StoreError(
                f"{path} is readable by others (mode {mode:o}) and cannot be made private "
                f"({exc.strerror}); chmod 600 it"
            ) from None


def _make_private_if_there(name: str) -> None:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(name, flags)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreError(f"{name} cannot be opened ({exc.strerror}); a symlink there is refused") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StoreError(f"{name} is not a regular file; remove it")
        _make_private(name, fd)
    finally:
        os.close(fd)


def _quote(path: str) -> str:
    return path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")


def _take_lock(path: str, lock_path: str) -> int:
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    if sys.platform != "win32":
        # Never through a planted symlink; a FIFO must not block the open.
        flags |= os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(lock_path, flags, 0o600)
    except OSError as exc:
        raise StoreError(
            f"the lock file {lock_path} of {path} cannot be opened ({exc.strerror}); "
            "a symlink there is refused: remove it"
        ) from None
    try:
        info = os.fstat(fd)
        # A hard link to someone's file would have us truncate it below.
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            raise StoreError(
                f"the lock file {lock_path} of {path} is not a plain file of its own "
                "(another kind of file, or a hard link); remove it"
            )
        if sys.platform == "win32":  # pragma: no cover - exercised by the Windows CI job
            import msvcrt

            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            except OSError:
                raise _locked(path, fd) from None
        else:
            import fcntl

            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise _locked(path, fd) from None
            _make_private(lock_path, fd)
        # Who holds it, for the error message a second opener gets.
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}".encode())
    except BaseException:
        os.close(fd)
        raise
    return fd


def _locked(path: str, fd: int) -> StoreLocked:
    try:
        owner = os.pread(fd, 64, 0) if hasattr(os, "pread") else os.read(fd, 64)
    except OSError:
        owner = b""
    holder = owner.decode(errors="replace").strip() or "another process"
    return StoreLocked(
        f"{path} is open in another TaskJournal ({holder}); "
        "one hub process owns a journal file: stop it, or use another file"
    )


def _total(snapshot: bytes) -> int:
    try:
        return snapshot_total(snapshot)
    except Exception:  # noqa: BLE001 - not a snapshot at all
        raise InvalidArgument(
            f"a stream snapshot is what HeadTailBuffer.snapshot() returns, got {snapshot!r:.60}"
        ) from None


def _checked_total(snapshot: Any) -> int:
    """A stored snapshot's total, for the migration; 0 for one that does not
    decode, so it can never hold back a sound write (check() names it)."""
    try:
        return decode_snapshot(snapshot).total
    except (CorruptSnapshot, TypeError):
        return 0


def _stream_problem(name: Any, snapshot: Any, stored: Optional[int]) -> Optional[str]:
    if not isinstance(name, str):
        return "its name is not text"
    try:
        total = decode_snapshot(snapshot).total
    except CorruptSnapshot as exc:
        return f"its snapshot is damaged ({exc})"
    except TypeError:
        return "its snapshot is not bytes"
    if stored is not None and stored != total:
        return f"its stored total {stored!r} is not its snapshot's ({total})"
    return None


def _text_or_bytes(data: bytes) -> Any:
    try:
        return data.decode()
    except UnicodeDecodeError:
        return data


def _translate(exc: BaseException, path: str) -> Union[StoreError, InvalidArgument]:
    """The error in the journal's hierarchy for what SQLite (or the binding
    of a value) raised."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, UnicodeDecodeError):  # text in the file (an error message, too)
        return StoreCorrupt(f"{path} is damaged (text that is not UTF-8: {exc}); it was left untouched")
    if isinstance(exc, (UnicodeError, OverflowError, ValueError, TypeError, sqlite3.InterfaceError)):
        return InvalidArgument(f"{path}: a value cannot be stored ({exc}); nothing was written")
    text = str(exc)
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    code = code & 0xFF if isinstance(code, int) else None
    if isinstance(exc, sqlite3.DatabaseError) and (
        code in (_CORRUPT, _NOTADB)
        or (code in (_ERROR, None) and any(sign in text for sign in _SCHEMA_DAMAGE))
        or (code is None and ("not a database" in text or "corrupt" in text))
    ):
        return StoreCorrupt(f"{path} is damaged ({text}); it was left untouched")
    if code == _CANTOPEN or "unable to open database file" in text:
        return StoreError(
            f"{path}: SQLite cannot open it ({text}); a journal needs to create {path}-wal "
            f"and {path}-shm beside it: check that its directory is writable and the file readable"
        )
    return StoreError(f"{path}: {text}; the change was not made, retry it")
