"""Stores the journal can be kept in, chosen by URL."""

from __future__ import annotations

from journal.errors import InvalidArgument
from journal.store.base import Store, StoredState, TaskRow
from journal.store.memory import MemoryStore

__all__ = ["Store", "StoredState", "TaskRow", "open_store"]


def open_store(url: str) -> Store:
    """Open the store a URL names (``memory://``)."""
    scheme, sep, _ = url.partition("://") if isinstance(url, str) else ("", "", "")
    if not sep:
        raise InvalidArgument(f"a store URL looks like 'memory://', got {url!r}")
    if scheme == "memory":
        return MemoryStore(url)
    raise InvalidArgument(
        f"unsupported store URL {url!r}: this version of taskjournal knows memory://"
    )
