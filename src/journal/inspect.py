"""JournalInspector: look into a journal's store from outside the hub.

What an operator's tools (the ``taskjournal`` command) need: list, show and
follow tasks, count them, sweep expired results, check the file.  Reading
opens the store read-only, so it works beside the live hub that owns it and
changes nothing: no recovery, no lease or deadline enforcement.  ``gc`` and
``check(repair=True)`` write, and so need the store to themselves.
"""

from __future__ import annotations

import time
from typing import Any, Optional

from journal.buffer import HeadTailBuffer
from journal.errors import CorruptSnapshot, InvalidArgument, ResultExpired, UnknownTask
from journal.lifecycle import TaskStatus
from journal.records import StreamView, TaskRecord, record_from_row
from journal.store import StoredTask, open_store

__all__ = ["JournalInspector"]


class JournalInspector:
    """Read (and on request sweep or repair) the store at ``store_url``."""

    def __init__(self, store_url: str, *, writable: bool = False) -> None:
        if not isinstance(store_url, str) or store_url.startswith("memory://"):
            raise InvalidArgument(
                f"cannot inspect {store_url!r}: memory:// keeps nothing outside the process "
                "that wrote it; give the URL of a durable store, e.g. sqlite:///journal.db"
            )
        self._store = open_store(store_url, readonly=not writable)
        self.store_url = self._store.url

    def get(self, task_id: str) -> TaskRecord:
        """The task as last written, its streams as last checkpointed."""
        stored = self._store.get(task_id)
        if stored is None:
            if self._store.tombstoned(task_id):
                raise ResultExpired(f"task {task_id!r} finished and its result has expired")
            raise UnknownTask(f"no task {task_id!r} in {self.store_url}")
        return _record(stored)

    def list_tasks(
        self, status: Optional[str] = None, node_id: Optional[str] = None,
        limit: Optional[int] = None,
    ) -> list[TaskRecord]:
        """Tasks newest first, without their streams."""
        value = None if status is None else _status(status).value
        return [record_from_row(row, {}) for row in
                self._store.list_tasks(status=value, node_id=node_id, limit=limit)]

    def in_flight(self) -> list[TaskRecord]:
        """Tasks not yet finished, oldest first, with their last checkpoints."""
        stored = sorted(self._store.load_in_flight(), key=lambda item: item.row.created_at)
        return [_record(item) for item in stored]

    def stats(self) -> dict[str, Any]:
        """Tasks by status and nodes, and what the checkpointed streams hold."""
        by_status = {status.value: 0 for status in TaskStatus}
        by_status.update(self._store.count_by_status())
        streams = held = written = 0
        nodes = set()
        for row in self._store.list_tasks():
            nodes.add(row.node_id)
            stored = self._store.get(row.task_id)
            for snapshot in (stored.streams.values() if stored else ()):
                buf = HeadTailBuffer.restore(snapshot)
                streams += 1
                held += buf.total - buf.dropped
                written += buf.total
        return {
            "store": self.store_url,
            "tasks": sum(by_status.values()),
            "by_status": by_status,
            "nodes": len(nodes),
            "streams": streams,
            "bytes_written": written,
            "bytes_held": held,
            "bytes_dropped": written - held,
        }

    def gc(self, result_ttl: float, now: Optional[float] = None) -> dict[str, int]:
        """Remove results finished more than ``result_ttl`` seconds ago now.

        What the hub's own sweep does on its timer; each removed task keeps a
        tombstone for one more ``result_ttl``, so a late caller is told its
        result expired rather than that the task never existed."""
        now = time.time() if now is None else now
        expired = self._store.expire_finished(now - result_ttl, now + result_ttl)
        forgotten = self._store.forget_tombstones(now)
        return {"expired": len(expired), "tombstones_forgotten": forgotten}

    def check(self, repair: bool = False) -> list[str]:
        """Problems with the store, or ``[]``.  With ``repair``, fix what is
        safe to fix (see ``Store.repair``) and report what remains."""
        problems = list(self._store.check())
        for row in self._store.list_tasks():
            stored = self._store.get(row.task_id)
            for name, snapshot in (stored.streams.items() if stored else ()):
                try:
                    HeadTailBuffer.restore(snapshot)
                except CorruptSnapshot as exc:
                    problems.append(f"task {row.task_id!r} stream {name!r}: {exc}")
        if repair and problems:
            self._store.repair()
            return self.check(repair=False)
        return problems

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> JournalInspector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _status(value: str) -> TaskStatus:
    try:
        return TaskStatus(value.lower())
    except ValueError:
        names = ", ".join(status.value for status in TaskStatus)
        raise InvalidArgument(f"unknown status {value!r}: one of {names}") from None


def _record(stored: StoredTask) -> TaskRecord:
    views = {}
    for name, snapshot in stored.streams.items():
        views[name] = StreamView(name, *HeadTailBuffer.restore(snapshot).view())
    return record_from_row(stored.row, views)
