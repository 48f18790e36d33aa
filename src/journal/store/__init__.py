"""Stores the journal can be kept in, chosen by URL."""

from __future__ import annotations

from journal.errors import InvalidArgument
from journal.store.base import SharedStore, Store, StoredTask, TaskRow
from journal.store.memory import MemoryStore

__all__ = ["SharedStore", "Store", "StoredTask", "TaskRow", "open_store"]

SCHEMES = ("memory://", "sqlite:///path/journal.db", "redis://host:6379/0")


def open_store(url: str, *, readonly: bool = False, result_ttl: float = 3600.0) -> Store:
    """Open the store a URL names.

    ``result_ttl`` is for stores that expire finished tasks themselves
    (Redis); the others leave that to the journal's sweep.
    """
    if not isinstance(url, str):
        raise InvalidArgument(
            f"the store URL must be a str like {' or '.join(SCHEMES)}, got {type(url).__name__} {url!r}"
        )
    if not url:
        raise InvalidArgument(f"the store URL is empty: give one like {' or '.join(SCHEMES)}")
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise InvalidArgument(f"a store URL looks like {' or '.join(SCHEMES)}, got {url!r}")
    if scheme == "memory":
        if rest:
            # Nothing to name or tune: a path or an option here is a mistake
            # (a sqlite:// URL meant), never something to ignore.
            raise InvalidArgument(
                f"memory:// takes no path or options, got {url!r}: use 'memory://', "
                "or sqlite:///PATH for a journal kept in a file"
            )
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
