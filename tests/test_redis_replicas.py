"""The Redis store: retries are idempotent across calls, and one replica id
is held by one live process at a time (issue 13, point 10)."""

from __future__ import annotations

import time
import uuid

import pytest

from journal import (
    DuplicateTask,
    JournalConfig,
    StoreError,
    StoreLocked,
    StoreUnavailable,
    TaskJournal,
    TaskStatus,
)
from journal.store.base import TaskRow
from journal.store.redis import RedisStore
from redis_server import admin_client

pytestmark = pytest.mark.redis


@pytest.fixture
def server(private_redis):
    return private_redis


def _journal(url, buffer_cls, **config):
    config.setdefault("sweep_interval", 0)
    config.setdefault("checkpoint_interval", 3600)
    return TaskJournal(url, config=JournalConfig(**config), buffer_class=buffer_cls)


def test_a_registration_that_timed_out_but_landed_is_retried_successfully(server, buffer_cls):
    url = f"{server.url}?prefix=test-{uuid.uuid4().hex}&replica=hub-1&timeout=0.3"
    journal = _journal(url, buffer_cls)
    try:
        journal.register("warm", "n1")  # a connection in the pool, as on a busy hub
        server.freeze()  # the registration's script reaches the server, unanswered
        try:
            with pytest.raises(StoreUnavailable):
                journal.register("t", "n1", meta={"cmd": "make"})
        finally:
            server.thaw()
        time.sleep(0.1)
        reader = RedisStore(url, readonly=True)
        try:
            assert reader.get("t") is not None, "the registration did not land: no test"
        finally:
            reader.close()

        journal.register("t", "n1", meta={"cmd": "make"})  # the retry errors.py asks for
        journal.start("t")
        journal.stream("t").append(b"built\n")
        journal.complete("t", {"exit_code": 0})
    finally:
        journal.close()
    again = _journal(url, buffer_cls)
    try:
        record = again.get("t")
        assert record.status is TaskStatus.COMPLETED
        assert record.streams["stdout"].render() == b"built\n"
    finally:
        again.close()


def _row(task_id, node="n1", meta=None, created=1.0, status="pending", finished=None):
    return TaskRow(task_id, node, status, meta, None, None, created, created, finished, None)


def test_the_retry_token_is_stable_only_for_the_same_registration(redis_url):
    store = RedisStore(redis_url)
    other_replica = RedisStore(redis_url.replace("replica=hub-1", "replica=hub-2"))
    try:
        store.put_task(_row("t", meta='{"a": 1}', created=1.0), new=True)
        # The same registration again (the journal's clock moved on): accepted.
        store.put_task(_row("t", meta='{"a": 1}', created=2.0), new=True)
        for other in (_row("t", node="n2", meta='{"a": 1}'), _row("t", meta='{"a": 2}'),
                      _row("t", meta=None)):
            with pytest.raises(DuplicateTask):
                store.put_task(other, new=True)
        with pytest.raises(DuplicateTask):  # the same call through another replica
            other_replica.put_task(_row("t", meta='{"a": 1}'), new=True)
        # Once the task has moved on, a registration is a duplicate.
        store.put_task(_row("t", meta='{"a": 1}', status="running"))
        with pytest.raises(DuplicateTask):
            store.put_task(_row("t", meta='{"a": 1}'), new=True)
    finally:
        store.close()
        other_replica.close()


def test_two_live_journals_with_one_replica_id_are_refused(redis_url, buffer_cls):
    first = _journal(redis_url, buffer_cls)
    try:
        with pytest.raises(StoreLocked, match="hub-1"):
            _journal(redis_url, buffer_cls)
        first.register("t", "n1")  # the first one is not disturbed
    finally:
        first.close()
    second = _journal(redis_url, buffer_cls)  # after a clean close: at once
    try:
        assert second.get("t").status is TaskStatus.PENDING
    finally:
        second.close()


def test_a_live_holder_in_another_process_is_refused(redis_url, tmp_path):
    """Another process holds the replica id and renews its lease."""
    import subprocess
    import sys

    code = (
        "import sys, time\n"
        "from journal.store.redis import RedisStore\n"
        "store = RedisStore(sys.argv[1])\n"
        "print('open', flush=True)\n"
        "sys.stdin.readline()\n"
        "store.release(); store.close()\n"
    )
    url = redis_url + "&lease=0.6"
    child = subprocess.Popen([sys.executable, "-c", code, url], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "open"
        started = time.monotonic()
        with pytest.raises(StoreLocked, match="hub-1.*held by"):
            RedisStore(url)
        assert time.monotonic() - started < 2
    finally:
        child.stdin.write("\n")
        child.stdin.flush()
        child.wait(10)
    RedisStore(url).close()  # released: opens at once


def test_a_killed_holder_on_this_host_is_taken_over_at_once(redis_url):
    import subprocess
    import sys

    code = (
        "import sys, time\n"
        "from journal.store.redis import RedisStore\n"
        "store = RedisStore(sys.argv[1])\n"
        "print('open', flush=True)\n"
        "time.sleep(60)\n"
    )
    url = redis_url + "&lease=30"
    child = subprocess.Popen([sys.executable, "-c", code, url], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "open"
    child.kill()
    child.wait(10)
    started = time.monotonic()
    RedisStore(url).close()
    assert time.monotonic() - started < 2


def test_a_replica_whose_id_was_taken_stops_writing(redis_url, redis_server):
    import redis

    store = RedisStore(redis_url + "&lease=0.3")
    try:
        client = admin_client(redis_server)
        client.set(store._lease_key, "elsewhere:1:someone-else 300", px=5000)
        client.close()
        deadline = time.monotonic() + 3
        while store._lost is None and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(StoreLocked, match="someone-else"):
            store.put_task(_row("t"), new=True)
    finally:
        store.close()
    client = admin_client(redis_server)
    try:
        # Its close() did not delete the other holder's lease.
        assert client.get(store._lease_key) == b"elsewhere:1:someone-else 300"
    finally:
        client.close()


def test_an_abandoned_journal_is_taken_over_by_the_next_open(redis_url, buffer_cls):
    first = _journal(redis_url + "&lease=30", buffer_cls)
    first.register("t", "n1")
    first.abandon()
    started = time.monotonic()
    again = _journal(redis_url + "&lease=30", buffer_cls)
    try:
        assert time.monotonic() - started < 2
        assert again.recovered == 1
    finally:
        again.close()
