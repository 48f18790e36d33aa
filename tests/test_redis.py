"""The Redis store: hub replicas sharing tasks, results and waits; outages.

Several TaskJournals on one namespace stand in for hub replicas.  Every
journal-level test also runs on Redis through the ``store_url`` fixture;
these are the tests only a shared store has.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import uuid

import pytest
import zlib

import redis
import redis.cluster

from journal import (
    InvalidArgument,
    JournalConfig,
    OwnedElsewhere,
    ResultExpired,
    StoreUnavailable,
    TaskJournal,
    TaskLost,
    TaskStatus,
    UnknownTask,
)
from journal.store import _redis_keys
from journal.store._redis_keys import BUCKETS
from journal.store.redis import RedisStore
from in_thread import in_thread
from redis_server import RedisServer, admin_client

pytestmark = pytest.mark.redis

WAIT = 10.0  # generous: these waits end by being woken, not by timing out


@pytest.fixture
def namespace(redis_server):
    """(server URL, a fresh prefix)."""
    return redis_server, f"test-{uuid.uuid4().hex}"


@pytest.fixture
def replicas(namespace, buffer_cls, clock):
    """A function opening hub replica ``name`` on the shared namespace."""
    server, prefix = namespace
    opened = []

    def open_replica(name, *, lease=10.0, poll=1.0, timeout=10.0, server_url=server, **config):
        # The tests sweep and checkpoint by hand: no background pass races them.
        config.setdefault("sweep_interval", 0)
        config.setdefault("checkpoint_interval", 3600)
        url = f"{server_url}?prefix={prefix}&replica={name}&lease={lease}&poll={poll}&timeout={timeout}"
        journal = TaskJournal(url, config=JournalConfig(**config), clock=clock, buffer_class=buffer_cls)
        opened.append(journal)
        return journal

    yield open_replica
    for journal in opened:
        journal.close()




def _keys(namespace):
    server, prefix = namespace
    client = admin_client(server)
    try:
        if isinstance(client, redis.cluster.RedisCluster):
            keys = client.keys(f"*{prefix}*", target_nodes=redis.cluster.RedisCluster.PRIMARIES)
        else:
            keys = client.keys(f"*{prefix}*")
        return sorted(key.decode() for key in keys)
    finally:
        client.close()


# -- what one replica writes, another reads -----------------------------------


def test_a_replica_reads_status_result_and_checkpoint_written_by_another(replicas):
    a, b = replicas("a"), replicas("b")
    a.register("t", "n1", meta={"cmd": "make"})
    a.start("t")
    out = a.stream("t")
    out.append(b"compiling\nerror: x.c:3: boom\n" + b"." * 100_000 + b"\nlast line\n")
    assert b.get("t").streams == {}  # nothing checkpointed yet
    a.checkpoint()
    seen = b.get("t")
    assert (seen.status, seen.node_id, seen.meta, seen.owner) == (TaskStatus.RUNNING, "n1", {"cmd": "make"}, "a")
    assert seen.streams["stdout"].total == out.total
    assert seen.streams["stdout"].render() == a.get("t").streams["stdout"].render()
    a.complete("t", {"exit_code": 2})
    done = b.get("t")
    assert (done.status, done.result) == (TaskStatus.COMPLETED, {"exit_code": 2})
    assert [r.task_id for r in b.list_tasks(status=TaskStatus.COMPLETED)] == ["t"]
    assert b.stats()["by_status"]["completed"] == 1


def test_in_flight_lists_every_replicas_tasks_with_their_owner(replicas):
    a, b = replicas("a"), replicas("b")
    a.register("from-a", "n1")
    b.register("from-b", "n2")
    for journal in (a, b):
        assert {(r.task_id, r.owner) for r in journal.in_flight()} == {("from-a", "a"), ("from-b", "b")}


def test_ids_are_unique_across_replicas(replicas):
    a, b = replicas("a"), replicas("b")
    a.register("t", "n1")
    from journal import DuplicateTask

    with pytest.raises(DuplicateTask, match="on node 'n1'"):
        b.register("t", "n2")


def test_a_replica_cannot_act_on_a_task_another_one_owns(replicas):
    a, b = replicas("a"), replicas("b")
    a.register("t", "n1")
    with pytest.raises(OwnedElsewhere) as caught:
        b.reattach("t", "n1")
    assert caught.value.owner == "a" and "'a'" in str(caught.value)
    with pytest.raises(OwnedElsewhere, match="held by hub replica 'a'"):
        b.complete("t", 0)
    with pytest.raises(OwnedElsewhere, match="held by hub replica 'a'"):
        b.stream("t")
    assert a.get("t").status is TaskStatus.PENDING


# -- waits across replicas ------------------------------------------------------


def _timed(call, *args):
    """``call(*args)``, and the seconds it took."""
    started = time.monotonic()
    return call(*args), time.monotonic() - started


def test_a_waiter_on_one_replica_is_woken_by_another_replicas_completion(replicas):
    # poll=30: without the published message, b would only look again when
    # its wait times out, after WAIT seconds.
    a, b = replicas("a", poll=30), replicas("b", poll=30)
    a.register("t", "n1")
    waiter = in_thread(_timed, b.wait, "t", WAIT)
    time.sleep(0.1)
    a.complete("t", ["done"])
    record, seconds = waiter()
    assert record.result == ["done"]
    assert seconds < WAIT / 2, "woken by its timeout, not by the message"


def test_an_async_waiter_is_woken_across_replicas(replicas):
    a, b = replicas("a", poll=30), replicas("b", poll=30)
    a.register("t", "n1")

    async def scenario():
        started = time.monotonic()
        waiting = asyncio.ensure_future(b.wait_async("t", WAIT))
        await asyncio.sleep(0.1)
        a.fail("t", "exit 1", result=1)
        return await waiting, time.monotonic() - started

    record, seconds = asyncio.run(scenario())
    assert (record.status, record.error, record.result) == (TaskStatus.FAILED, "exit 1", 1)
    assert seconds < WAIT / 2, "woken by its timeout, not by the message"


def test_a_lost_message_only_delays_the_wait(replicas, monkeypatch):
    a = replicas("a", poll=0.2)
    # Replica b never hears a published message: only its polling is left.
    monkeypatch.setattr(RedisStore, "on_ended", lambda self, callback: None)
    b = replicas("b", poll=0.2)
    a.register("t", "n1")
    waiter = in_thread(b.wait, "t", WAIT)
    time.sleep(0.3)
    a.complete("t", 7)
    assert waiter().result == 7


def test_a_remote_wait_times_out_like_a_local_one(replicas):
    from journal import WaitTimeout

    a, b = replicas("a", poll=0.05), replicas("b", poll=0.05)
    a.register("t", "n1")
    with pytest.raises(WaitTimeout, match="still PENDING"):
        b.wait("t", timeout=0.2)


# -- a replica that dies ----------------------------------------------------------


def test_a_dead_replicas_tasks_are_adopted_reattached_or_lost(replicas, clock):
    # A lease of 1.5 s: with 0.5 s, a loaded CI machine let a's lease run out
    # between abandon() and the first reattach below.
    a = replicas("a", lease=1.5)
    b = replicas("b", lease=1.5)
    c = replicas("c", lease=1.5, reattach_grace=30)
    for task_id in ("resumed", "orphan"):
        a.register(task_id, "n1")
        a.start(task_id)
        a.stream(task_id).append(b"before the crash\n")
    a.checkpoint()
    a.stream("resumed").append(b"never checkpointed\n")
    waiter_b = in_thread(b.wait, "orphan", WAIT)
    a.abandon()  # the replica dies: no release of its lease, no last checkpoint

    with pytest.raises(OwnedElsewhere, match="'a'"):
        c.reattach("resumed", "n1")  # a's lease is still alive
    time.sleep(1.9)
    assert c.sweep()["adopted"] == 2
    assert b.sweep()["adopted"] == 0  # one owner per task
    assert {(r.task_id, r.owner, r.detached) for r in c.in_flight()} == {
        ("resumed", "c", True), ("orphan", "c", True)
    }

    record = c.reattach("resumed", "n1")
    assert record.streams["stdout"].total == len(b"before the crash\n")
    c.stream("resumed").append(b"resent after re-attaching\n")
    c.complete("resumed", 0)
    assert b.get("resumed").streams["stdout"].render() == b"before the crash\nresent after re-attaching\n"

    clock.advance(31)
    assert c.sweep()["lost"] == 1
    with pytest.raises(TaskLost, match="did not re-attach"):
        waiter_b()


def test_a_node_may_reattach_through_any_replica(replicas):
    """b adopted a's tasks, but the node's new connection lands on c."""
    a = replicas("a", lease=0.5)
    b, c = replicas("b", lease=0.5), replicas("c", lease=0.5)
    a.register("t", "n1")
    a.stream("t").append(b"part one\n")
    a.checkpoint()
    a.abandon()
    time.sleep(0.7)
    assert b.sweep()["adopted"] == 1
    waiter = in_thread(b.wait, "t", WAIT)  # waits on b, which holds it
    c.reattach("t", "n1")  # allowed: b holds it detached
    assert c.get("t").owner == "c"
    with pytest.raises(OwnedElsewhere, match="now owned by hub replica 'c'"):
        b.cancel("t")  # b still held it: the store refuses b's write
    b.sweep()
    assert [r.owner for r in b.in_flight()] == ["c"]
    c.stream("t").append(b"part two\n")
    c.complete("t", {"exit_code": 0})
    assert waiter().result == {"exit_code": 0}
    assert b.get("t").streams["stdout"].render() == b"part one\npart two\n"


def test_a_closed_replica_hands_its_tasks_over_at_once(replicas):
    a, b = replicas("a", lease=30), replicas("b", lease=30)
    a.register("t", "n1")
    a.close()  # gives up its lease: no need to wait 30 s
    assert b.sweep()["adopted"] == 1
    assert b.reattach("t", "n1").owner == "b"


def test_a_restarted_replica_takes_its_own_tasks_back_at_once(replicas):
    first = replicas("hub-1", lease=30)
    first.register("t", "n1")
    first.abandon()
    again = replicas("hub-1", lease=30)
    assert again.recovered == 1
    assert again.reattach("t", "n1").detached is False


# -- retention: EXPIRE and tombstones ----------------------------------------------


def test_finished_tasks_carry_an_expire_and_in_flight_ones_do_not(replicas, namespace):
    a = replicas("a", result_ttl=120)
    a.register("done", "n")
    a.stream("done").append(b"x")
    a.complete("done", 0)
    a.register("running", "n")
    a.stream("running").append(b"y")
    a.checkpoint()
    server, prefix = namespace
    client = admin_client(server)
    try:
        for key in a._store.layout.task_keys("done"):
            assert 110_000 < client.pttl(key) <= 120_000
        for key in a._store.layout.task_keys("running"):
            assert client.pttl(key) == -1
    finally:
        client.close()


def test_expired_stays_apart_from_unknown_on_every_replica(replicas, clock):
    a, b = replicas("a", result_ttl=100), replicas("b", result_ttl=100)
    a.register("t", "n")
    a.complete("t", 1)
    clock.advance(101)
    assert b.sweep()["expired"] == 1
    assert a.sweep()["expired"] == 0  # b did it, a lets go of its copy
    for journal in (a, b):
        with pytest.raises(ResultExpired):
            journal.get("t")
    clock.advance(101)
    assert a.sweep()["tombstones_forgotten"] == 1
    with pytest.raises(UnknownTask):
        b.wait("t", timeout=0)


def test_the_key_layout_is_the_documented_one(replicas, namespace):
    a = replicas("a")
    a.register("t", "n")
    a.stream("t").append(b"x")
    a.complete("t", 0)
    prefix = namespace[1]
    bucket = zlib.crc32(b"t") % BUCKETS
    tag = f"{{{prefix}:{bucket}}}"
    assert _keys(namespace) == sorted([
        f"{tag}:task:t", f"{tag}:streams:t", f"{tag}:created", f"{tag}:finished",
        f"{tag}:status", f"{tag}:counts", f"{{{prefix}}}:replica:a", f"{{{prefix}}}:layout",
    ])
    for key in _keys(namespace):
        pattern = (key.replace(f"{prefix}:{bucket}", "ns:b").replace(prefix, "ns")
                   .replace(":task:t", ":task:<id>").replace(":streams:t", ":streams:<id>")
                   .replace(":replica:a", ":replica:<replica id>"))
        assert pattern in _redis_keys.__doc__
    # Every key of the task and its bucket is in one slot.
    assert len({redis.cluster.key_slot(key.encode()) for key in a._store.layout.script_keys("t")}) == 1


def test_check_finds_and_repair_fixes_miscounted_statuses(replicas, namespace):
    a = replicas("a")
    a.register("t", "n")
    assert a.check() == []
    server, prefix = namespace
    client = admin_client(server)
    client.hincrby(a._store.layout.bucket_keys[a._store.layout.bucket("t")].counts, "pending", 5)
    client.close()
    [problem] = a.check()
    assert "disagree" in problem
    a._store.repair()
    assert a.check() == [] and a.stats()["by_status"]["pending"] == 1


# -- bad input -----------------------------------------------------------------


@pytest.mark.parametrize(
    "url, message",
    [
        ("redis://", "looks like redis://host"),
        ("redis://127.0.0.1:6379/0?prefix=a b", "prefix 'a b'"),
        ("redis://127.0.0.1:6379/0?lease=0", "lease in a redis:// store URL is seconds > 0"),
        ("redis://127.0.0.1:6379/0?timeout=soon", "timeout in a redis:// store URL"),
        ("redis://127.0.0.1:6379/0?replica=../x", "replica '../x'"),
    ],
)
def test_bad_redis_urls(url, message):
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace("?", r"\?")):
        TaskJournal(url)


def test_without_the_redis_extra_the_error_names_it():
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "from journal import TaskJournal, InvalidArgument\n"
        "try:\n    TaskJournal('redis://127.0.0.1:6379/0')\n"
        "except InvalidArgument as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'taskjournal[redis]'" in out.stdout


# -- outages: a real server stopped and restarted ---------------------------------


@pytest.fixture
def outage_server(tmp_path):
    """A server of the test's own, with an fsynced append-only file, so that
    what it acknowledged survives its restart."""
    server = RedisServer(tmp_path, persistent=True)
    server.start()
    yield server
    server.stop()


def test_streaming_survives_a_redis_restart(replicas, outage_server):
    journal = replicas("a", server_url=outage_server.url, timeout=1.0)
    journal.register("t", "n1")
    journal.start("t")
    out = journal.stream("t")
    out.append(b"before the outage\n")
    assert journal.checkpoint() == 1

    outage_server.stop()
    out.append(b"during the outage\n")  # appends go on in memory
    assert journal.checkpoint() == 0
    stats = journal.stats()
    assert stats["store_errors"] == 1 and "did not answer" in stats["last_store_error"]
    with pytest.raises(StoreUnavailable, match="nothing was confirmed"):
        journal.register("u", "n1")
    with pytest.raises(StoreUnavailable):
        journal.complete("t", 0)
    assert journal.get("t").status is TaskStatus.RUNNING  # nothing half-done

    outage_server.start()
    assert journal.checkpoint() == 1
    journal.complete("t", 0)
    reader = replicas("b", server_url=outage_server.url)
    record = reader.get("t")
    assert record.status is TaskStatus.COMPLETED
    assert record.streams["stdout"].render() == b"before the outage\nduring the outage\n"


def test_a_short_outage_is_ridden_out_by_retrying(replicas, outage_server):
    journal = replicas("a", server_url=outage_server.url, timeout=10.0)
    journal.register("t", "n1")
    outage_server.stop()
    restarter = threading.Timer(0.5, outage_server.start)
    restarter.start()
    try:
        journal.complete("t", "ok")  # retried with backoff until the server is back
    finally:
        restarter.join()
    assert replicas("b", server_url=outage_server.url).get("t").result == "ok"


def test_a_waiter_survives_a_redis_restart(replicas, outage_server):
    a = replicas("a", server_url=outage_server.url, poll=30)
    b = replicas("b", server_url=outage_server.url, poll=30)
    a.register("t", "n1")
    waiter = in_thread(_timed, b.wait, "t", WAIT)
    time.sleep(0.1)
    outage_server.stop()
    time.sleep(0.3)
    outage_server.start()
    a.complete("t", 3)  # its message may reach b before b has resubscribed
    record, seconds = waiter()
    assert record.result == 3
    assert seconds < WAIT / 2, "the resubscription did not look again"
