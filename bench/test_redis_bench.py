"""Redis against SQLite: durable registrations and streaming, one hub
replica and two, and how fast a waiter on one replica hears of a result
written by another.

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
from redis_server import RedisServer  # noqa: E402

THREADS = 16
STORES = ["sqlite", "redis", "redisx2"]  # redisx2: two replicas sharing the work


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


def _open(kind, redis_base, **config):
    """The journals of one setup: one, or two replicas on one namespace."""
    config.setdefault("sweep_interval", 0)
    if kind == "sqlite":
        directory = tempfile.mkdtemp(dir=os.environ.get("BENCH_TMP"))
        urls = [f"sqlite:///{directory}/journal.db?synchronous=normal"]
    else:
        prefix = f"bench-{uuid.uuid4().hex}"
        replicas = 2 if kind == "redisx2" else 1
        urls = [f"{redis_base}?prefix={prefix}&replica=hub-{n}" for n in range(replicas)]
    return [TaskJournal(url, config=JournalConfig(**config), buffer_class=buffer_class("c"))
            for url in urls]


@pytest.mark.parametrize("kind", STORES)
def test_durable_registrations(benchmark, per_op, kind, redis_base):
    benchmark.group = "registrations by store, 16 threads"
    per_thread = 250
    opened = []

    def setup():
        for journal in opened:
            journal.close()
        opened[:] = _open(kind, redis_base)
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
def test_streaming(benchmark, per_op, kind, redis_base):
    benchmark.group = "streaming by store, 1 KB appends, 16 threads, checkpoint every 0.1 s"
    journals = _open(kind, redis_base, checkpoint_interval=0.1)
    stream_1k_appends(benchmark, per_op, journals, appends=1_000_000, rounds=3)
    for journal in journals:
        assert journal.stats()["store_errors"] == 0
        journal.close()


def test_cross_replica_wake(benchmark, per_op, redis_base):
    """From a's complete() returning to b's wait() returning, per task.

    Polling is set to 30 s, so only the published message can wake b in time.
    """
    benchmark.group = "cross-replica wake, redis"
    prefix = f"bench-{uuid.uuid4().hex}"
    a, b = (TaskJournal(f"{redis_base}?prefix={prefix}&replica={name}&poll=30",
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
