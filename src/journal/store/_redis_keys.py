"""The Redis store's key layout: tasks spread over a fixed number of buckets,
each bucket one hash tag, so that every script touches one slot of a Redis
Cluster and the buckets (with their tasks) spread over every primary.

Under a namespace ``ns`` (``?prefix=``, default ``taskjournal``), a task
lives in bucket ``b = crc32(task id) % buckets`` and the bucket's keys all
carry the hash tag ``{ns:b}``::

    {ns:b}:task:<id>        hash   the task row, plus owner, detached and
                                   the registration's retry token (a hash of
                                   replica, task id, node id and meta)
    {ns:b}:streams:<id>     hash   stream name -> buffer snapshot; its total
                                   is the little-endian uint64 at bytes
                                   24..31 of the snapshot header, the sealed
                                   flag bit 0 of byte 5
    {ns:b}:created          zset   task id -> created_at (every task held)
    {ns:b}:in_flight        zset   task id -> created_at (not yet ended)
    {ns:b}:finished         zset   task id -> finished_at
    {ns:b}:status           hash   task id -> status
    {ns:b}:counts           hash   status -> number of tasks
    {ns:b}:tombs            zset   task id -> when its tombstone goes
    {ns:b}:ended            channel task ids as they end (SPUBLISH on a
                                   cluster, PUBLISH on one server)
    {ns}:replica:<replica id> string a live replica's lease (PX):
                                   "<host>:<boot>:<pid>:<random> <lease ms>"
    {ns}:layout             string "2 <buckets>": the layout version and the
                                   bucket count, written by the first store
                                   that opens the namespace

The layout is the same on one server and on a cluster.  The first layout
(global ``ns:index:*`` keys, ``ns:task:{<id>}``) is refused with an error
naming it (``LEGACY_KEYS``), never read as an empty store.
"""

from __future__ import annotations

import zlib
from typing import NamedTuple

__all__ = ["BUCKETS", "LAYOUT_VERSION", "LEGACY_KEYS", "BucketKeys", "Layout"]

#: Buckets of a new namespace: enough that 3 to 16 primaries each hold a
#: fair share (and slots of live tasks can move a bucket at a time), few
#: enough that a listing's fan-out is one pipelined round trip per primary.
BUCKETS = 64
LAYOUT_VERSION = 2

#: Keys only the first layout (one server, global indexes) wrote.
LEGACY_KEYS = ("index:created", "index:in_flight", "index:counts", "index:tombs")


class BucketKeys(NamedTuple):
    """The index keys of one bucket, in the order the scripts take them."""

    created: str
    in_flight: str
    finished: str
    status: str
    counts: str
    tombs: str


class Layout:
    """Key names for one namespace and bucket count."""

    def __init__(self, namespace: str, buckets: int = BUCKETS) -> None:
        self.namespace = namespace
        self.buckets = buckets
        self.marker = f"{{{namespace}}}:layout"
        self.marker_value = f"{LAYOUT_VERSION} {buckets}"
        self.replica_prefix = f"{{{namespace}}}:replica:"
        self._tags = [f"{{{namespace}:{b}}}" for b in range(buckets)]
        self.bucket_keys = [
            BucketKeys(*(f"{tag}:{name}" for name in BucketKeys._fields)) for tag in self._tags
        ]
        self.channels = [f"{tag}:ended" for tag in self._tags]

    def bucket(self, task_id: str) -> int:
        # crc32 is the same in every process and Python version (hash() is
        # salted per process).
        return zlib.crc32(task_id.encode("utf-8", "surrogatepass")) % self.buckets

    def task_keys(self, task_id: str) -> list[str]:
        """The task's row and streams keys."""
        tag = self._tags[self.bucket(task_id)]
        return [f"{tag}:task:{task_id}", f"{tag}:streams:{task_id}"]

    def script_keys(self, task_id: str) -> list[str]:
        """The keys PUT_TASK and EXPIRE take: the task's, then its bucket's."""
        return [*self.task_keys(task_id), *self.bucket_keys[self.bucket(task_id)]]

    def channel(self, task_id: str) -> str:
        return self.channels[self.bucket(task_id)]

    def legacy_keys(self) -> list[str]:
        return [f"{self.namespace}:{name}" for name in LEGACY_KEYS]
