"""Redis against SQLite: durable registrations and streaming, one hub
replica and two, one server against a 3-primary Redis Cluster, a primary
with a replica without and with ``wait_replicas=1``, and how fast a waiter
on one replica hears of a result written by another (one server, cluster).

The Redis server is ``JOURNAL_TEST_REDIS_URL`` if set, else a
``redis-server`` from PATH started for the run with persistence off (so
these figures are Redis's round trips, not its disk).  SQLite runs with
``synchronous=normal``, its crash-safe setting that is closest to that.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
import uuid

import pytest

from conftest import buffer_class, run_in_threads, stream_1k_appends

from journal import JournalConfig, TaskJournal

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from redis_server import RedisClusterServers, RedisServer  # noqa: E402

THREADS = 16
# redisx2: two replicas sharing the work; cluster: one hub on a 3-primary
# Redis Cluster; primary / primary-wait1: one hub on a primary with one
# replica, without and with wait_replicas=1 (what waiting for the replica
# costs).
STORES = ["sqlite", "redis", "redisx2", "cluster", "primary", "primary-wait1"]


@pytest.fixture(scope="module")
def redis_base(tmp_path_factory):
    url = os.environ.get("JOURNAL_TEST_REDIS_URL")
    if url:
        yield url
        return
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server on PATH and no JOURNAL_TEST_REDIS_URL")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def redis_cluster_base(tmp_path_factory):
    """A 3-primary cluster: JOURNAL_TEST_REDIS_CLUSTER_URL, or one started here."""
    url = os.environ.get("JOURNAL_TEST_REDIS_CLUSTER_URL")
    if url:
        yield url
        return
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server on PATH and no JOURNAL_TEST_REDIS_CLUSTER_URL")
    cluster = RedisClusterServers(tmp_path_factory.mktemp("cluster"), 3, 0)
    cluster.start()
    yield cluster.url
    cluster.stop()


@pytest.fixture(scope="module")
def redis_primary_base(tmp_path_factory):
    """A primary with one replica (on this machine, as the others)."""
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server on PATH")
    primary = RedisServer(tmp_path_factory.mktemp("primary"), args=("--repl-diskless-sync-delay", "0"))
    primary.start()
    replica = RedisServer(tmp_path_factory.mktemp("replica"),
                          args=("--replicaof", "127.0.0.1", str(primary.port)))
    replica.start()
    client = primary.client()
    client.set("probe", 1)
    assert client.execute_command("WAIT", 1, 30_000) == 1  # the replica is in sync
    client.close()
    yield primary.url
    replica.stop()
    primary.stop()


@pytest.fixture(scope="module")
def bases(request):
    """Server URLs by store kind, started only when a test asks for them."""
    def base(kind):
        if kind == "cluster":
            return request.getfixturevalue("redis_cluster_base")
        if kind.startswith("primary"):
            return request.getfixturevalue("redis_primary_base")
        return request.getfixturevalue("redis_base")
    return base


def _open(kind, bases, **config):
    """The journals of one setup: one, or two replicas on one namespace."""
    config.setdefault("sweep_interval", 0)
    if kind == "sqlite":
        directory = tempfile.mkdtemp(dir=os.environ.get("BENCH_TMP"))
        urls = [f"sqlite:///{directory}/journal.db?synchronous=normal"]
    else:
        prefix = f"bench-{uuid.uuid4().hex}"
        replicas = 2 if kind == "redisx2" else 1
        wait = "&wait_replicas=1&wait_timeout=5" if kind.endswith("wait1") else ""
        urls = [f"{bases(kind)}?prefix={prefix}&replica=hub-{n}{wait}" for n in range(replicas)]
    return [TaskJournal(url, config=JournalConfig(**config), buffer_class=buffer_class("c"))
            for url in urls]


@pytest.mark.parametrize("kind", STORES)
def test_durable_registrations(benchmark, per_op, kind, bases):
    benchmark.group = "registrations by store, 16 threads"
    per_thread = 250
    opened = []

    def setup():
        for journal in opened:
            journal.close()
        opened[:] = _open(kind, bases)
        slices = [[(opened[t % len(opened)], f"t{t}-{n}") for n in range(per_thread)]
                  for t in range(THREADS)]
        return (work, slices), {}

    def work(pairs):
        for journal, task_id in pairs:
            journal.register(task_id, "node")

    per_op(per_thread * THREADS)
    benchmark.pedantic(run_in_threads, setup=setup, rounds=3, iterations=1)
    for journal in opened:
        journal.close()


@pytest.mark.parametrize("kind", STORES)
def test_streaming(benchmark, per_op, kind, bases):
    benchmark.group = "streaming by store, 1 KB appends, 16 threads, checkpoint every 0.1 s"
    journals = _open(kind, bases, checkpoint_interval=0.1)
    stream_1k_appends(benchmark, per_op, journals, appends=1_000_000, rounds=3)
    for journal in journals:
        assert journal.stats()["store_errors"] == 0
        journal.close()


@pytest.mark.parametrize("kind", ["redis", "cluster"])
def test_cross_replica_wake(benchmark, per_op, kind, bases):
    """From a's complete() returning to b's wait() returning, per task.

    Polling is set to 30 s, so only the published message (SPUBLISH per
    bucket on the cluster) can wake b in time.
    """
    benchmark.group = "cross-replica wake"
    prefix = f"bench-{uuid.uuid4().hex}"
    a, b = (TaskJournal(f"{bases(kind)}?prefix={prefix}&replica={name}&poll=30",
                        config=JournalConfig(sweep_interval=0)) for name in ("a", "b"))
    latencies = []
    counter = iter(range(1_000_000))

    def one():
        task_id = f"t{next(counter)}"
        a.register(task_id, "node")
        ready, woken = threading.Event(), []

        def waiter():
            ready.set()
            b.wait(task_id, timeout=10)
            woken.append(time.perf_counter())

        thread = threading.Thread(target=waiter)
        thread.start()
        ready.wait()
        time.sleep(0.01)  # let b's wait begin
        a.complete(task_id, 0)
        done = time.perf_counter()
        thread.join()
        latencies.append(woken[0] - done)

    per_op(1)
    benchmark.pedantic(one, rounds=50, iterations=1)
    latencies.sort()
    benchmark.extra_info["wake_p50_ms"] = round(latencies[len(latencies) // 2] * 1e3, 2)
    benchmark.extra_info["wake_max_ms"] = round(latencies[-1] * 1e3, 2)
    assert latencies[-1] < 10  # every one was woken, none timed out
    a.close()
    b.close()
