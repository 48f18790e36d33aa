"""Stores the journal can be kept in, chosen by URL."""

from __future__ import annotations

from journal.errors import InvalidArgument
from journal.store.base import Store, StoredTask, TaskRow
from journal.store.memory import MemoryStore

__all__ = ["Store", "StoredTask", "TaskRow", "open_store"]

SCHEMES = ("memory://", "sqlite:///path/journal.db", "redis://host:6379/0")


def open_store(url: str, *, readonly: bool = False, result_ttl: float = 3600.0) -> Store:
    """Open the store a URL names.

    ``result_ttl`` is for stores that expire finished tasks themselves
    (Redis); the others leave that to the journal's sweep.
    """
    scheme, sep, _ = url.partition("://") if isinstance(url, str) else ("", "", "")
    if not sep:
        raise InvalidArgument(f"a store URL looks like {' or '.join(SCHEMES)}, got {url!r}")
    if scheme == "memory":
        return MemoryStore(url)
    if scheme == "sqlite":
        from journal.store.sqlite import SQLiteStore

        return SQLiteStore(url, readonly=readonly)
    if scheme in ("redis", "rediss"):
        from journal.store.redis import RedisStore

        return RedisStore(url, readonly=readonly, result_ttl=result_ttl)
    raise InvalidArgument(
        f"unsupported store URL {url!r}: this taskjournal knows {', '.join(SCHEMES)}"
    )
