"""memory://: the store that keeps nothing, for a journal that need not survive.

The journal's own registry already holds every task, so there is nothing to
mirror; a restart starts empty.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from journal.store.base import Snapshotable, StoredState, TaskRow

__all__ = ["MemoryStore"]


class MemoryStore:
    def __init__(self, url: str = "memory://") -> None:
        self.url = url

    def load(self) -> StoredState:
        return StoredState()

    def put_task(self, row: TaskRow) -> None:
        pass

    def put_streams(self, task_id: str, streams: Mapping[str, Snapshotable]) -> None:
        pass

    def expire(self, task_ids: Iterable[str], tombstone_until: float) -> None:
        pass

    def forget_tombstones(self, now: float) -> None:
        pass

    def close(self) -> None:
        pass
