"""The Store protocol: what the journal asks of a durable store.

The journal keeps its working state in memory (the registry) and mirrors it
into a store so that it survives a restart.  A store never decides anything:
it records rows and gives them back.  Every method that writes must be
durable when it returns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import NamedTuple, Optional, Protocol, Union

__all__ = ["Snapshotable", "StoredState", "Store", "TaskRow"]


class TaskRow(NamedTuple):
    """The durable form of one task (its streams are stored separately)."""

    task_id: str
    node_id: str
    status: str
    meta_json: Optional[str]
    #: The result: JSON text, or raw bytes for a bytes result.
    result: Union[bytes, str, None]
    error: Optional[str]
    created_at: float
    updated_at: float
    finished_at: Optional[float]
    deadline: Optional[float]


@dataclasses.dataclass
class StoredState:
    """Everything a store holds, as read back when a journal opens it."""

    tasks: list[TaskRow] = dataclasses.field(default_factory=list)
    #: task id -> stream name -> buffer snapshot
    streams: dict[str, dict[str, bytes]] = dataclasses.field(default_factory=dict)
    #: expired task id -> wall-clock time its tombstone may be forgotten
    tombstones: dict[str, float] = dataclasses.field(default_factory=dict)


class Snapshotable(Protocol):
    def snapshot(self) -> bytes: ...


class Store(Protocol):
    url: str

    def load(self) -> StoredState: ...

    def put_task(self, row: TaskRow) -> None:
        """Insert or replace one task row."""

    def put_streams(self, task_id: str, streams: Mapping[str, Snapshotable]) -> None:
        """Store ``snapshot()`` of each of these streams of one task.

        The store takes the snapshots itself, so that a store that keeps
        nothing pays nothing.
        """

    def expire(self, task_ids: Iterable[str], tombstone_until: float) -> None:
        """Delete these tasks and their streams, leaving tombstones."""

    def forget_tombstones(self, now: float) -> None:
        """Drop tombstones whose time has passed."""

    def close(self) -> None: ...
