"""The Redis store under real server faults: every error is a StoreError,
and the background threads (lease, "ended" listener) survive them all.

Each test has a redis-server of its own, so it can be pushed to maxmemory,
made a replica (READONLY), given an ACL user, or closed under the store
(issue 13, points 3 and 5).
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from journal import JournalConfig, StoreError, StoreUnavailable, TaskJournal, TaskStatus
from journal.store.base import TaskRow
from journal.store.redis import RedisStore

pytestmark = pytest.mark.redis


@pytest.fixture
def server(private_redis):
    return private_redis


@pytest.fixture
def admin(server):
    client = server.client()
    yield client
    client.config_set("maxmemory", 0)
    client.close()


def _url(server, **options):
    options.setdefault("prefix", f"test-{uuid.uuid4().hex}")
    options.setdefault("replica", "hub-1")
    return server.url + "?" + "&".join(f"{k}={v}" for k, v in options.items())


def _row(task_id: str) -> TaskRow:
    return TaskRow(task_id, "n1", "pending", None, None, None, 1.0, 1.0, None, None)


def _oom(admin) -> None:
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", 1)


def _lease_thread(store):
    [thread] = [t for t in store._threads if t.name == "journal-redis-lease"]
    return thread


def test_an_oom_is_a_store_error_that_says_nothing_was_written(server, admin):
    store = RedisStore(_url(server))
    try:
        store.put_task(_row("running"), new=True)
        _oom(admin)
        with pytest.raises(StoreError, match=r"out of memory \(maxmemory\): nothing was written"):
            store.put_task(_row("t"), new=True)
        with pytest.raises(StoreError, match="out of memory"):
            store.put_streams([("running", "stdout", b"x")])
        assert store.get("t") is None
        admin.config_set("maxmemory", 0)
        store.put_task(_row("t"), new=True)
        assert store.get("t").row.status == "pending"
    finally:
        store.close()


def test_the_lease_thread_outlives_an_oom_and_renews_once_memory_is_back(server, admin):
    store = RedisStore(_url(server, lease=0.3))
    try:
        lease_key = store._lease_key
        _oom(admin)
        time.sleep(1.2)  # four lease periods: the lease ran out meanwhile
        assert admin.get(lease_key) is None
        assert _lease_thread(store).is_alive()
        assert store.background_errors >= 1
        assert "out of memory" in store.last_background_error
        admin.config_set("maxmemory", 0)
        deadline = time.monotonic() + 2
        while admin.get(lease_key) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert admin.get(lease_key) is not None, "the lease was not renewed after the OOM"
        assert 0 < admin.pttl(lease_key) <= 300
    finally:
        store.close()


def test_a_journal_checkpoint_during_an_oom_raises_nothing_and_the_journal_goes_on(
    server, admin, buffer_cls
):
    url = _url(server)
    journal = TaskJournal(url, config=JournalConfig(sweep_interval=0, checkpoint_interval=3600),
                          buffer_class=buffer_cls)
    try:
        journal.register("t", "n1")
        journal.start("t")
        journal.stream("t").append(b"during the OOM\n")
        _oom(admin)
        assert journal.checkpoint() == 0
        assert journal.stats()["store_errors"] >= 1
        admin.config_set("maxmemory", 0)
        assert journal.checkpoint() == 1
        journal.complete("t", 0)
    finally:
        journal.close()
    again = TaskJournal(url, config=JournalConfig(sweep_interval=0), buffer_class=buffer_cls)
    try:
        record = again.get("t")
        assert record.status is TaskStatus.COMPLETED
        assert record.streams["stdout"].render() == b"during the OOM\n"
    finally:
        again.close()


def test_a_lease_renewal_that_raises_anything_does_not_kill_the_thread(server, monkeypatch):
    store = RedisStore(_url(server, lease=0.3))
    try:
        real, calls = store._renew_lease, []

        def flaky():
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("injected: a bug in a renewal")
            real()

        monkeypatch.setattr(store, "_renew_lease", flaky)
        deadline = time.monotonic() + 3
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _lease_thread(store).is_alive()
        assert len(calls) >= 3
        assert store.background_errors == 1
        assert "RuntimeError" in store.last_background_error
    finally:
        store.close()


def test_the_ended_listener_outlives_a_callback_that_raises(server):
    store = RedisStore(_url(server))
    heard, calls = [], []

    def callback(task_id):
        calls.append(task_id)
        if len(calls) == 2:
            raise ValueError("injected: a waiter's bug")
        heard.append(task_id)

    try:
        store.on_ended(callback)
        publisher = server.client()
        deadline = time.monotonic() + 3
        while not heard and time.monotonic() < deadline:
            time.sleep(0.02)  # the first callback(None): subscribed
        publisher.publish(store.layout.channel("a"), "a")  # raises in the callback
        publisher.publish(store.layout.channel("b"), "b")
        while "b" not in heard and time.monotonic() < deadline:
            time.sleep(0.02)
        publisher.close()
        assert "b" in heard
        assert store.background_errors >= 1
        assert all(t.is_alive() for t in store._threads)
    finally:
        store.close()


def test_readonly_during_a_failover_is_retried_within_the_timeout(server, admin, tmp_path):
    store = RedisStore(_url(server, timeout=5))
    try:
        # The server becomes a replica (of a server that is not there): writes
        # get READONLY, as during a failover.
        admin.execute_command("REPLICAOF", "127.0.0.1", "1")
        promote = threading.Timer(0.5, admin.execute_command, ("REPLICAOF", "NO", "ONE"))
        promote.start()
        started = time.monotonic()
        store.put_task(_row("t"), new=True)
        assert time.monotonic() - started >= 0.4
        promote.join()
        assert store.get("t").row.status == "pending"
    finally:
        store.close()


def test_readonly_that_outlasts_the_timeout_is_store_unavailable(server, admin):
    store = RedisStore(_url(server, timeout=0.3))
    try:
        admin.execute_command("REPLICAOF", "127.0.0.1", "1")
        with pytest.raises(StoreUnavailable, match="read-only"):
            store.put_task(_row("t"), new=True)
    finally:
        admin.execute_command("REPLICAOF", "NO", "ONE")
        store.close()


def test_a_missing_permission_is_a_store_error(server, admin):
    admin.execute_command("ACL", "SETUSER", "noscripts", "on", ">secret", "~*", "&*", "+@all",
                          "-evalsha", "-eval")
    with pytest.raises(StoreError, match="(?i)permission.*nothing was written"):
        RedisStore(_url(server).replace("redis://", "redis://noscripts:secret@"))
    admin.execute_command("ACL", "SETUSER", "noreads", "on", ">secret", "~*", "&*", "+@all",
                          "-hgetall")
    store = RedisStore(_url(server).replace("redis://", "redis://noreads:secret@"))
    try:
        with pytest.raises(StoreError, match="(?i)permission"):
            store.get("t")
    finally:
        store.close()


def test_wrong_credentials_are_a_store_error_at_once(server, admin):
    admin.execute_command("ACL", "SETUSER", "someone", "on", ">right", "~*", "+@all")
    url = _url(server, timeout=30).replace("redis://", "redis://someone:wrong@")
    started = time.monotonic()
    with pytest.raises(StoreError, match="(?i)credentials|auth"):
        RedisStore(url)
    assert time.monotonic() - started < 5, "a refused login is not an outage to wait out"


def test_scripts_that_go_missing_twice_are_a_store_error(server, admin, monkeypatch):
    store = RedisStore(_url(server))
    try:
        admin.script_flush()
        monkeypatch.setattr(store._scripts, "load", lambda: None)  # the reload is lost too
        with pytest.raises(StoreError, match="(?i)script"):
            store.put_streams([("t", "stdout", b"x")])
    finally:
        store.close()


def test_a_killed_server_is_store_unavailable(server):
    store = RedisStore(_url(server, timeout=0.3))
    try:
        server.kill()
        with pytest.raises(StoreUnavailable):
            store.get("t")
        with pytest.raises(StoreUnavailable):
            store.put_task(_row("t"), new=True)
    finally:
        store.close()


# -- after close() -------------------------------------------------------------


def test_reads_and_writes_after_close_say_the_store_is_closed(server):
    store = RedisStore(_url(server))
    store.put_task(_row("t"), new=True)
    store.close()
    for call in (
        lambda: store.get("t"),
        lambda: store.get_stream("t", "stdout"),
        lambda: store.list_tasks(),
        lambda: store.count_by_status(),
        lambda: store.put_task(_row("u"), new=True),
        lambda: store.put_streams([("t", "stdout", b"x")]),
        lambda: store.load_in_flight(),
    ):
        with pytest.raises(StoreError, match="closed"):
            call()
    store.close()  # idempotent
