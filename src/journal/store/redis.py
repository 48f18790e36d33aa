"""redis://host:port/db: one journal shared by several hub replicas.

What is safe when:

* A registration, a state change and a result are written by one Lua script
  (Redis runs a script whole or not at all) before the call returns.  How
  long Redis keeps them is Redis's own setting: with ``appendonly yes`` and
  ``appendfsync always`` they survive a power cut; with persistence off, a
  Redis restart loses them (this store does not pretend otherwise).
* Finished tasks carry an ``EXPIRE`` of ``result_ttl``, so Redis drops them
  even when no hub is running; a sweep that gets there first leaves a
  tombstone, so "expired" stays apart from "unknown" for another
  ``result_ttl``.
* Each task has one owner, the hub replica that registered (or re-attached
  or adopted) it; replicas hold a lease key renewed in the background.  A
  replica's writes to a task it no longer owns are refused, so two replicas
  never both act on one task.
* If Redis cannot be reached, calls are retried with backoff for
  ``timeout`` seconds, then fail with StoreUnavailable.

Key layout, under a namespace ``ns`` (``?prefix=``, default ``taskjournal``).
A task's keys share the hash tag ``{<task id>}``::

    {ns}:task:{<id>}            hash   the task row, plus owner, detached and
                                       the registration's retry token
    {ns}:task:{<id>}:streams    hash   stream name -> buffer snapshot
    {ns}:index:created          zset   task id -> created_at (every task held)
    {ns}:index:in_flight        zset   task id -> created_at (not yet ended)
    {ns}:index:finished         zset   task id -> finished_at
    {ns}:index:status           hash   task id -> status
    {ns}:index:counts           hash   status -> number of tasks
    {ns}:index:tombs            zset   task id -> when its tombstone goes
    {ns}:replica:<replica id>   string a live replica's lease (PX)
    {ns}:ended                  channel task ids, published as they end

The index keys are shared by all tasks, so this layout runs on one Redis
server (or a primary with replicas), not on Redis Cluster.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Callable, Optional, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from journal.errors import (
    DuplicateTask,
    InvalidArgument,
    OwnedElsewhere,
    StoreError,
    StoreUnavailable,
)
from journal.store._batching import Batcher, Job
from journal.store.base import Snapshotable, StoredTask, TaskRow

try:
    import redis
    from redis import exceptions as redis_errors
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError:  # pragma: no cover - exercised by the missing-extra test
    redis = None

__all__ = ["RedisStore"]

T = TypeVar("T")

_NAMESPACE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

# The hash fields of a task row, in the order _pack_row() writes them.
_ROW_FIELDS = (*TaskRow._fields, "result_kind")

# KEYS: task, streams.  ARGV: new, me, namespace, ttl_ms, registration token,
# the row (_pack_row), then stream name/snapshot pairs.  The index keys are
# named here from the namespace: few arguments keep a registration cheap to
# send (redis-py spends most of a call's time packing them).
_PUT_TASK = """
local task, streams = KEYS[1], KEYS[2]
local new, me, ns, ttl, token = ARGV[1] == '1', ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local names = {$NAMES}
local row, set, gone, at = {}, {}, {}, 1
for i, name in ipairs(names) do
  local colon = string.find(ARGV[6], ':', at, true)
  local size = tonumber(string.sub(ARGV[6], at, colon - 1))
  if size < 0 then
    gone[#gone + 1] = name
    at = colon + 1
  else
    row[name] = string.sub(ARGV[6], colon + 1, colon + size)
    set[#set + 1] = name
    set[#set + 1] = row[name]
    at = colon + 1 + size
  end
end
local id, status = row['task_id'], row['status']
if redis.call('EXISTS', task) == 1 then
  local owner = redis.call('HGET', task, 'owner')
  if new then
    -- A retry of this very registration (its reply was lost) succeeds.
    if redis.call('HGET', task, 'registration') == token then
      return 'again'
    end
    return redis.error_reply('DUPLICATE ' .. (redis.call('HGET', task, 'node_id') or ''))
  end
  if owner and owner ~= me then
    return redis.error_reply('OWNED ' .. owner)
  end
end
redis.call('HSET', task, 'owner', me, 'detached', '0', unpack(set))
if #gone > 0 then redis.call('HDEL', task, unpack(gone)) end
if new then redis.call('HSET', task, 'registration', token) end
for i = 7, #ARGV, 2 do
  redis.call('HSET', streams, ARGV[i], ARGV[i + 1])
end
local index = ns .. ':index:'
local old = redis.call('HGET', index .. 'status', id)
if old then redis.call('HINCRBY', index .. 'counts', old, -1) end
redis.call('HINCRBY', index .. 'counts', status, 1)
redis.call('HSET', index .. 'status', id, status)
redis.call('ZADD', index .. 'created', row['created_at'], id)
if new then redis.call('ZREM', index .. 'tombs', id) end
if row['finished_at'] then
  redis.call('ZREM', index .. 'in_flight', id)
  redis.call('ZADD', index .. 'finished', row['finished_at'], id)
  redis.call('PEXPIRE', task, ttl)
  redis.call('PEXPIRE', streams, ttl)
  redis.call('PUBLISH', ns .. ':ended', id)
else
  redis.call('ZADD', index .. 'in_flight', row['created_at'], id)
end
return 'ok'
""".replace("$NAMES", ", ".join(f"'{name}'" for name in _ROW_FIELDS))

# KEYS: task, streams.  ARGV: me, then name/snapshot pairs.
# 0: the task is gone (expired); -1: another replica owns it; 1: written.
_PUT_STREAMS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then return -1 end
for i = 2, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
local left = redis.call('PTTL', KEYS[1])
if left > 0 then redis.call('PEXPIRE', KEYS[2], left) end
return 1
"""

# KEYS: task.  ARGV: me, replica key prefix, detached ('1'/'0').
# Returns 'ok' when the caller now owns the task, 'gone', 'ended', or the
# live owner's id.
_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'gone' end
if redis.call('HEXISTS', KEYS[1], 'finished_at') == 1 then return 'ended' end
local owner = redis.call('HGET', KEYS[1], 'owner')
local free = (not owner) or owner == ARGV[1]
  or redis.call('HGET', KEYS[1], 'detached') == '1'
  or redis.call('EXISTS', ARGV[2] .. owner) == 0
if not free then return owner end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'detached', ARGV[3])
return 'ok'
"""

# KEYS: task, streams, created, in_flight, finished, status, counts, tombs
# ARGV: id, tombstone until
_EXPIRE = """
local id = ARGV[1]
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], id)
redis.call('ZREM', KEYS[4], id)
redis.call('ZREM', KEYS[5], id)
local old = redis.call('HGET', KEYS[6], id)
if old then
  redis.call('HDEL', KEYS[6], id)
  redis.call('HINCRBY', KEYS[7], old, -1)
end
redis.call('ZADD', KEYS[8], ARGV[2], id)
return 1
"""


class RedisStore:
    """The Store protocol on a Redis server, shared by hub replicas."""

    durable = True
    shared = True

    def __init__(self, url: str, *, readonly: bool = False, result_ttl: float = 3600.0) -> None:
        if redis is None:
            raise InvalidArgument(
                f"{url} needs the redis client: pip install 'taskjournal[redis]'"
            )
        self.url = url
        self.readonly = readonly
        options = _parse_url(url)
        self.namespace: str = options["prefix"]
        #: This replica's id: the owner written into the tasks it holds.
        self.replica: str = options["replica"]
        self.lease: float = options["lease"]
        self.timeout: float = options["timeout"]
        #: Seconds between store reads of a remote waiter, in case a
        #: published "ended" message was lost.
        self.poll_interval: float = options["poll"]
        self._ttl_ms = max(1, int(result_ttl * 1000))
        self._client = redis.Redis.from_url(
            options["server_url"],
            socket_timeout=min(self.timeout, 5.0),
            socket_connect_timeout=min(self.timeout, 5.0),
            # Retries are ours (_call), bounded by ``timeout``; redis-py's own
            # would sleep with backoff inside each attempt.
            retry=Retry(NoBackoff(), 0),
        )
        self._where = options["where"]
        ns = self.namespace
        self._index = [f"{ns}:index:{name}" for name in
                       ("created", "in_flight", "finished", "status", "counts", "tombs")]
        self._replica_prefix = f"{ns}:replica:"
        self._lease_key = self._replica_prefix + self.replica
        self._channel = f"{ns}:ended"
        self._scripts = _Scripts(self._client)
        self._put_task = self._scripts.add(_PUT_TASK)
        self._put_streams = self._scripts.add(_PUT_STREAMS)
        self._claim = self._scripts.add(_CLAIM)
        self._expire = self._scripts.add(_EXPIRE)
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._call(self._client.ping)
        if not readonly:
            self._renew_lease()
            self._start("journal-redis-lease", self._keep_lease)

    # -- keys ----------------------------------------------------------------

    def _task_keys(self, task_id: str) -> list[str]:
        task = f"{self.namespace}:task:{{{task_id}}}"
        return [task, task + ":streams"]

    # -- calls, retried while the server is away ------------------------------

    def _call(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        deadline = time.monotonic() + self.timeout
        pause = 0.02
        while True:
            try:
                try:
                    return call(*args, **kwargs)
                except redis_errors.NoScriptError:
                    # The server restarted and forgot the scripts: load them
                    # and go again at once.
                    self._scripts.load()
                    return call(*args, **kwargs)
            except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
                if self._closed.is_set() or time.monotonic() + pause > deadline:
                    raise StoreUnavailable(
                        f"Redis at {self._where} did not answer for {self.timeout:g} s "
                        f"({exc}); nothing was confirmed: retry when Redis is back"
                    ) from exc
            time.sleep(pause)
            pause = min(pause * 2, 0.5)

    # -- reading -----------------------------------------------------------

    def load_in_flight(self) -> list[StoredTask]:
        """Claim and return the in-flight tasks nobody live holds: this
        replica's own (after a restart with the same ``replica`` id) and
        those of replicas whose lease ran out.  A read-only open
        (inspection) claims nothing and sees them all."""
        if self.readonly:
            return self._in_flight()
        return self.adopt_orphans()

    def _in_flight_ids(self) -> list[str]:
        return [raw.decode() for raw in self._call(self._client.zrange, self._index[1], 0, -1)]

    def _in_flight(self, ids: Optional[list[str]] = None) -> list[StoredTask]:
        found = self._get_many(self._in_flight_ids() if ids is None else ids)
        return [item for item in found if item is not None]

    def adopt_orphans(self, holding: Iterable[str] = ()) -> list[StoredTask]:
        """Claim, detached, every in-flight task whose owner is gone or is
        this replica, except those in ``holding`` (already held here)."""
        if self.readonly:
            return []
        held = set(holding)
        ids = [task_id for task_id in self._in_flight_ids() if task_id not in held]
        if not ids:
            return []
        owners = self._owners(ids)
        live = self._live_replicas({owner for owner in owners.values() if owner})
        adopted = []
        for task_id in ids:
            owner = owners.get(task_id)
            if owner is not None and owner != self.replica and owner in live:
                continue
            if self._call(self._scripts.run, self._claim, self._task_keys(task_id)[:1],
                          [self.replica, self._replica_prefix, "1"]) == b"ok":
                adopted.append(task_id)
        found = self._get_many(adopted)
        return [item for item in found if item is not None]

    def claim(self, task_id: str) -> StoredTask:
        """Take ownership of an in-flight task (for ``reattach``): allowed
        when its owner is this replica, is gone, or holds it detached."""
        self._check_writable()
        answer = self._call(self._scripts.run, self._claim, self._task_keys(task_id)[:1],
                            [self.replica, self._replica_prefix, "0"]).decode()
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
        def fetch() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for task_id in ids:
                pipe.hget(self._task_keys(task_id)[0], "owner")
            return pipe.execute()

        answers = self._call(fetch) if ids else []
        return {task_id: None if raw is None else raw.decode() for task_id, raw in zip(ids, answers)}

    def _live_replicas(self, replicas: set[str]) -> set[str]:
        names = sorted(replicas)
        if not names:
            return set()
        alive = self._call(self._client.mget, [self._replica_prefix + name for name in names])
        return {name for name, value in zip(names, alive) if value is not None}

    def get(self, task_id: str) -> Optional[StoredTask]:
        return self._get_many([task_id])[0]

    def _get_many(self, ids: list[str]) -> list[Optional[StoredTask]]:
        def fetch() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for task_id in ids:
                task, streams = self._task_keys(task_id)
                pipe.hgetall(task)
                pipe.hgetall(streams)
            return pipe.execute()

        found: list[Optional[StoredTask]] = []
        answers = self._call(fetch) if ids else []
        for n in range(len(ids)):
            fields, streams = answers[2 * n], answers[2 * n + 1]
            if not fields:
                found.append(None)
                continue
            owner = fields.get(b"owner")
            found.append(StoredTask(
                _row(fields),
                {name.decode(): snapshot for name, snapshot in streams.items()},
                None if owner is None else owner.decode(),
            ))
        return found

    def get_stream(self, task_id: str, name: str) -> Optional[bytes]:
        return self._call(self._client.hget, self._task_keys(task_id)[1], name)

    def tombstoned(self, task_id: str) -> bool:
        return self._call(self._client.zscore, self._index[5], task_id) is not None

    def count_by_status(self) -> dict[str, int]:
        counts = self._call(self._client.hgetall, self._index[4])
        return {status.decode(): int(n) for status, n in counts.items() if int(n) > 0}

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

    def _rows_newest_first(self, page: int = 256) -> Iterator[TaskRow]:
        start = 0
        while True:
            ids = self._call(self._client.zrevrange, self._index[0], start, start + page - 1)
            if not ids:
                return
            for item in self._get_many([raw.decode() for raw in ids]):
                if item is not None:  # expired by Redis, not yet swept
                    yield item.row
            start += page

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
        args: list[Any] = [
            "1" if new else "0", self.replica, self.namespace, self._ttl_ms,
            # Tells a retried registration whose first try landed from a duplicate.
            uuid.uuid4().hex if new else "-",
            _pack_row(row),
        ]
        for name, buf in (streams or {}).items():
            args += (name, buf.snapshot())
        try:
            self._call(self._scripts.run, self._put_task, self._task_keys(row.task_id), args)
        except redis_errors.ResponseError as exc:
            raise self._refused(row.task_id, str(exc)) from None

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
        while True:
            ids = self._call(self._client.zrangebyscore, self._index[2], "-inf", cutoff,
                             start=0, num=500)
            if not ids:
                return expired
            for raw in ids:
                task_id = raw.decode()
                self._call(self._scripts.run, self._expire, self._task_keys(task_id) + self._index,
                           [task_id, repr(tombstone_until)])
                expired.append(task_id)

    def forget_tombstones(self, now: float) -> int:
        self._check_writable()
        return int(self._call(self._client.zremrangebyscore, self._index[5], "-inf", now))

    def check(self) -> list[str]:
        statuses = self._call(self._client.hvals, self._index[3])
        tally: dict[str, int] = {}
        for raw in statuses:
            tally[raw.decode()] = tally.get(raw.decode(), 0) + 1
        counts = {k: v for k, v in self.count_by_status().items() if v}
        if counts != tally:
            return [f"status counts {counts} disagree with the status index {tally}"]
        return []

    def repair(self) -> None:
        self._check_writable()
        statuses = self._call(self._client.hvals, self._index[3])
        tally: dict[str, int] = {}
        for raw in statuses:
            tally[raw.decode()] = tally.get(raw.decode(), 0) + 1

        def rewrite() -> None:
            pipe = self._client.pipeline(transaction=True)
            pipe.delete(self._index[4])
            if tally:
                pipe.hset(self._index[4], mapping=tally)
            pipe.execute()

        self._call(rewrite)

    # -- replicas ----------------------------------------------------------

    def _renew_lease(self) -> None:
        self._call(self._client.set, self._lease_key, f"{socket.gethostname()}:{os.getpid()}",
                   px=max(1, int(self.lease * 1000)))

    def _keep_lease(self) -> None:
        while not self._closed.wait(self.lease / 3):
            try:
                self._renew_lease()
            except StoreError:
                pass  # Redis is away; tried again next round

    def release(self) -> None:
        """Give up this replica's lease now (a clean shutdown), so that
        others may adopt its in-flight tasks without waiting it out."""
        if not self.readonly:
            try:
                self._client.delete(self._lease_key)
            except redis_errors.RedisError:
                pass  # the lease runs out by itself

    def on_ended(self, callback: Callable[[Optional[str]], None]) -> None:
        """Call ``callback(task_id)`` from a background thread whenever any
        replica ends a task, and ``callback(None)`` after the subscription
        was broken (messages may have been missed)."""
        self._start("journal-redis-ended", self._listen, callback)

    def _listen(self, callback: Callable[[Optional[str]], None]) -> None:
        pause = 0.02
        while not self._closed.is_set():
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self._channel)
                callback(None)  # anything that ended while unsubscribed
                pause = 0.02
                while not self._closed.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    if message is not None and message.get("type") == "message":
                        callback(message["data"].decode())
            except redis_errors.RedisError:
                self._closed.wait(pause)
                pause = min(pause * 2, 0.5)
            finally:
                try:
                    pubsub.close()
                except redis_errors.RedisError:
                    pass

    def _start(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _check_writable(self) -> None:
        if self.readonly:
            raise StoreError(f"{self.url} was opened read-only")

    def close(self) -> None:
        self._closed.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()
        self._client.close()


class _Scripts(Batcher):
    """The store's Lua scripts, run by SHA; concurrent calls share a round trip.

    Calls arriving together go out as one pipeline (each script still runs
    whole on its own), the way SQLite's writers share a commit: on a slow
    network the round trip, not Redis, is the cost.  See ``_batching``.
    """

    limit = 256

    def __init__(self, client: Any) -> None:
        super().__init__()
        self._client = client
        self._sources: dict[str, str] = {}

    def add(self, source: str) -> str:
        sha = hashlib.sha1(source.encode()).hexdigest()
        self._sources[sha] = source
        return sha

    def load(self) -> None:
        for source in self._sources.values():
            self._client.script_load(source)

    def run(self, sha: str, keys: list[str], args: list[Any]) -> Any:
        return self.run_many([(sha, keys, args)])[0]

    def run_many(self, calls: list[tuple[str, list[str], list[Any]]]) -> list[Any]:
        """Run the scripts; return their answers, or raise the first error."""
        job = self._submit(calls)
        if job.error is not None:
            raise job.error
        return job.result

    def _run(self, batch: list[Job]) -> None:
        try:
            pipe = self._client.pipeline(transaction=False)
            for job in batch:
                for sha, keys, args in job.payload:
                    pipe.evalsha(sha, len(keys), *keys, *args)
            answers = iter(pipe.execute(raise_on_error=False))
        except Exception as exc:  # noqa: BLE001 - every caller hears of it
            for job in batch:
                job.error = exc
            return
        for job in batch:
            job.result = [next(answers) for _ in job.payload]
            job.error = next((a for a in job.result if isinstance(a, Exception)), None)


def _pack_row(row: TaskRow) -> bytes:
    """The row's fields (and whether its result is text or bytes) as one
    argument: ``<length>:<bytes>`` each, ``-1:`` for None."""
    kind = None if row.result is None else ("b" if isinstance(row.result, bytes) else "s")
    parts = []
    for value in (*row, kind):
        if value is None:
            parts.append(b"-1:")
            continue
        if isinstance(value, float):
            value = repr(value)
        data = value if isinstance(value, bytes) else value.encode()
        parts.append(b"%d:%s" % (len(data), data))
    return b"".join(parts)


def _row(fields: dict[bytes, bytes]) -> TaskRow:
    def text(name: str) -> Optional[str]:
        raw = fields.get(name.encode())
        return None if raw is None else raw.decode()

    def number(name: str) -> Optional[float]:
        raw = fields.get(name.encode())
        return None if raw is None else float(raw)

    result: Any = fields.get(b"result")
    if result is not None and fields.get(b"result_kind") != b"b":
        result = result.decode()
    return TaskRow(
        text("task_id") or "", text("node_id") or "", text("status") or "", text("meta_json"),
        result, text("error"), number("created_at") or 0.0, number("updated_at") or 0.0,
        number("finished_at"), number("deadline"),
    )


def _seconds(options: dict[str, list[str]], name: str, default: float) -> float:
    values = options.pop(name, None)
    if values is None:
        return default
    try:
        value = float(values[-1])
    except ValueError:
        value = -1.0
    if not value > 0:
        raise InvalidArgument(f"{name} in a redis:// store URL is seconds > 0, got {values[-1]!r}")
    return value


def _parse_url(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise InvalidArgument(
            f"a Redis store URL looks like redis://host:6379/0?prefix=taskjournal, got {url!r}"
        )
    options = parse_qs(parts.query, keep_blank_values=True)
    prefix = options.pop("prefix", ["taskjournal"])[-1]
    if not _NAMESPACE.match(prefix):
        raise InvalidArgument(
            f"prefix {prefix!r} in {url!r}: use 1-64 letters, digits and _ . : -"
        )
    replica = options.pop("replica", [f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"])[-1]
    if not _NAMESPACE.match(replica):
        raise InvalidArgument(f"replica {replica!r} in {url!r}: use 1-64 letters, digits and _ . : -")
    settings = {
        "prefix": prefix,
        "replica": replica,
        "lease": _seconds(options, "lease", 10.0),
        "timeout": _seconds(options, "timeout", 10.0),
        "poll": _seconds(options, "poll", 1.0),
    }
    # What is left (ssl_cert_reqs=..., and so on) is redis-py's own.
    settings["server_url"] = urlunsplit(parts._replace(query=urlencode(options, doseq=True)))
    settings["where"] = f"{parts.hostname}:{parts.port or 6379}"
    return settings
