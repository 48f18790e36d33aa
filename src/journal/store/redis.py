"""redis://host:port/db: one journal shared by several hub replicas, on one
Redis server, a primary with replicas, or a Redis Cluster.

What is safe when:

* A registration, a state change and a result are written by one Lua script
  (Redis runs a script whole or not at all) before the call returns.  How
  long Redis keeps them is Redis's own setting: with ``appendonly yes`` and
  ``appendfsync always`` they survive a power cut; with persistence off, a
  Redis restart loses them (this store does not pretend otherwise).
* Replication is asynchronous: a primary that dies right after a write can
  take it with it in a failover.  With ``?wait_replicas=N`` every such change
  (and every claim of a task) is followed by ``WAIT N`` on the connection
  that wrote it, and returns only once N replicas have it; if they do not
  confirm within ``wait_timeout`` (default 1 s) the call raises
  StoreUnavailable (NotReplicated) saying the change is on the primary and
  may or may not survive a failover.  Stream checkpoints do not wait: a
  failover, like a crash, may lose one checkpoint interval of stream data.
* A stream's stored snapshot only moves forward.  Every stream write (a
  checkpoint, a spill, the final commit of ``complete()``) is decided inside
  its script: it lands only if the new snapshot's total (read from its header)
  is at least the stored one's, and an unsealed snapshot never replaces a
  sealed one of the same total.  An older write is skipped silently: the
  store already holds at least as much.  A value in the streams hash that is
  no snapshot (an older layout, a hand edit) counts as older than any.
* Finished tasks carry an ``EXPIRE`` of ``result_ttl``, so Redis drops them
  even when no hub is running; a sweep that gets there first leaves a
  tombstone, so "expired" stays apart from "unknown" for another
  ``result_ttl``.  A new registration of an id clears whatever streams key
  of that id was left behind.
* Each task has one owner, the hub replica that registered (or re-attached
  or adopted) it; replicas hold a lease key renewed in the background.  A
  replica's writes to a task it no longer owns are refused, so two replicas
  never both act on one task; a claim is a compare-and-set on the owner.
* One replica id is held by one live store at a time.  The default id is the
  host name (``?replica=`` overrides it): a hub restarted on its host takes
  its in-flight tasks back.  Opening finds another instance's token in the
  lease: refused with StoreLocked if that holder is alive (a second hub with
  the same id), taken over if it is known dead (a pid of this host that is
  gone, a store of this process that was closed or abandoned) or is seen not
  renewing (a renewal overdue: about one renewal period, a third of
  ``lease``, at most).  A store whose renewal finds another instance's token
  stops renewing and refuses every later write with StoreLocked.
  ``release()`` deletes the lease only while it is still ours.
* If Redis cannot be reached (or is loading, busy, read-only, or a cluster
  slot is moving or lacks a primary during a failover), calls are retried
  with backoff for ``timeout`` seconds, then fail with StoreUnavailable.  A
  call that timed out may have landed: a retried registration (same task
  id, node id and meta, through the same replica id) finds its own retry
  token on a still-PENDING task and succeeds; anything else with that id is
  a DuplicateTask.
* Every error the client raises reaches the caller as a StoreError (or
  StoreUnavailable, StoreLocked) saying what happened and whether anything
  was written.  After ``close()`` (or in a forked child) every call is
  refused with a StoreError.
* The background threads (lease renewal, the "ended" subscription) survive
  every exception: each is counted in ``background_errors`` (the last in
  ``last_background_error``), logged, and retried after a short backoff
  bounded by one renewal period; they end only on ``close()``.

Redis Cluster: ``?cluster=auto`` (the default) asks the server named in the
URL whether it is a cluster node; ``yes`` or ``no`` say so without asking.
The key layout (``journal.store._redis_keys``) is the same on one server and
on a cluster: tasks spread over buckets, each a hash tag, so every script
touches one slot; listings fan out over the buckets; "ended" messages are
published per bucket (SPUBLISH on a cluster).

URL options: see ``journal.store._redis_url`` (``OWN_OPTIONS``, and of
redis-py's own ``REDIS_PY_OPTIONS``); anything else is an InvalidArgument
naming the accepted ones.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Callable, Optional, TypeVar, cast

from journal.errors import (
    DuplicateTask,
    InvalidArgument,
    JournalError,
    OwnedElsewhere,
    StoreError,
    StoreLocked,
    StoreUnavailable,
)
from journal.store._redis_errors import NotReplicated, Refusal, judge, topology_change
from journal.store._redis_keys import BUCKETS, LAYOUT_VERSION, Layout
from journal.store._redis_lease import LIVE, LIVE_LOCK, holder_state, new_instance
from journal.store._redis_route import Route, Scripts, _Detecting, open_route
from journal.store._redis_rows import pack_row, unpack_row
from journal.store._redis_scripts import CLAIM, EXPIRE, PUT_STREAMS, PUT_TASK, RELEASE, RENEW, TAKE
from journal.store._redis_url import (
    MAX_SECONDS,
    MIN_SECONDS,
    OWN_OPTIONS,
    REDIS_PY_OPTIONS,
    TLS_OPTIONS,
    parse_url,
    redact,
)
from journal.store.base import SharedStore, Snapshotable, StoredTask, TaskRow

try:
    import redis
    from redis import exceptions as redis_errors
except ImportError:  # pragma: no cover - exercised by the missing-extra test
    redis = None  # type: ignore[assignment]  # the optional extra is missing; __init__ says so

__all__ = [
    "MAX_SECONDS", "MIN_SECONDS", "OWN_OPTIONS", "REDIS_PY_OPTIONS", "TLS_OPTIONS",
    "NotReplicated", "RedisStore",
]

log = logging.getLogger("journal")

T = TypeVar("T")

#: Task ids read per page of a listing, per bucket.
PAGE = 128


class RedisStore(SharedStore):
    """The Store protocol on Redis (one server or a cluster), shared by hub
    replicas."""

    durable = True
    shared = True

    def __init__(self, url: str, *, readonly: bool = False, result_ttl: float = 3600.0) -> None:
        if redis is None:
            raise InvalidArgument(
                f"{url} needs the redis client: pip install 'taskjournal[redis]'"
            )
        self.url = url
        self.readonly = readonly
        settings = parse_url(url)
        self.settings = settings
        self.namespace: str = settings.prefix
        #: This replica's id: the owner written into the tasks it holds.
        self.replica: str = settings.replica
        self.lease: float = settings.lease
        self.timeout: float = settings.timeout
        #: Seconds between store reads of a remote waiter, in case a
        #: published "ended" message was lost.
        self.poll_interval: float = settings.poll
        self._ttl_ms = max(1, int(result_ttl * 1000))
        self._where = settings.where
        self._pid = os.getpid()
        self._closed = threading.Event()
        try:
            # No decode_responses: every answer is bytes (redis-py types them
            # bytes | str, whence the casts of what this store reads).
            route = open_route(settings)
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"{redact(url)}: redis-py refused an option: {exc}") from None
        self._route: Route = route
        #: Exceptions the background threads (lease, "ended" listener) met
        #: and survived, and the last of them.
        self.background_errors: int = 0
        self.last_background_error: Optional[str] = None
        #: Outages (Redis unreachable) the background threads rode out,
        #: counted once each (not in ``background_errors``).
        self.background_outages: int = 0
        self._in_outage: set[str] = set()
        self._errors_lock = threading.Lock()
        #: This open's token in the lease key, and the holder that took the
        #: replica id from us (None while it is ours).
        self._instance = new_instance(self._pid)
        self._lease_ms = max(1, int(self.lease * 1000))
        self._lease_value = f"{self._instance} {self._lease_ms}"
        self._lost: Optional[str] = None
        self._threads: list[threading.Thread] = []
        self.layout = Layout(self.namespace)
        try:
            if isinstance(route, _Detecting):
                self._route = self._call(route.resolve)
            self._scripts = Scripts(self._route)
            self._put_task = self._scripts.add(PUT_TASK)
            self._put_streams = self._scripts.add(PUT_STREAMS)
            self._claim = self._scripts.add(CLAIM)
            self._expire = self._scripts.add(EXPIRE)
            self._take = self._scripts.add(TAKE)
            self._renew = self._scripts.add(RENEW)
            self._release = self._scripts.add(RELEASE)
            self._open_layout()
            self._lease_key = self.layout.replica_prefix + self.replica
            if not readonly:
                self._acquire_lease()
        except BaseException:
            self._closed.set()
            self._route.close()
            raise
        if not readonly:
            self._start("journal-redis-lease", self._keep_lease)

    @property
    def cluster(self) -> bool:
        """True on a Redis Cluster."""
        return self._route.cluster

    @property
    def _client(self) -> Any:
        return self._route.client

    # -- the key layout ------------------------------------------------------

    def _open_layout(self) -> None:
        """Read (or, opening a new namespace, write) the layout marker;
        refuse a namespace of another layout rather than misread it."""
        layout = self.layout
        marker = cast(Optional[bytes], self._call(self._client.get, layout.marker))
        if marker is None:
            legacy = [key for key in layout.legacy_keys() if self._call(self._client.exists, key)]
            if legacy:
                raise StoreError(
                    f"the namespace {self.namespace!r} on Redis at {self._where} holds a store of "
                    f"the first key layout (global indexes such as {legacy[0]!r}, one server "
                    "only), which this taskjournal does not read: drain it with the taskjournal "
                    "that wrote it (let its tasks finish and expire), or open this store under "
                    "another ?prefix="
                )
            if self.readonly:
                return  # nothing written yet: an empty store of this layout
            self._call(self._client.set, layout.marker, layout.marker_value, nx=True)
            marker = cast(Optional[bytes], self._call(self._client.get, layout.marker))
        version, _, buckets = (marker or b"").decode("utf-8", "replace").partition(" ")
        if version != str(LAYOUT_VERSION) or not buckets.isdigit() or int(buckets) < 1:
            raise StoreError(
                f"the namespace {self.namespace!r} on Redis at {self._where} says its key layout "
                f"is {marker!r}, not one this taskjournal knows (\"{LAYOUT_VERSION} <buckets>\"): "
                "a newer taskjournal wrote it, or the key was edited; nothing was read or written"
            )
        if int(buckets) != BUCKETS:
            self.layout = Layout(self.namespace, int(buckets))

    def _task_keys(self, task_id: str) -> list[str]:
        return self.layout.task_keys(task_id)

    # -- calls, retried while the server is away ------------------------------

    def _call(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self._call_within(self.timeout, call, *args, **kwargs)

    def _call_within(self, seconds: float, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``call(...)``, retried while Redis is away, loading, busy,
        read-only or redirecting for up to ``seconds``; every failure ends as
        a StoreError (StoreUnavailable when waiting longer might have helped)."""
        self._check_open()
        deadline = time.monotonic() + seconds
        pause = 0.02
        reloaded = False
        while True:
            try:
                return call(*args, **kwargs)
            except redis_errors.NoScriptError as exc:
                # The server restarted (or SCRIPT FLUSH, or a replica was
                # promoted) and forgot the scripts: load them and go again at
                # once; twice is an error.
                if reloaded:
                    raise StoreError(
                        f"Redis at {self._where} lost this store's Lua scripts again right "
                        f"after they were loaded ({exc}); nothing was written"
                    ) from None
                reloaded = True
                try:
                    self._scripts.load()
                except Exception as load_error:  # noqa: BLE001 - judged below
                    retry, error = judge(load_error, self._where, seconds)
                    if not retry or self._closed.is_set() or time.monotonic() + pause > deadline:
                        raise error from None
                    reloaded = False
                    time.sleep(pause)
                    pause = min(pause * 2, 0.5)
                continue
            except Exception as exc:  # noqa: BLE001 - every client error is translated
                retry, error = judge(exc, self._where, seconds)
                if not retry or self._closed.is_set() or time.monotonic() + pause > deadline:
                    if self._closed.is_set() and retry:
                        error = StoreError(self._closed_message())
                    raise error from (None if isinstance(exc, JournalError) else exc)
                self._route.after_error(exc)  # a failover or a slot on the move
            time.sleep(pause)
            pause = min(pause * 2, 0.5)

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise StoreError(self._closed_message())
        if os.getpid() != self._pid:
            raise StoreError(
                f"this Redis store of {self._where} was opened by process {self._pid}; a forked "
                "child must open a store (a TaskJournal) of its own, with its own replica id"
            )

    def _closed_message(self) -> str:
        return f"the Redis store {redact(self.url)} is closed; open a new one"

    def _fan_out(self, command: str, keys: Iterable[str], *args: Any, **kwargs: Any) -> list[Any]:
        """``command`` on each key (one per bucket), in one pipeline: one
        round trip per server."""
        names = list(keys)

        def fetch() -> list[Any]:
            pipe = self._route.pipeline()
            for key in names:
                getattr(pipe, command)(key, *args, **kwargs)
            return cast(list[Any], pipe.execute())

        return self._call(fetch) if names else []

    # -- reading -----------------------------------------------------------

    def load_in_flight(self) -> list[StoredTask]:
        """Every in-flight task, whoever owns it.  Reading claims nothing: a
        hub replica that opens takes its tasks with ``adopt_orphans``."""
        return self._in_flight()

    def _in_flight_ids(self) -> list[str]:
        pages = self._fan_out("zrange", (b.in_flight for b in self.layout.bucket_keys), 0, -1)
        return [raw.decode() for page in pages for raw in page]

    def _in_flight(self, ids: Optional[list[str]] = None) -> list[StoredTask]:
        found = self._get_many(self._in_flight_ids() if ids is None else ids)
        return [item for item in found if item is not None]

    def adopt_orphans(self, holding: Iterable[str] = (), *, own: bool = True) -> list[StoredTask]:
        """Claim, detached, every in-flight task whose owner is gone, and
        with ``own`` those whose owner is this replica, except those in
        ``holding`` (already held here)."""
        if self.readonly:
            return []
        held = set(holding)
        ids = [task_id for task_id in self._in_flight_ids() if task_id not in held]
        if not ids:
            return []
        owners = self._owners(ids)
        live = self._live_replicas({owner for owner in owners.values() if owner})
        claims = []
        for task_id in ids:
            owner = owners.get(task_id)
            if owner is not None and owner != self.replica and owner in live:
                continue
            if owner == self.replica and not own:
                continue
            # Taken only if its owner is still the one found without a lease.
            claims.append((self._claim, self._task_keys(task_id)[:1],
                           [self.replica, owner or "", "1"]))
        answers = self._call(self._scripts.run_many, claims, True) if claims else []
        adopted = [keys[0] for (_, keys, _), answer in zip(claims, answers) if answer == b"ok"]
        by_key = {self._task_keys(task_id)[0]: task_id for task_id in ids}
        found = self._get_many([by_key[key] for key in adopted])
        return [item for item in found if item is not None]

    def claim(self, task_id: str) -> StoredTask:
        """Take ownership of an in-flight task (for ``reattach``): allowed
        when its owner is this replica, is gone, or holds it detached."""
        self._check_writable()
        keys = self._task_keys(task_id)[:1]
        answer = self._call(self._scripts.run, self._claim, keys, [self.replica, "", "0"], True).decode()
        if answer not in ("ok", "gone", "ended") and answer not in self._live_replicas({answer}):
            # Its owner holds no lease: take it, if it is still that owner's.
            owner = answer
            answer = self._call(self._scripts.run, self._claim, keys,
                                [self.replica, owner, "0"], True).decode()
        if answer == "ok":
            stored = self.get(task_id)
            if stored is not None:
                return stored
            answer = "gone"
        if answer in ("gone", "ended"):
            raise StoreError(f"task {task_id!r} {answer} while being claimed; read it again")
        raise OwnedElsewhere(
            f"task {task_id!r} is owned by hub replica {answer!r}, whose lease is alive; "
            "its node should re-attach there, or once that replica is gone",
            answer,
        )

    def owners(self, task_ids: Iterable[str]) -> dict[str, Optional[str]]:
        """The owner replica of each task still in the store."""
        return self._owners(list(task_ids))

    def _owners(self, ids: list[str]) -> dict[str, Optional[str]]:
        answers = self._fan_out("hget", (self._task_keys(task_id)[0] for task_id in ids), "owner")
        return {task_id: None if raw is None else raw.decode() for task_id, raw in zip(ids, answers)}

    def _live_replicas(self, replicas: set[str]) -> set[str]:
        names = sorted(replicas)
        if not names:
            return set()
        # Every lease key shares the tag {ns}: one slot, one MGET.
        alive = self._call(self._client.mget, [self.layout.replica_prefix + name for name in names])
        return {name for name, value in zip(names, alive) if value is not None}

    def get(self, task_id: str) -> Optional[StoredTask]:
        return self._get_many([task_id])[0]

    def _get_many(self, ids: list[str]) -> list[Optional[StoredTask]]:
        def fetch() -> list[Any]:
            pipe = self._route.pipeline()
            for task_id in ids:
                task, streams = self._task_keys(task_id)
                pipe.hgetall(task)
                pipe.hgetall(streams)
            return cast(list[Any], pipe.execute())

        found: list[Optional[StoredTask]] = []
        answers = self._call(fetch) if ids else []
        for n in range(len(ids)):
            fields, streams = answers[2 * n], answers[2 * n + 1]
            if not fields:
                found.append(None)
                continue
            owner = fields.get(b"owner")
            found.append(StoredTask(
                unpack_row(fields),
                {name.decode(): snapshot for name, snapshot in streams.items()},
                None if owner is None else owner.decode(),
            ))
        return found

    def get_stream(self, task_id: str, name: str) -> Optional[bytes]:
        return cast(Optional[bytes], self._call(self._client.hget, self._task_keys(task_id)[1], name))

    def tombstoned(self, task_id: str) -> bool:
        tombs = self.layout.bucket_keys[self.layout.bucket(task_id)].tombs
        return self._call(self._client.zscore, tombs, task_id) is not None

    def count_by_status(self) -> dict[str, int]:
        tally: dict[str, int] = {}
        for counts in self._fan_out("hgetall", (b.counts for b in self.layout.bucket_keys)):
            for status, n in cast(dict[bytes, bytes], counts).items():
                tally[status.decode()] = tally.get(status.decode(), 0) + int(n)
        return {status: n for status, n in tally.items() if n > 0}

    def list_tasks(
        self, status: Optional[str] = None, node_id: Optional[str] = None, limit: Optional[int] = None
    ) -> list[TaskRow]:
        rows: list[TaskRow] = []
        for row in self._rows_newest_first():
            if (status is None or row.status == status) and (node_id is None or row.node_id == node_id):
                rows.append(row)
                if limit is not None and len(rows) >= limit:
                    break
        return rows

    def _rows_newest_first(self) -> Iterator[TaskRow]:
        """Every task, newest first: each bucket's ``created`` index read a
        page at a time, the buckets merged by creation time."""
        keys = [b.created for b in self.layout.bucket_keys]
        first = self._fan_out("zrevrange", keys, 0, PAGE - 1, withscores=True)

        def bucket(key: str, page: list[tuple[bytes, float]]) -> Iterator[tuple[float, str]]:
            start = 0
            while page:
                for raw, score in page:
                    yield -score, raw.decode()
                if len(page) < PAGE:
                    return
                start += PAGE
                page = self._call(self._client.zrevrange, key, start, start + PAGE - 1,
                                  withscores=True)

        merged = heapq.merge(*(bucket(key, page) for key, page in zip(keys, first)))
        while True:
            ids = [task_id for _, task_id in _take(merged, 256)]
            if not ids:
                return
            for item in self._get_many(ids):
                if item is not None:  # expired by Redis, not yet swept
                    yield item.row

    def in_flight_owned_elsewhere(self) -> list[StoredTask]:
        """In-flight tasks held by other replicas (for ``in_flight()``); the
        snapshots of this replica's own are not read: it holds them."""
        owners = self._owners(self._in_flight_ids())
        others = [task_id for task_id, owner in owners.items() if owner != self.replica]
        return [item for item in self._in_flight(others) if item.owner != self.replica]

    # -- writing -----------------------------------------------------------

    def put_task(
        self, row: TaskRow, streams: Optional[Mapping[str, Snapshotable]] = None, *, new: bool = False
    ) -> None:
        self._check_writable()
        try:
            args: list[Any] = [
                "1" if new else "0", self.replica, self._ttl_ms,
                # Tells a retried registration whose first try landed from a
                # duplicate: the same for the same registration through this
                # replica id, whenever it is retried.
                self._registration_token(row) if new else "-",
                pack_row(row), self._route.publish, self.layout.channel(row.task_id),
            ]
            keys = self.layout.script_keys(row.task_id)
        except UnicodeEncodeError as exc:
            raise InvalidArgument(f"task {row.task_id!r} cannot be stored: {exc}") from None
        for name, buf in (streams or {}).items():
            args += (name, buf.snapshot())
        try:
            self._call(self._scripts.run, self._put_task, keys, args, True)
        except Refusal as exc:
            raise self._refused(row.task_id, str(exc)) from None

    def _registration_token(self, row: TaskRow) -> str:
        """What the caller passed (task id, node id, meta) and this replica
        id, hashed; not created_at or deadline, which the journal computes
        anew on each call."""
        meta = "\x01" if row.meta_json is None else row.meta_json
        text = "\x00".join((self.replica, row.task_id, row.node_id, meta))
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()

    def _refused(self, task_id: str, reply: str) -> Exception:
        word, _, rest = reply.partition(" ")
        if word == "DUPLICATE":
            return DuplicateTask(
                f"task {task_id!r} is already registered (on node {rest!r}); "
                "use a new id for a new task"
            )
        if word == "OWNED":
            return OwnedElsewhere(
                f"task {task_id!r} is now owned by hub replica {rest!r}; "
                "this replica no longer acts on it",
                rest,
            )
        return StoreError(f"Redis refused the write of task {task_id!r}: {reply}")

    def put_streams(self, items: Iterable[tuple[str, str, bytes]]) -> None:
        self._check_writable()
        by_task: dict[str, list[Any]] = {}
        for task_id, name, snapshot in items:
            by_task.setdefault(task_id, []).extend((name, snapshot))
        if not by_task:
            return

        answers = self._call(self._scripts.run_many, [
            (self._put_streams, self._task_keys(task_id), [self.replica, *pairs])
            for task_id, pairs in by_task.items()
        ])
        refused = [task_id for task_id, answer in zip(by_task, answers) if answer == -1]
        if refused:
            raise StoreError(
                f"{len(refused)} stream checkpoint(s) refused: tasks now owned by another "
                f"replica ({', '.join(map(repr, refused[:3]))})"
            )

    def expire_finished(self, cutoff: float, tombstone_until: float) -> list[str]:
        self._check_writable()
        expired: list[str] = []
        buckets = self.layout.bucket_keys
        while True:
            pages = self._fan_out("zrangebyscore", (b.finished for b in buckets), "-inf", cutoff,
                                  start=0, num=500)
            ids = [raw.decode() for page in pages for raw in page]
            if not ids:
                return expired
            self._call(self._scripts.run_many, [
                (self._expire, self.layout.script_keys(task_id), [task_id, repr(tombstone_until)])
                for task_id in ids
            ])
            expired += ids

    def forget_tombstones(self, now: float) -> int:
        self._check_writable()
        gone = self._fan_out("zremrangebyscore", (b.tombs for b in self.layout.bucket_keys), "-inf", now)
        return sum(int(n) for n in gone)

    def _tallies(self) -> list[dict[str, int]]:
        tallies = []
        for statuses in self._fan_out("hvals", (b.status for b in self.layout.bucket_keys)):
            tally: dict[str, int] = {}
            for raw in statuses:
                tally[raw.decode()] = tally.get(raw.decode(), 0) + 1
            tallies.append(tally)
        return tallies

    def check(self) -> list[str]:
        problems = []
        counts = self._fan_out("hgetall", (b.counts for b in self.layout.bucket_keys))
        for n, (tally, stored) in enumerate(zip(self._tallies(), counts)):
            said = {k.decode(): int(v) for k, v in stored.items() if int(v)}
            if said != tally:
                problems.append(f"status counts {said} of bucket {n} disagree with its status "
                                f"index {tally}")
        return problems

    def repair(self) -> None:
        self._check_writable()
        for keys, tally in zip(self.layout.bucket_keys, self._tallies()):
            def rewrite(key: str = keys.counts, tally: dict[str, int] = tally) -> None:
                pipe = self._client.pipeline(transaction=True)
                pipe.delete(key)
                if tally:
                    # dict is invariant: redis-py's Mapping of its own key and value unions.
                    pipe.hset(key, mapping=cast("Mapping[Any, Any]", tally))
                pipe.execute()

            self._call(rewrite)

    # -- replicas ----------------------------------------------------------

    def _acquire_lease(self) -> None:
        """Take this replica id's lease, or raise StoreLocked if another
        live instance holds it (see the module docstring)."""
        expected = ""
        first_seen: Optional[tuple[str, int, float]] = None  # holder, PTTL, when
        while True:
            answer = self._call(self._scripts.run, self._take, [self._lease_key],
                                [self._lease_value, self._lease_ms, expected])
            if answer[0] == 1:
                break
            holder = answer[1].decode("utf-8", "replace")
            pttl = int(answer[2])
            now = time.monotonic()
            if first_seen is None or first_seen[0] != holder:
                first_seen = (holder, pttl, now)
            verdict = holder_state(holder, pttl, first_seen, now, self._pid, self._lease_ms)
            if verdict == "dead":
                expected = holder  # take it over, if it is still that one
                continue
            if verdict == "live":
                raise StoreLocked(
                    f"hub replica id {self.replica!r} on Redis at {self._where} is already "
                    f"held by {holder.split(' ')[0]!r}, which keeps its lease alive: another "
                    "hub with the same id is running (the default id is the host name); give "
                    "each hub its own id (?replica=), or close the other one first"
                )
            expected = ""
            time.sleep(0.05)
        with LIVE_LOCK:
            LIVE.add(self._instance)

    def _renew_lease(self) -> None:
        answer = self._call_within(self.lease / 3, self._scripts.run, self._renew,
                                   [self._lease_key], [self._lease_value, self._lease_ms])
        if answer[0] != 1:
            holder = answer[1].decode("utf-8", "replace")
            self._lost = holder.split(" ")[0]
            with LIVE_LOCK:
                LIVE.discard(self._instance)
            log.error(
                "hub replica id %r was taken over by %r: this store stops renewing its "
                "lease and refuses writes", self.replica, self._lost,
            )

    def _keep_lease(self) -> None:
        period = self.lease / 3
        wait, pause = period, min(0.05, period)
        while not self._closed.wait(wait) and self._lost is None:
            try:
                self._renew_lease()
            except Exception as exc:  # noqa: BLE001 - survives everything, counted
                if self._closed.is_set():
                    return
                self._background_error("lease renewal", exc)
                # Try again soon, never later than one renewal period: the
                # lease must be renewed promptly once Redis answers.
                wait, pause = pause, min(pause * 2, period)
                continue
            self._background_ok("lease renewal")
            wait, pause = period, min(0.05, period)

    def _background_error(self, what: str, exc: BaseException) -> None:
        """Count and log what a background thread survived.  Redis being
        away (or read-only, or loading, or a cluster moving slots or failing
        over) is an outage, not an error: every
        foreground call reports it already, and a thread retrying through it
        would count the outage's length; outages are counted once each, in
        ``background_outages``."""
        outage = isinstance(exc, StoreUnavailable) or topology_change(exc) or (
            isinstance(exc, (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError))
            and not isinstance(exc, (redis_errors.AuthenticationError,
                                     redis_errors.AuthorizationError))
        )
        with self._errors_lock:
            if outage:
                first = what not in self._in_outage
                self._in_outage.add(what)
                if first:
                    self.background_outages += 1
            else:
                first = True
                self.background_errors += 1
                self.last_background_error = f"{what}: {type(exc).__name__}: {exc}"
        if first:
            log.warning("Redis store %s failed, will retry: %s: %s", what, type(exc).__name__, exc)

    def _background_ok(self, what: str) -> None:
        if what in self._in_outage:
            with self._errors_lock:
                self._in_outage.discard(what)

    def release(self) -> None:
        """Give up this replica's lease now (a clean shutdown), so that
        others may adopt its in-flight tasks without waiting it out.  Only
        our own lease is deleted, never one another instance took."""
        if self.readonly or self._lost is not None:
            return
        try:
            self._call_within(min(self.timeout, 1.0), self._scripts.run, self._release,
                              [self._lease_key], [self._lease_value])
        except StoreError:
            pass  # the lease runs out by itself

    def on_ended(self, callback: Callable[[Optional[str]], None]) -> None:
        """Call ``callback(task_id)`` from a background thread whenever any
        replica ends a task, and ``callback(None)`` after the subscription
        was broken (messages may have been missed)."""
        self._start("journal-redis-ended", self._listen, callback)

    def _listen(self, callback: Callable[[Optional[str]], None]) -> None:
        pause = 0.02
        route = self._route
        data_types = ("message", "smessage")
        while not self._closed.is_set():
            pubsub = None
            try:
                # redis-py leaves pubsub() unannotated.
                pubsub = self._client.pubsub(ignore_subscribe_messages=False)
                route.subscribe(pubsub, self.layout.channels)
                callback(None)  # anything that ended while unsubscribed
                self._background_ok("the ended-task subscription")
                pause = 0.02
                while not self._closed.is_set():
                    message = route.next_message(pubsub, 0.2)
                    if message is None:
                        continue
                    kind = message.get("type")
                    if isinstance(kind, bytes):
                        kind = kind.decode()
                    if kind in data_types:
                        try:
                            callback(message["data"].decode("utf-8", "replace"))
                        except Exception as exc:  # noqa: BLE001 - one waiter's bug
                            self._background_error("an ended-task callback", exc)
                    elif kind in ("sunsubscribe", "unsubscribe"):
                        # A slot moved away (the server unsubscribed us):
                        # subscribe again where the slots are now.
                        break
            except Exception as exc:  # noqa: BLE001 - survives everything, counted
                if self._closed.is_set():
                    return
                self._background_error("the ended-task subscription", exc)
                route.after_error(exc)
                self._closed.wait(pause)
                pause = min(pause * 2, 0.5)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # noqa: BLE001 - closing a broken connection
                        pass

    def _start(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _check_writable(self) -> None:
        self._check_open()
        if self.readonly:
            raise StoreError(f"{redact(self.url)} was opened read-only")
        if self._lost is not None:
            raise StoreLocked(
                f"hub replica id {self.replica!r} on Redis at {self._where} was taken over by "
                f"{self._lost!r} (another process opened the same id): this store no longer "
                "writes; close it, and give each hub its own replica id"
            )

    def close(self) -> None:
        """Stop the background threads and disconnect.  The lease is left to
        run out (``release()`` gives it up first on a clean shutdown).
        Idempotent; every later call raises StoreError."""
        self._closed.set()
        with LIVE_LOCK:
            LIVE.discard(self._instance)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()
        try:
            self._route.close()
        except Exception:  # noqa: BLE001 - disconnecting only
            pass


def _take(items: Iterator[T], n: int) -> list[T]:
    out = []
    for item in items:
        out.append(item)
        if len(out) >= n:
            break
    return out
