"""sqlite:///path/to/journal.db: the embedded default store.

What is safe when:

* Every write goes through one connection that commits in groups: calls
  made at the same time share one transaction, and none returns before the
  commit that holds its change.  With the default ``synchronous=full`` a
  commit is fsynced, so it survives a power cut; ``?synchronous=normal``
  survives a crash or SIGKILL of the hub but not of the machine, for about
  ten times the commit rate.
* The file is created with mode 0600, runs in WAL mode, and is owned by one
  TaskJournal at a time (an advisory lock on ``<file>.lock``); read-only
  opens (``readonly=True``, for inspection) need no lock.
* A file that is not ours (not SQLite, another application's SQLite, a newer
  schema) is refused with StoreCorrupt and never written to.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

from journal.errors import DuplicateTask, InvalidArgument, StoreCorrupt, StoreError, StoreLocked
from journal.store._batching import Batcher, Job
from journal.store.base import Snapshotable, StoredTask, TaskRow

__all__ = ["SQLiteStore"]

SCHEMA_VERSION = 1
APPLICATION_ID = 0x544A524E  # "TJRN" in the file header: this file is ours
_SQLITE_MAGIC = b"SQLite format 3\x00"

# The schema, once.  Version 1.  A later version adds a list of statements to
# _MIGRATIONS under the version it upgrades from.
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
)
_MIGRATIONS: dict[int, tuple[str, ...]] = {}

_COLUMNS = "task_id, node_id, status, meta_json, result, error, created_at, updated_at, finished_at, deadline"
# Stream rows whose task row is gone.
_ORPHANS = "FROM streams WHERE task_id NOT IN (SELECT task_id FROM tasks)"
_INSERT_TASK = f"INSERT INTO tasks ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)"
_UPSERT_TASK = f"INSERT OR REPLACE INTO tasks ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)"
_UPSERT_STREAM = "INSERT OR REPLACE INTO streams (task_id, name, snapshot) VALUES (?,?,?)"

_Op = tuple[str, tuple[Any, ...]]


class SQLiteStore:
    durable = True

    def __init__(self, url: str, *, readonly: bool = False) -> None:
        self.url = url
        self.path, self._synchronous = _parse_url(url)
        self.readonly = readonly
        self._local = threading.local()
        self._lock_file: Optional[int] = None
        self._writer: Optional[_GroupCommit] = None
        if readonly:
            if not os.path.exists(self.path):
                raise StoreCorrupt(f"{self.path}: no such journal file")
            self._check_file()
            return
        self._lock_file = _take_lock(self.path)
        try:
            created = self._create_if_missing()
            if not created:
                self._check_file()
            self._writer = _GroupCommit(self._connect())
        except BaseException:
            self._release_lock()
            raise

    # -- opening -----------------------------------------------------------

    def _create_if_missing(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            if os.path.getsize(self.path) > 0:
                return False
        else:
            os.close(fd)
        conn = self._raw_connection()
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        finally:
            conn.close()
        return True

    def _check_file(self) -> None:
        """Refuse, without writing a byte, any file that is not a journal."""
        with open(self.path, "rb") as handle:
            header = handle.read(len(_SQLITE_MAGIC))
        if header != _SQLITE_MAGIC:
            raise StoreCorrupt(
                f"{self.path} is not a taskjournal database (not an SQLite file); "
                "it was left untouched: point the store URL at another path"
            )
        conn = self._raw_connection(readonly=True)
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise StoreCorrupt(f"{self.path} is damaged ({exc}); it was left untouched") from None
        finally:
            conn.close()
        if app_id != APPLICATION_ID:
            raise StoreCorrupt(
                f"{self.path} is an SQLite database of another application "
                f"(application_id {app_id:#x}); it was left untouched"
            )
        if version > SCHEMA_VERSION:
            raise StoreCorrupt(
                f"{self.path} has journal schema {version}, newer than this taskjournal "
                f"({SCHEMA_VERSION}); upgrade taskjournal to open it"
            )
        if version < SCHEMA_VERSION and not self.readonly:
            self._migrate(version)

    def _migrate(self, version: int) -> None:
        conn = self._raw_connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            while version < SCHEMA_VERSION:
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
                version += 1
            conn.execute(f"PRAGMA user_version={version}")
            conn.execute("COMMIT")
        finally:
            conn.close()

    def _raw_connection(self, readonly: bool = False) -> sqlite3.Connection:
        target = f"file:{_quote(self.path)}?mode=ro" if readonly else f"file:{_quote(self.path)}"
        conn = sqlite3.connect(target, uri=True, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    def _connect(self) -> sqlite3.Connection:
        conn = self._raw_connection(readonly=self.readonly)
        if not self.readonly:
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
        return conn

    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection, remade after a fork."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            local.conn = self._connect()
            local.pid = os.getpid()
        return local.conn

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._reader().execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise _translate(exc, self.path) from None

    # -- the Store protocol ------------------------------------------------

    def load_in_flight(self) -> list[StoredTask]:
        rows = self._read(f"SELECT {_COLUMNS} FROM tasks WHERE finished_at IS NULL")
        streams: dict[str, dict[str, bytes]] = {}
        for task_id, name, snapshot in self._read(
            "SELECT s.task_id, s.name, s.snapshot FROM streams s "
            "JOIN tasks t ON t.task_id = s.task_id WHERE t.finished_at IS NULL"
        ):
            streams.setdefault(task_id, {})[name] = snapshot
        return [StoredTask(TaskRow(*row), streams.get(row[0], {})) for row in rows]

    def get(self, task_id: str) -> Optional[StoredTask]:
        rows = self._read(f"SELECT {_COLUMNS} FROM tasks WHERE task_id = ?", (task_id,))
        if not rows:
            return None
        streams = dict(self._read("SELECT name, snapshot FROM streams WHERE task_id = ?", (task_id,)))
        return StoredTask(TaskRow(*rows[0]), streams)

    def get_stream(self, task_id: str, name: str) -> Optional[bytes]:
        rows = self._read(
            "SELECT snapshot FROM streams WHERE task_id = ? AND name = ?", (task_id, name)
        )
        return rows[0][0] if rows else None

    def tombstoned(self, task_id: str) -> bool:
        return bool(self._read("SELECT 1 FROM tombstones WHERE task_id = ?", (task_id,)))

    def count_by_status(self) -> dict[str, int]:
        return dict(self._read("SELECT status, count(*) FROM tasks GROUP BY status"))

    def list_tasks(
        self, status: Optional[str] = None, node_id: Optional[str] = None, limit: Optional[int] = None
    ) -> list[TaskRow]:
        clauses, params = [], []
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if node_id is not None:
            clauses.append("node_id = ?")
            params.append(node_id)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        limit_sql = f"LIMIT {int(limit)}" if limit is not None else ""
        rows = self._read(
            f"SELECT {_COLUMNS} FROM tasks {where} ORDER BY created_at DESC {limit_sql}", tuple(params)
        )
        return [TaskRow(*row) for row in rows]

    def put_task(
        self,
        row: TaskRow,
        streams: Optional[Mapping[str, Snapshotable]] = None,
        *,
        new: bool = False,
    ) -> None:
        ops: list[_Op] = [(_INSERT_TASK if new else _UPSERT_TASK, tuple(row))]
        for name, buf in (streams or {}).items():
            ops.append((_UPSERT_STREAM, (row.task_id, name, buf.snapshot())))
        self._write(ops, task_id=row.task_id if new else None)

    def put_streams(self, items: Iterable[tuple[str, str, bytes]]) -> None:
        self._write([(_UPSERT_STREAM, item) for item in items])

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
        """SQLite's integrity check, and stream rows whose task is gone (a
        crash between the writes of a removal can leave them); an empty list
        means the file is sound."""
        problems = [row[0] for row in self._read("PRAGMA integrity_check")]
        problems = [] if problems == ["ok"] else problems
        for task_id, name in self._read(f"SELECT task_id, name {_ORPHANS}"):
            problems.append(f"stream {name!r} of task {task_id!r} has no task row")
        return problems

    def repair(self) -> None:
        """Fix what is safe to fix: rebuild the indexes and drop stream rows
        of tasks that no longer exist.  Rows of live tasks are never touched."""
        self._write([("REINDEX", ()), (f"DELETE {_ORPHANS}", ())])

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            conn.close()
            self._local.conn = None
        self._release_lock()

    # -- plumbing ----------------------------------------------------------

    def _write(self, ops: list[_Op], task_id: Optional[str] = None) -> None:
        if self._writer is None:
            raise StoreError(f"{self.path} is open read-only or closed; no writes")
        error = self._writer.submit(ops)
        if error is None:
            return
        if isinstance(error, sqlite3.IntegrityError) and task_id is not None:
            raise DuplicateTask(
                f"task {task_id!r} is already in the journal {self.path}; "
                "use a new id for a new task"
            )
        raise _translate(error, self.path)

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            os.close(self._lock_file)  # closing drops the lock
            self._lock_file = None


class _GroupCommit(Batcher):
    """Every write of the store goes through here, on one connection.

    Calls made at the same time share one transaction and one commit (one
    fsync); see ``_batching``.  A batch that fails is retried one caller at
    a time, so one caller's bad write never fails another's.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__()
        self._conn = conn
        self._closed = False

    def submit(self, ops: list[_Op]) -> Optional[BaseException]:
        """Run ``ops`` in a committed transaction; return the error, if any."""
        return self._submit(ops).error

    def _queued(self, job: Job) -> None:
        if self._closed:
            # close() may have drained the queue before our job was in it.
            with self._leader:
                self._fail_queued()

    def _run(self, batch: list[Job]) -> None:
        if self._commit(batch) is not None and len(batch) > 1:
            for job in batch:
                self._commit([job])

    def _interrupted(self, exc: BaseException) -> BaseException:
        return StoreError(f"the commit was interrupted ({exc!r}); retry it")

    def close(self) -> None:
        with self._leader:
            self._closed = True
            self._conn.close()
            self._fail_queued()

    def _fail_queued(self) -> None:
        """Fail the writes queued but never committed; hold the leadership."""
        while True:
            batch = self._take(self.limit)
            if not batch:
                return
            for job in batch:
                job.error = StoreError("the store was closed before this write was committed; "
                                       "nothing of it was written")
                job.done.release()

    def _commit(self, batch: list[Job]) -> Optional[BaseException]:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            # Runs of the same statement go through executemany, in order:
            # a batch of registrations is one call, not one per task.
            sql = ""
            run: list[tuple[Any, ...]] = []
            for job in batch:
                for op_sql, params in job.payload:
                    if op_sql != sql and run:
                        conn.executemany(sql, run)
                        run = []
                    sql = op_sql
                    run.append(params)
            if run:
                conn.executemany(sql, run)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for job in batch:
                job.error = exc
            return exc
        for job in batch:
            job.error = None
        return None


def _parse_url(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc:
        raise InvalidArgument(
            f"an SQLite store URL looks like sqlite:///relative/journal.db or "
            f"sqlite:////absolute/journal.db, got {url!r}"
        )
    path = parts.path[1:]  # sqlite:///x.db -> "x.db"; sqlite:////x.db -> "/x.db"
    if not path:
        raise InvalidArgument(f"the store URL {url!r} names no file")
    options = parse_qs(parts.query)
    synchronous = options.pop("synchronous", ["full"])[-1].upper()
    if synchronous not in ("FULL", "NORMAL", "EXTRA"):
        raise InvalidArgument(f"synchronous must be full, normal or extra, got {synchronous.lower()!r}")
    if options:
        raise InvalidArgument(f"unknown store URL options {sorted(options)} in {url!r}")
    return path, synchronous


def _quote(path: str) -> str:
    return path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")


def _take_lock(path: str) -> int:
    lock_path = path + ".lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if sys.platform == "win32":  # pragma: no cover - exercised by the Windows CI job
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        owner = os.read(fd, 64).decode(errors="replace").strip()
        os.close(fd)
        raise StoreLocked(
            f"{path} is open in another TaskJournal ({owner or 'another process'}); "
            "one hub process owns a journal file: stop it, or use another file"
        ) from None
    # Who holds it, for the error message a second opener gets.
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()}".encode())
    return fd


def _translate(exc: BaseException, path: str) -> StoreError:
    text = str(exc)
    if isinstance(exc, sqlite3.DatabaseError) and (
        "malformed" in text or "not a database" in text or "corrupt" in text
    ):
        return StoreCorrupt(f"{path} is damaged ({text}); it was left untouched")
    return StoreError(f"{path}: {text}; the change was not made, retry it")
