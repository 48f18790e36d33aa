"""How the Redis store's calls reach Redis: one server (or a primary with
replicas), or the primaries of a Redis Cluster through redis-py's cluster
client.

Scripts go out in pipelines, one per server they run on, and calls that
arrive together share one (``Scripts``, a ``_batching.Batcher``).  On a
cluster redis-py's own pipelines refuse EVALSHA, so the route sends each
primary its scripts on that primary's own connection, follows MOVED (the
slot's new owner, after refreshing the slot map) and ASK (ASKING, then the
script, on the node importing the slot) a few times, and leaves what still
fails to the store's retry within ``timeout``.

``WAIT n ms`` goes at the end of each pipeline, on the connection that sent
its scripts (WAIT counts the replicas that have this connection's writes):
fewer than ``n`` in time turns every script of that pipeline that ran into a
NotReplicated error.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import select
import threading
import time
from collections.abc import Iterable
from typing import Any, Optional

from journal.errors import InvalidArgument
from journal.store._batching import Batcher, Job
from journal.store._redis_errors import NotReplicated
from journal.store._redis_url import RedisSettings, client_options

try:
    import redis
    from redis import exceptions as redis_errors
except ImportError:  # pragma: no cover - the optional extra is missing; RedisStore says so
    redis = None  # type: ignore[assignment]

__all__ = ["Call", "Route", "Scripts", "open_route"]

#: A script call: its SHA, its keys, its arguments.
Call = tuple[str, list[str], list[Any]]

#: Redirections (MOVED, ASK) one pipeline follows before it gives up.
REDIRECTS = 5
#: Seconds between two reads of a cluster's slot map.
REFRESH_EVERY = 0.25


class Route:
    """One Redis server, or a primary with its replicas."""

    cluster = False
    #: The command the scripts publish "ended" messages with.
    publish = "PUBLISH"

    def __init__(self, client: Any, settings: RedisSettings) -> None:
        self.client = client
        self.settings = settings
        self.where = settings.where
        self.wait: Optional[tuple[int, int]] = (
            (settings.wait_replicas, max(1, int(settings.wait_timeout * 1000)))
            if settings.wait_replicas else None
        )

    def pipeline(self) -> Any:
        """A pipeline for reads and plain writes (no scripts)."""
        return self.client.pipeline(transaction=False)

    def run_scripts(self, calls: list[Call], wait: bool) -> list[Any]:
        """Every call's answer, or the error its server replied."""
        pipe = self.client.pipeline(transaction=False)
        for sha, keys, args in calls:
            pipe.evalsha(sha, len(keys), *keys, *args)
        waiting = self.wait if wait else None
        if waiting is not None:
            pipe.execute_command("WAIT", *waiting)
        answers: list[Any] = pipe.execute(raise_on_error=False)
        if waiting is not None:
            return self._waited(answers[:-1], answers[-1], self.where)
        return answers

    def _waited(self, answers: list[Any], acked: Any, where: str) -> list[Any]:
        assert self.wait is not None
        wanted, ms = self.wait
        if not isinstance(acked, Exception) and int(acked) >= wanted:
            return answers
        heard = f"failed: {acked}" if isinstance(acked, Exception) else f"heard from {int(acked)}"
        short = NotReplicated(
            f"Redis at {where} wrote the change, but WAIT {wanted} {ms} {heard} of the "
            f"{wanted} replica(s) wait_replicas asks for within {ms / 1000:g} s: the change "
            "may or may not survive a failover; read the task back, or retry (a retried "
            "registration is recognised)"
        )
        return [a if isinstance(a, Exception) else short for a in answers]

    def load_scripts(self, sources: Iterable[str]) -> None:
        for source in sources:
            self.client.script_load(source)

    def refresh(self) -> None:
        """After an outage: nothing to learn on one server."""

    def after_error(self, exc: BaseException) -> None:
        """A call failed with ``exc``: learn what it says about the topology."""

    def subscribe(self, pubsub: Any, channels: list[str]) -> None:
        pubsub.subscribe(*channels)

    def next_message(self, pubsub: Any, timeout: float) -> Any:
        return pubsub.get_message(timeout=timeout)

    def close(self) -> None:
        self.client.close()


class ClusterRoute(Route):
    """The primaries of a Redis Cluster."""

    cluster = True
    publish = "SPUBLISH"

    def __init__(self, client: Any, settings: RedisSettings) -> None:
        super().__init__(client, settings)
        self._refresh_lock = threading.Lock()
        self._refreshed = 0.0
        #: Threads sending the pipelines of a batch to its primaries at once.
        self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._pool_lock = threading.Lock()

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
        self.client.close()

    def run_scripts(self, calls: list[Call], wait: bool) -> list[Any]:
        client = self.client
        answers: list[Any] = [None] * len(calls)
        pending = list(range(len(calls)))
        asked: dict[int, Any] = {}  # call -> the node an ASK named
        for _ in range(REDIRECTS):
            groups: dict[str, tuple[Any, list[tuple[int, bool]]]] = {}
            for i in pending:
                node = asked.get(i)
                if node is None:
                    node = client.nodes_manager.get_node_from_slot(client.keyslot(calls[i][1][0]))
                groups.setdefault(node.name, (node, []))[1].append((i, i in asked))
            pending, asked, moved = [], {}, False
            for (node, items), outcome in zip(groups.values(), self._on_nodes(calls, groups, wait)):
                if isinstance(outcome, BaseException):
                    if not isinstance(outcome, (redis_errors.ConnectionError,
                                                redis_errors.TimeoutError, OSError)):
                        raise outcome
                    for i, _ in items:
                        answers[i] = outcome
                    moved = True  # a failover may be under way: learn the new primaries
                    continue
                for (i, _), result in zip(items, outcome):
                    answers[i] = result
                    if isinstance(result, redis_errors.MovedError):
                        pending.append(i)
                        self._move_slot(result)
                    elif isinstance(result, redis_errors.AskError):
                        target = client.get_node(host=result.host, port=result.port)
                        if target is None:
                            moved = True
                        else:
                            asked[i] = target
                        pending.append(i)
            if moved:
                self.refresh()
            if not pending:
                break
        return answers

    def _on_nodes(self, calls: list[Call], groups: dict[str, tuple[Any, list[tuple[int, bool]]]],
                  wait: bool) -> list[Any]:
        """Each primary's pipeline, all at once (one round trip for the batch,
        not one per primary); each outcome is its answers or what it raised."""
        jobs = [(node, [(calls[i], asking) for i, asking in items]) for node, items in groups.values()]
        if len(jobs) == 1:
            return [self._try_on_node(*jobs[0], wait)]
        with self._pool_lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(8, "journal-redis-node")
            pool = self._pool
        futures = [pool.submit(self._try_on_node, node, items, wait) for node, items in jobs[1:]]
        first = self._try_on_node(*jobs[0], wait)  # this thread does its share
        return [first, *(future.result() for future in futures)]

    def _try_on_node(self, node: Any, items: list[tuple[Call, bool]], wait: bool) -> Any:
        try:
            return self._on_node(node, items, wait)
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            return exc

    def _on_node(self, node: Any, items: list[tuple[Call, bool]], wait: bool) -> list[Any]:
        pipe = self.client.get_redis_connection(node).pipeline(transaction=False)
        for (sha, keys, args), asking in items:
            if asking:
                pipe.execute_command("ASKING")
            pipe.evalsha(sha, len(keys), *keys, *args)
        waiting = self.wait if wait else None
        if waiting is not None:
            pipe.execute_command("WAIT", *waiting)
        raw: list[Any] = pipe.execute(raise_on_error=False)
        acked = raw.pop() if waiting is not None else None
        answers, at = [], 0
        for _, asking in items:
            at += asking  # ASKING's own OK
            answers.append(raw[at])
            at += 1
        if waiting is not None:
            return self._waited(answers, acked, node.name)
        return answers

    def load_scripts(self, sources: Iterable[str]) -> None:
        # SCRIPT LOAD goes to every primary (a promoted replica may lack them).
        self.refresh()
        for source in sources:
            self.client.script_load(source)

    def _move_slot(self, exc: Any) -> None:
        # What redis-py itself does with a MOVED: the slot's new owner, at once.
        try:
            self.client.nodes_manager.move_slot(exc)
        except Exception:  # noqa: BLE001 - a refresh learns it instead
            self.refresh()

    def refresh(self) -> None:
        """Read the slot map again, at most every REFRESH_EVERY seconds and
        by one thread at a time: every thread of every hub meets a failover
        at once, and each refresh drops connections others may be using."""
        if not self._refresh_lock.acquire(blocking=False):
            return
        try:
            if time.monotonic() - self._refreshed < REFRESH_EVERY:
                return
            self.client.nodes_manager.initialize(disconnect_startup_nodes_pools=False)
        except Exception:  # noqa: BLE001 - the next call's error tells
            pass
        finally:
            self._refreshed = time.monotonic()
            self._refresh_lock.release()

    def after_error(self, exc: BaseException) -> None:
        if isinstance(exc, redis_errors.MovedError):
            self._move_slot(exc)
        elif isinstance(exc, (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError,
                              redis_errors.ClusterError, redis_errors.SlotNotCoveredError)):
            self.refresh()

    def subscribe(self, pubsub: Any, channels: list[str]) -> None:
        pubsub.ssubscribe(*channels)

    def next_message(self, pubsub: Any, timeout: float) -> Any:
        # redis-py waits on one primary's connection at a time, ``timeout``
        # each, so a message on the third primary would wait behind two quiet
        # ones (measured: a 38 ms median wake-up instead of 0.7 ms).  Take
        # what is there without waiting, and otherwise wait on every
        # primary's socket at once.
        message = pubsub.get_sharded_message(timeout=0.0)
        if message is not None:
            return message
        sockets = [sock for node in list(pubsub.node_pubsub_mapping.values())
                   if (sock := getattr(node.connection, "_sock", None)) is not None]
        if not sockets:
            return pubsub.get_sharded_message(timeout=min(timeout, 0.05))
        try:
            select.select(sockets, [], [], timeout)
        except (OSError, ValueError):  # a socket closed under us: read again
            pass
        return pubsub.get_sharded_message(timeout=0.0)


def open_route(settings: RedisSettings) -> Route:
    """A route to the server the settings name: a cluster when ``cluster=yes``,
    or ``auto`` and the server says ``cluster_enabled:1``.  Connecting is
    left to the caller's retries (``Route.detect``)."""
    options = client_options(settings)
    if settings.wait_replicas:
        # WAIT blocks for up to wait_timeout: the socket must outlast it.
        options["socket_timeout"] += settings.wait_timeout
    if settings.cluster == "yes":
        return _cluster(settings, options)
    plain = redis.Redis.from_url(settings.server_url, **options)
    if settings.cluster == "no":
        return Route(plain, settings)
    return _Detecting(plain, settings, options)


class _Detecting(Route):
    """A route that asks the server whether it is a cluster node on first use
    (``resolve``), so that a server still starting is retried like any call."""

    def __init__(self, client: Any, settings: RedisSettings, options: dict[str, Any]) -> None:
        super().__init__(client, settings)
        self._options = options

    def resolve(self) -> Route:
        try:
            info = self.client.info("cluster")
        except redis_errors.ResponseError as exc:
            # Connecting selects the URL's database, which a cluster refuses:
            # Redis says so, Valkey says only that the index is out of range
            # (as a single server with fewer databases would), so ask again
            # on database 0.
            text = str(exc)
            if "SELECT is not allowed in cluster mode" in text:
                info = {"cluster_enabled": 1}
            elif "DB index is out of range" in text and self._cluster_on_database_0():
                info = {"cluster_enabled": 1}
            else:
                raise
        if not int(info.get("cluster_enabled", 0)):
            return Route(self.client, self.settings)
        self.client.close()
        if self.settings.db != 0:
            raise InvalidArgument(
                f"Redis at {self.where} is a Redis Cluster node, and a cluster has database 0 "
                f"only; the store URL names database {self.settings.db}"
            )
        return _cluster(self.settings, self._options)

    def _cluster_on_database_0(self) -> bool:
        # One bare connection with the pool's own settings, on database 0
        # (the client class takes fewer keywords than its connections do).
        pool = self.client.connection_pool
        probe = pool.connection_class(**{**pool.connection_kwargs, "db": 0})
        try:
            probe.send_command("INFO", "cluster")
            reply = probe.read_response()
        except redis_errors.RedisError:
            return False
        finally:
            probe.disconnect()
        text = reply.decode() if isinstance(reply, bytes) else str(reply)
        return "cluster_enabled:1" in text


def _cluster(settings: RedisSettings, options: dict[str, Any]) -> ClusterRoute:
    from redis.backoff import NoBackoff
    from redis.cluster import RedisCluster
    from redis.retry import Retry

    # redis-py follows MOVED/ASK and refreshes its slot map on its own, a
    # few times without sleeping; waiting out a failover is ours (``timeout``).
    options = {**options, "retry": Retry(NoBackoff(), 3)}
    return ClusterRoute(RedisCluster.from_url(settings.server_url, **options), settings)


class Scripts(Batcher):
    """The store's Lua scripts, run by SHA; concurrent calls share a round trip.

    Calls arriving together go out as one pipeline per server (each script
    still runs whole on its own), the way SQLite's writers share a commit: on
    a slow network the round trip, not Redis, is the cost.  See ``_batching``.
    """

    limit = 256

    def __init__(self, route: Route) -> None:
        super().__init__()
        self.route = route
        self._sources: dict[str, str] = {}

    def add(self, source: str) -> str:
        sha = hashlib.sha1(source.encode()).hexdigest()
        self._sources[sha] = source
        return sha

    def load(self) -> None:
        self.route.load_scripts(self._sources.values())

    def run(self, sha: str, keys: list[str], args: list[Any], wait: bool = False) -> Any:
        return self.run_many([(sha, keys, args)], wait)[0]

    def run_many(self, calls: list[Call], wait: bool = False) -> list[Any]:
        """Run the scripts; return their answers, or raise the first error.
        With ``wait`` (and ``wait_replicas`` in the URL), each pipeline ends
        with WAIT."""
        job = self._submit((calls, wait))
        if job.error is not None:
            raise job.error
        answers: list[Any] = job.result  # Lua replies: whatever each script returns
        return answers

    def _run(self, batch: list[Job]) -> None:
        # Changes that wait for replicas and those that do not (stream
        # checkpoints) go in pipelines of their own: a short WAIT fails only
        # the calls that asked for it.
        for wait in (True, False):
            jobs = [job for job in batch if job.payload[1] is wait]
            if jobs:
                self._run_jobs(jobs, wait)

    def _run_jobs(self, batch: list[Job], wait: bool) -> None:
        calls = [call for job in batch for call in job.payload[0]]
        try:
            answers = iter(self.route.run_scripts(calls, wait))
        except Exception as exc:  # noqa: BLE001 - every caller hears of it
            for job in batch:
                job.error = exc
            return
        for job in batch:
            job.result = [next(answers) for _ in job.payload[0]]
            job.error = next((a for a in job.result if isinstance(a, Exception)), None)
