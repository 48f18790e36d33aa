"""redis://host:port/db: one journal shared by several hub replicas.

What is safe when:

* A registration, a state change and a result are written by one Lua script
  (Redis runs a script whole or not at all) before the call returns.  How
  long Redis keeps them is Redis's own setting: with ``appendonly yes`` and
  ``appendfsync always`` they survive a power cut; with persistence off, a
  Redis restart loses them (this store does not pretend otherwise).
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
  never both act on one task.
* One replica id is held by one live store at a time.  The lease key holds
  an instance token (host, boot, pid, a random part, and the lease length),
  renewed by compare-and-set.  Opening finds another instance's token
  alive: refused with StoreLocked, unless the holder is known dead (a pid of
  this host that is gone, a store of this process that was closed or
  abandoned) or is seen not renewing within about one and a half renewal
  periods (then taken over).  A store whose renewal finds another
  instance's token stops renewing and refuses every later write with
  StoreLocked.  ``release()`` deletes the lease only while it is still ours.
* If Redis cannot be reached (or is loading, busy, or read-only during a
  failover), calls are retried with backoff for ``timeout`` seconds, then
  fail with StoreUnavailable.  A call that timed out may have landed: a
  retried registration (same task id, node id and meta, through the same
  replica id) finds its own retry token on a still-PENDING task and
  succeeds; anything else with that id is a DuplicateTask.
* Every error the client raises reaches the caller as a StoreError (or
  StoreUnavailable, StoreLocked) saying what happened and whether anything
  was written: out of memory (maxmemory), missing permission, refused
  credentials, scripts lost twice.  After ``close()`` (or in a forked child)
  every call is refused with a StoreError.
* The background threads (lease renewal, the "ended" subscription) survive
  every exception: each is counted in ``background_errors`` (the last in
  ``last_background_error``), logged, and retried after a short backoff
  bounded by one renewal period; they end only on ``close()``.

URL options: ``prefix``, ``replica``, and ``timeout``, ``lease``, ``poll`` in
seconds (finite, 0.001 to 86400); of redis-py's own, only those in
``REDIS_PY_OPTIONS`` (the ``ssl_*`` ones with ``rediss://`` only).  Anything
else is an InvalidArgument naming the accepted ones.

Key layout, under a namespace ``ns`` (``?prefix=``, default ``taskjournal``).
A task's keys share the hash tag ``{<task id>}``::

    {ns}:task:{<id>}            hash   the task row, plus owner, detached and
                                       the registration's retry token (a
                                       hash of replica, task id, node id and
                                       meta)
    {ns}:task:{<id>}:streams    hash   stream name -> buffer snapshot; its
                                       total is the little-endian uint64 at
                                       bytes 24..31 of the snapshot header,
                                       the sealed flag bit 0 of byte 5
    {ns}:index:created          zset   task id -> created_at (every task held)
    {ns}:index:in_flight        zset   task id -> created_at (not yet ended)
    {ns}:index:finished         zset   task id -> finished_at
    {ns}:index:status           hash   task id -> status
    {ns}:index:counts           hash   status -> number of tasks
    {ns}:index:tombs            zset   task id -> when its tombstone goes
    {ns}:replica:<replica id>   string a live replica's lease (PX):
                                       "<host>:<boot>:<pid>:<random> <lease ms>"
    {ns}:ended                  channel task ids, published as they end

The index keys are shared by all tasks, so this layout runs on one Redis
server (or a primary with replicas), not on Redis Cluster.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Callable, Optional, TypeVar, cast
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from journal.errors import (
    DuplicateTask,
    InvalidArgument,
    JournalError,
    OwnedElsewhere,
    StoreError,
    StoreLocked,
    StoreUnavailable,
)
from journal.store._batching import Batcher, Job
from journal.store.base import SharedStore, Snapshotable, StoredTask, TaskRow

try:
    import redis
    from redis import exceptions as redis_errors
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError:  # pragma: no cover - exercised by the missing-extra test
    redis = None  # type: ignore[assignment]  # the optional extra is missing; __init__ says so

__all__ = ["REDIS_PY_OPTIONS", "RedisStore"]

log = logging.getLogger("journal")

T = TypeVar("T")

_NAMESPACE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

# The hash fields of a task row, in the order _pack_row() writes them.
_ROW_FIELDS = (*TaskRow._fields, "result_kind")

# Stream writes only move forward (see the module docstring): a snapshot
# replaces the stored one only if its total is at least the stored one's,
# and, at an equal total, unless the stored one is sealed and it is not.
# The total and the sealed flag are read from the snapshot header
# (journal._buffer_shared: "<4sBBHQQQQQ", total at bytes 24..31).
_FORWARD = """
local function snapshot_order(snapshot)
  if not snapshot or #snapshot < 32 or string.sub(snapshot, 1, 4) ~= 'TJHB' then
    return -1, 0
  end
  local total = 0
  for k = 32, 25, -1 do total = total * 256 + string.byte(snapshot, k) end
  return total, string.byte(snapshot, 6) % 2
end
local function put_stream(key, name, snapshot)
  local old_total, old_sealed = snapshot_order(redis.call('HGET', key, name))
  local total, sealed = snapshot_order(snapshot)
  if total < old_total or (total == old_total and sealed < old_sealed) then return end
  redis.call('HSET', key, name, snapshot)
end
"""

# KEYS: task, streams.  ARGV: new, me, namespace, ttl_ms, registration token,
# the row (_pack_row), then stream name/snapshot pairs.  The index keys are
# named here from the namespace: few arguments keep a registration cheap to
# send (redis-py spends most of a call's time packing them).
_PUT_TASK = _FORWARD + """
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
    -- A retry of this very registration (its reply was lost) succeeds while
    -- the task is still as that registration left it.
    if redis.call('HGET', task, 'registration') == token and owner == me
        and redis.call('HGET', task, 'status') == 'pending' then
      return 'again'
    end
    return redis.error_reply('DUPLICATE ' .. (redis.call('HGET', task, 'node_id') or ''))
  end
  if owner and owner ~= me then
    return redis.error_reply('OWNED ' .. owner)
  end
end
-- The first write is one Redis refuses at maxmemory: then nothing is written.
redis.call('HSET', task, 'owner', me, 'detached', '0', unpack(set))
if new then
  -- A genuinely new task: a streams key that outlived its task (or was
  -- left by hand) is not this task's.
  redis.call('DEL', streams)
end
if #gone > 0 then redis.call('HDEL', task, unpack(gone)) end
if new then redis.call('HSET', task, 'registration', token) end
for i = 7, #ARGV, 2 do
  put_stream(streams, ARGV[i], ARGV[i + 1])
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
# 0: the task is gone (expired); -1: another replica owns it; 1: written
# (each stream as far as it moves forward).
_PUT_STREAMS = _FORWARD + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then return -1 end
for i = 2, #ARGV, 2 do
  put_stream(KEYS[2], ARGV[i], ARGV[i + 1])
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

# The replica lease.  KEYS: the lease key.
# _TAKE, ARGV: our value, PX, the value we expect there ('' for none): sets it
# if so; returns {1} when taken, else {0, the value there, its PTTL}.
_TAKE = """
local there = redis.call('GET', KEYS[1])
if (ARGV[3] == '' and not there) or there == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1}
end
return {0, there or '', redis.call('PTTL', KEYS[1])}
"""

# _RENEW, ARGV: our value, PX.  {1}: renewed (or set again after it ran out
# while Redis was away); {0, the other instance's value}: someone took it.
_RENEW = """
local there = redis.call('GET', KEYS[1])
if there and there ~= ARGV[1] then return {0, there} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1}
"""

# _RELEASE, ARGV: our value.  Deletes the lease only while it is ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

#: Seconds bounds of ``timeout``, ``lease`` and ``poll``.
MIN_SECONDS, MAX_SECONDS = 0.001, 86400.0

#: Our own URL options.
OWN_OPTIONS = ("prefix", "replica", "timeout", "lease", "poll")
#: redis-py connection options a URL may carry (each checked to build a
#: connection in tests/test_redis_url.py); the ``ssl_*`` ones need rediss://.
TLS_OPTIONS = frozenset({
    "ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile",
    "ssl_check_hostname", "ssl_password",
})
REDIS_PY_OPTIONS = frozenset({"client_name", "health_check_interval", "socket_keepalive"}) | TLS_OPTIONS

# Replies that mean "not now": retried within ``timeout`` like an outage.
_NOT_NOW = ("BUSY", "LOADING", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN")

# Stores of this process with a live lease, by instance token: a lease key
# holding a token of this process that is not here was closed or abandoned.
_LIVE: set[str] = set()
_LIVE_LOCK = threading.Lock()


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as file:
            return file.read().strip().replace("-", "")[:12] or "-"
    except OSError:
        return "-"


_BOOT = _boot_id()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process: alive
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[-1].split()[0] != "Z"  # a zombie is dead
    except (OSError, IndexError):
        return True


class _Refusal(StoreError):
    """A script's own refusal (DUPLICATE, OWNED), turned into the right
    error by the caller."""


class RedisStore(SharedStore):
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
        try:
            # No decode_responses: every answer is bytes (redis-py types them
            # bytes | str, whence the casts of what this store reads).
            self._client = redis.Redis.from_url(options["server_url"], **_client_options(options))
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"{_redact(url)}: redis-py refused an option: {exc}") from None
        self._where = options["where"]
        self._pid = os.getpid()
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
        self._instance = f"{socket.gethostname()}:{_BOOT}:{self._pid}:{uuid.uuid4().hex[:12]}"
        self._lease_ms = max(1, int(self.lease * 1000))
        self._lease_value = f"{self._instance} {self._lease_ms}"
        self._lost: Optional[str] = None
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
        self._take = self._scripts.add(_TAKE)
        self._renew = self._scripts.add(_RENEW)
        self._release = self._scripts.add(_RELEASE)
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []
        try:
            self._call(self._client.ping)
            if not readonly:
                self._acquire_lease()
        except BaseException:
            self._closed.set()
            self._client.close()
            raise
        if not readonly:
            self._start("journal-redis-lease", self._keep_lease)

    # -- keys ----------------------------------------------------------------

    def _task_keys(self, task_id: str) -> list[str]:
        task = f"{self.namespace}:task:{{{task_id}}}"
        return [task, task + ":streams"]

    # -- calls, retried while the server is away ------------------------------

    def _call(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self._call_within(self.timeout, call, *args, **kwargs)

    def _call_within(self, seconds: float, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``call(...)``, retried while Redis is away, loading, busy or
        read-only for up to ``seconds``; every failure ends as a StoreError
        (StoreUnavailable when waiting longer might have helped)."""
        self._check_open()
        deadline = time.monotonic() + seconds
        pause = 0.02
        reloaded = False
        while True:
            try:
                return call(*args, **kwargs)
            except redis_errors.NoScriptError as exc:
                # The server restarted (or SCRIPT FLUSH) and forgot the
                # scripts: load them and go again at once; twice is an error.
                if reloaded:
                    raise StoreError(
                        f"Redis at {self._where} lost this store's Lua scripts again right "
                        f"after they were loaded ({exc}); nothing was written"
                    ) from None
                reloaded = True
                try:
                    self._scripts.load()
                except Exception as load_error:  # noqa: BLE001 - judged below
                    retry, error = self._judge(load_error, seconds)
                    if not retry or self._closed.is_set() or time.monotonic() + pause > deadline:
                        raise error from None
                    reloaded = False
                    time.sleep(pause)
                    pause = min(pause * 2, 0.5)
                continue
            except Exception as exc:  # noqa: BLE001 - every client error is translated
                retry, error = self._judge(exc, seconds)
                if not retry or self._closed.is_set() or time.monotonic() + pause > deadline:
                    if self._closed.is_set() and retry:
                        error = StoreError(self._closed_message())
                    raise error from (None if isinstance(exc, JournalError) else exc)
            time.sleep(pause)
            pause = min(pause * 2, 0.5)

    def _judge(self, exc: BaseException, seconds: float) -> tuple[bool, BaseException]:
        """(worth retrying, the error to raise) for what the client raised."""
        where = self._where
        if isinstance(exc, JournalError):
            return False, exc
        text = str(exc)
        if isinstance(exc, (redis_errors.AuthenticationError, redis_errors.AuthorizationError)) or (
            isinstance(exc, redis_errors.ResponseError) and text.startswith(("WRONGPASS", "NOAUTH"))
        ):
            return False, StoreError(
                f"Redis at {where} refused this store's credentials ({text}): nothing was "
                "written; check the user and password in the store URL"
            )
        if isinstance(exc, redis_errors.TimeoutError):
            return True, StoreUnavailable(
                f"Redis at {where} did not answer for {seconds:g} s ({text}); nothing was "
                "confirmed, though the last try may have landed: retry when Redis is back "
                "(a retried registration is recognised)"
            )
        if isinstance(exc, (redis_errors.ConnectionError, OSError)):
            return True, StoreUnavailable(
                f"Redis at {where} did not answer for {seconds:g} s ({text}); nothing was "
                "confirmed: retry when Redis is back"
            )
        if isinstance(exc, redis_errors.ReadOnlyError):
            return True, StoreUnavailable(
                f"Redis at {where} stayed read-only for {seconds:g} s ({text}: a replica, or "
                "a failover under way): nothing was written; retry once a primary answers"
            )
        if isinstance(exc, redis_errors.OutOfMemoryError):
            return False, StoreError(
                f"Redis at {where} is out of memory (maxmemory): nothing was written ({text}); "
                "free memory or raise maxmemory, then retry"
            )
        if isinstance(exc, redis_errors.NoPermissionError):
            # Refused inside a script, what the script wrote before stays
            # (Redis does not roll scripts back); refused outright, nothing ran.
            landed = ("the part of the script before that command may have been written"
                      if "script:" in text else "nothing was written")
            return False, StoreError(
                f"Redis at {where} refused a command for lack of permission ({text}): {landed}; "
                "the store's user needs EVALSHA, SCRIPT, the hash, zset and string commands "
                "and PUBLISH/SUBSCRIBE on the namespace's keys"
            )
        if isinstance(exc, redis_errors.ResponseError):
            if text.startswith(("DUPLICATE ", "OWNED ")):
                return False, _Refusal(text)
            if text.startswith(_NOT_NOW):
                return True, StoreUnavailable(
                    f"Redis at {where} was not ready for {seconds:g} s ({text}): nothing was "
                    "written; retry later"
                )
            return False, StoreError(f"Redis at {where} refused the command: {text}")
        if isinstance(exc, redis_errors.RedisError):
            return False, StoreError(
                f"the Redis client failed talking to {where} ({type(exc).__name__}: {text}); "
                "the change may not have been made: read the task back before retrying"
            )
        return False, StoreError(
            f"the Redis client failed unexpectedly talking to {where} "
            f"({type(exc).__name__}: {text}); the change may not have been made"
        )

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise StoreError(self._closed_message())
        if os.getpid() != self._pid:
            raise StoreError(
                f"this Redis store of {self._where} was opened by process {self._pid}; a forked "
                "child must open a store (a TaskJournal) of its own, with its own replica id"
            )

    def _closed_message(self) -> str:
        return f"the Redis store {_redact(self.url)} is closed; open a new one"

    # -- reading -----------------------------------------------------------

    def load_in_flight(self) -> list[StoredTask]:
        """Every in-flight task, whoever owns it.  Reading claims nothing: a
        hub replica that opens takes its tasks with ``adopt_orphans``."""
        return self._in_flight()

    def _in_flight_ids(self) -> list[str]:
        ids = cast(list[bytes], self._call(self._client.zrange, self._index[1], 0, -1))
        return [raw.decode() for raw in ids]

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
        adopted = []
        for task_id in ids:
            owner = owners.get(task_id)
            if owner is not None and owner != self.replica and owner in live:
                continue
            if owner == self.replica and not own:
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
        return cast(Optional[bytes], self._call(self._client.hget, self._task_keys(task_id)[1], name))

    def tombstoned(self, task_id: str) -> bool:
        return self._call(self._client.zscore, self._index[5], task_id) is not None

    def count_by_status(self) -> dict[str, int]:
        counts = cast(dict[bytes, bytes], self._call(self._client.hgetall, self._index[4]))
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
            ids = cast(list[bytes], self._call(
                self._client.zrevrange, self._index[0], start, start + page - 1))
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
        try:
            args: list[Any] = [
                "1" if new else "0", self.replica, self.namespace, self._ttl_ms,
                # Tells a retried registration whose first try landed from a
                # duplicate: the same for the same registration through this
                # replica id, whenever it is retried.
                self._registration_token(row) if new else "-",
                _pack_row(row),
            ]
        except UnicodeEncodeError as exc:
            raise InvalidArgument(f"task {row.task_id!r} cannot be stored: {exc}") from None
        for name, buf in (streams or {}).items():
            args += (name, buf.snapshot())
        try:
            self._call(self._scripts.run, self._put_task, self._task_keys(row.task_id), args)
        except _Refusal as exc:
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
        while True:
            ids = cast(list[bytes], self._call(
                self._client.zrangebyscore, self._index[2], "-inf", cutoff, start=0, num=500))
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
        statuses = cast(list[bytes], self._call(self._client.hvals, self._index[3]))
        tally: dict[str, int] = {}
        for raw in statuses:
            tally[raw.decode()] = tally.get(raw.decode(), 0) + 1
        counts = {k: v for k, v in self.count_by_status().items() if v}
        if counts != tally:
            return [f"status counts {counts} disagree with the status index {tally}"]
        return []

    def repair(self) -> None:
        self._check_writable()
        statuses = cast(list[bytes], self._call(self._client.hvals, self._index[3]))
        tally: dict[str, int] = {}
        for raw in statuses:
            tally[raw.decode()] = tally.get(raw.decode(), 0) + 1

        def rewrite() -> None:
            pipe = self._client.pipeline(transaction=True)
            pipe.delete(self._index[4])
            if tally:
                # dict is invariant: redis-py's Mapping of its own key and value unions.
                pipe.hset(self._index[4], mapping=cast("Mapping[Any, Any]", tally))
            pipe.execute()

        self._call(rewrite)

    # -- replicas ----------------------------------------------------------

    def _acquire_lease(self) -> None:
        """Take this replica id's lease, or raise StoreLocked if another
        live instance holds it (see the module docstring)."""
        expected = ""
        first_seen: Optional[tuple[str, int, float]] = None  # holder, PTTL, when
        while True:
            answer = self._call(self._client.evalsha, self._take, 1, self._lease_key,
                                self._lease_value, self._lease_ms, expected)
            if answer[0] == 1:
                break
            holder = answer[1].decode("utf-8", "replace")
            pttl = int(answer[2])
            now = time.monotonic()
            if first_seen is None or first_seen[0] != holder:
                first_seen = (holder, pttl, now)
            verdict = self._holder_state(holder, pttl, first_seen, now)
            if verdict == "dead":
                expected = holder  # take it over, if it is still that one
                continue
            if verdict == "live":
                raise StoreLocked(
                    f"hub replica id {self.replica!r} on Redis at {self._where} is already "
                    f"held by {holder.split(' ')[0]!r}, which keeps its lease alive: give "
                    "this hub another replica id (?replica=), or close the other one first"
                )
            expected = ""
            time.sleep(0.05)
        with _LIVE_LOCK:
            _LIVE.add(self._instance)

    def _holder_state(self, holder: str, pttl: int, first_seen: tuple[str, int, float],
                      now: float) -> str:
        """'live', 'dead' or 'unknown' (keep watching) for the lease holder."""
        token, _, lease_text = holder.rpartition(" ")
        try:
            lease_ms = int(lease_text)
        except ValueError:  # an older taskjournal's "host:pid", or foreign
            token, lease_ms = holder, self._lease_ms
        with _LIVE_LOCK:
            if token in _LIVE:
                return "live"  # an open store of this very process
        parts = token.split(":")
        if len(parts) == 4:
            host, boot, pid_text, _ = parts
        elif len(parts) == 2:
            (host, pid_text), boot = parts, _BOOT
        else:
            host = boot = pid_text = ""
        if host == socket.gethostname() and boot == _BOOT and pid_text.isdigit():
            pid = int(pid_text)
            if pid == self._pid or not _pid_alive(pid):
                return "dead"  # this process's closed or abandoned store, or a gone process
        if pttl == -1:
            return "live"  # no expiry at all: set by hand, never runs out
        _, first_pttl, first_at = first_seen
        if pttl > first_pttl - (now - first_at) * 1000 + 50:
            return "live"  # renewed while we watched
        period = lease_ms / 3
        since_renewal = lease_ms - pttl
        if since_renewal > period + max(200, period / 2):
            return "dead"  # a renewal is overdue: nobody renews it
        return "unknown"

    def _renew_lease(self) -> None:
        answer = self._call_within(self.lease / 3, self._client.evalsha, self._renew, 1,
                                   self._lease_key, self._lease_value, self._lease_ms)
        if answer[0] != 1:
            holder = answer[1].decode("utf-8", "replace")
            self._lost = holder.split(" ")[0]
            with _LIVE_LOCK:
                _LIVE.discard(self._instance)
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
        away (or read-only, or loading) is an outage, not an error: every
        foreground call reports it already, and a thread retrying through it
        would count the outage's length; outages are counted once each, in
        ``background_outages``."""
        outage = isinstance(exc, StoreUnavailable) or (
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
            self._call_within(min(self.timeout, 1.0), self._client.evalsha, self._release, 1,
                              self._lease_key, self._lease_value)
        except StoreError:
            pass  # the lease runs out by itself

    def on_ended(self, callback: Callable[[Optional[str]], None]) -> None:
        """Call ``callback(task_id)`` from a background thread whenever any
        replica ends a task, and ``callback(None)`` after the subscription
        was broken (messages may have been missed)."""
        self._start("journal-redis-ended", self._listen, callback)

    def _listen(self, callback: Callable[[Optional[str]], None]) -> None:
        pause = 0.02
        while not self._closed.is_set():
            pubsub = None
            try:
                # redis-py leaves pubsub() unannotated.
                pubsub = self._client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                pubsub.subscribe(self._channel)
                callback(None)  # anything that ended while unsubscribed
                self._background_ok("the ended-task subscription")
                pause = 0.02
                while not self._closed.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    if message is not None and message.get("type") == "message":
                        try:
                            callback(message["data"].decode("utf-8", "replace"))
                        except Exception as exc:  # noqa: BLE001 - one waiter's bug
                            self._background_error("an ended-task callback", exc)
            except Exception as exc:  # noqa: BLE001 - survives everything, counted
                if self._closed.is_set():
                    return
                self._background_error("the ended-task subscription", exc)
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
            raise StoreError(f"{_redact(self.url)} was opened read-only")
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
        with _LIVE_LOCK:
            _LIVE.discard(self._instance)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()
        try:
            self._client.close()
        except Exception:  # noqa: BLE001 - disconnecting only
            pass


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
        answers: list[Any] = job.result  # Lua replies: whatever each script returns
        return answers

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
        value = math.nan
    if not (math.isfinite(value) and MIN_SECONDS <= value <= MAX_SECONDS):
        raise InvalidArgument(
            f"{name} in a redis:// store URL is seconds > 0, finite, from {MIN_SECONDS:g} "
            f"to {MAX_SECONDS:g}; got {values[-1]!r}"
        )
    return value


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
    except ValueError:
        return url


def _client_options(settings: dict[str, Any]) -> dict[str, Any]:
    """The keywords redis-py's client is made with, besides the URL."""
    return {
        "socket_timeout": min(settings["timeout"], 5.0),
        "socket_connect_timeout": min(settings["timeout"], 5.0),
        # Retries are ours (_call), bounded by ``timeout``; redis-py's own
        # would sleep with backoff inside each attempt.
        "retry": Retry(NoBackoff(), 0),
    }


def _parse_url(url: str) -> dict[str, Any]:
    shape = f"a Redis store URL looks like redis://host:6379/0?prefix=taskjournal, got {_redact(url)!r}"
    try:
        parts = urlsplit(url)
        port = parts.port
        hostname = parts.hostname
    except ValueError as exc:  # a port out of range or not a number
        raise InvalidArgument(f"{shape}: {exc}") from None
    if parts.scheme not in ("redis", "rediss") or not hostname:
        raise InvalidArgument(shape)
    if port == 0:
        raise InvalidArgument(f"{shape}: port 0 is no port")
    if parts.fragment:
        raise InvalidArgument(f"{shape}: a '#' fragment has no meaning here")
    if not re.fullmatch(r"/?(\d{1,9})?", parts.path):
        raise InvalidArgument(f"{shape}: the path is the database number (/0), got {parts.path!r}")
    options = parse_qs(parts.query, keep_blank_values=True)
    prefix = options.pop("prefix", ["taskjournal"])[-1]
    if not _NAMESPACE.match(prefix):
        raise InvalidArgument(
            f"prefix {prefix!r} in {_redact(url)!r}: use 1-64 letters, digits and _ . : -"
        )
    replica = options.pop("replica", [f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"])[-1]
    if not _NAMESPACE.match(replica):
        raise InvalidArgument(
            f"replica {replica!r} in {_redact(url)!r}: use 1-64 letters, digits and _ . : -"
        )
    settings = {
        "prefix": prefix,
        "replica": replica,
        "lease": _seconds(options, "lease", 10.0),
        "timeout": _seconds(options, "timeout", 10.0),
        "poll": _seconds(options, "poll", 1.0),
    }
    # What is left must be one of redis-py's options we let through.
    for name in options:
        if name not in REDIS_PY_OPTIONS:
            raise InvalidArgument(
                f"unknown option {name!r} in a redis:// store URL; accepted: "
                f"{', '.join(OWN_OPTIONS)}, and of redis-py's: {', '.join(sorted(REDIS_PY_OPTIONS))}"
            )
        if name in TLS_OPTIONS and parts.scheme != "rediss":
            raise InvalidArgument(f"option {name!r} is for TLS: use a rediss:// store URL")
    settings["server_url"] = urlunsplit(parts._replace(query=urlencode(options, doseq=True)))
    settings["where"] = f"{hostname}:{port or 6379}"
    return settings
