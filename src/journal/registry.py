"""The sharded task registry: where the journal finds a task by its id.

Tasks are spread over N shards by a hash of their id; each shard has its own
lock, taken only for structural changes (adding, removing, changing a task's
state).  Lookups take no lock (a dict read is atomic under the GIL), and
stream appends never come here at all: they go straight to the buffer handle.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Generic, Optional, TypeVar

__all__ = ["Shard", "ShardedRegistry"]

T = TypeVar("T")


class Shard(Generic[T]):
    __slots__ = ("entries", "lock")

    def __init__(self) -> None:
        self.entries: dict[str, T] = {}
        self.lock = threading.Lock()


class ShardedRegistry(Generic[T]):
    def __init__(self, shards: int = 16) -> None:
        if shards < 1 or shards & (shards - 1):
            raise ValueError(f"shards must be a power of two, got {shards}")
        self._mask = shards - 1
        self._shards = [Shard[T]() for _ in range(shards)]

    def shard(self, key: str) -> Shard[T]:
        """The shard that holds ``key``; hold its lock to change the entry."""
        return self._shards[hash(key) & self._mask]

    def get(self, key: str) -> Optional[T]:
        return self.shard(key).entries.get(key)

    def __len__(self) -> int:
        return sum(len(shard.entries) for shard in self._shards)

    def values(self) -> Iterator[T]:
        """Every entry, one shard at a time, each shard copied under its lock."""
        for shard in self._shards:
            with shard.lock:
                entries = list(shard.entries.values())
            yield from entries

    def values_unlocked(self) -> list[T]:
        """Every entry, without the locks: only where no other thread can
        change the registry, and a lock may be held for good (a forked
        child, whose other threads did not survive the fork)."""
        return [entry for shard in self._shards for entry in list(shard.entries.values())]
