"""``wait_replicas=N`` (issue 18, point 2): every durable change returns
only once N replicas have it, or raises StoreUnavailable saying it may or
may not survive a failover; on one primary with a replica and on a cluster
with a replica per primary."""

from __future__ import annotations

import time
import uuid

import pytest
import redis.cluster

from journal import StoreUnavailable, TaskJournal, TaskStatus
from journal.store.redis import NotReplicated
from redis_server import RedisServer, admin_client

pytestmark = pytest.mark.redis


@pytest.fixture
def primary_and_replica(tmp_path):
    (tmp_path / "primary").mkdir()
    (tmp_path / "replica").mkdir()
    # No delay before the first sync (Redis waits 5 s by default).
    primary = RedisServer(tmp_path / "primary", args=("--repl-diskless-sync-delay", "0"))
    primary.start()
    replica = RedisServer(tmp_path / "replica", args=("--replicaof", "127.0.0.1", str(primary.port)))
    replica.start()
    client = primary.client()
    deadline = time.monotonic() + 10
    while client.info("replication").get("slave0", {}).get("state") != "online":
        assert time.monotonic() < deadline, "the replica did not connect"
        time.sleep(0.05)
    # Online, and confirming writes (it acks nothing while it loads the sync).
    client.set("probe", 1)
    assert client.execute_command("WAIT", 1, 10_000) == 1
    client.delete("probe")
    client.close()
    yield primary, replica
    for server in (replica, primary):
        if server.process is not None:
            server.thaw()
        server.stop()


def _url(server_url, extra=""):
    return f"{server_url}?prefix=test-{uuid.uuid4().hex}&replica=hub-1{extra}"


def test_every_acknowledged_change_is_on_the_replica_when_the_call_returns(primary_and_replica, buffer_cls):
    primary, replica = primary_and_replica
    url = _url(primary.url, "&wait_replicas=1&wait_timeout=5")
    journal = TaskJournal(url, buffer_class=buffer_cls)
    on_replica = replica.client()
    try:
        keys = journal._store.layout.task_keys
        for n in range(50):
            journal.register(f"t{n}", "node")
            # WAIT returned: the replica holds the registration already.
            assert on_replica.hget(keys(f"t{n}")[0], "status") == b"pending"
            journal.start(f"t{n}")
            assert on_replica.hget(keys(f"t{n}")[0], "status") == b"running"
            journal.stream(f"t{n}").append(b"out %d" % n)
            journal.complete(f"t{n}", n)
            assert on_replica.hget(keys(f"t{n}")[0], "result") == str(n).encode()
            assert on_replica.exists(keys(f"t{n}")[1])  # the final streams too
    finally:
        on_replica.close()
        journal.close()


def test_a_replica_that_does_not_confirm_in_time_is_a_store_unavailable(primary_and_replica, buffer_cls):
    primary, replica = primary_and_replica
    url = _url(primary.url, "&wait_replicas=1&wait_timeout=0.3")
    journal = TaskJournal(url, buffer_class=buffer_cls)
    try:
        journal.register("before", "node")
        replica.freeze()  # connected, but confirms nothing
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match=r"WAIT 1 300 heard from 0 .*may or may not survive a failover") as caught:
            journal.register("t", "node")
        took = time.monotonic() - started
        assert isinstance(caught.value, NotReplicated)
        assert 0.3 <= took < 2.0  # one wait_timeout, not retried for the URL's timeout
        # It is on the primary (and reaches the replica once it runs again);
        # a retry of the same registration is recognised.
        replica.thaw()
        on_replica = replica.client()
        deadline = time.monotonic() + 10
        while not on_replica.exists(journal._store.layout.task_keys("t")[0]):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        on_replica.close()
        journal.register("t", "node")
        assert journal.get("t").status is TaskStatus.PENDING
    finally:
        replica.thaw()
        journal.close()


def test_more_replicas_than_there_are_is_refused_at_every_change(primary_and_replica, buffer_cls):
    primary, _ = primary_and_replica
    journal = TaskJournal(_url(primary.url, "&wait_replicas=2&wait_timeout=0.1"),
                          buffer_class=buffer_cls)
    try:
        with pytest.raises(NotReplicated, match="heard from 1 of the 2"):
            journal.register("t", "node")
    finally:
        journal.close()


def test_without_wait_replicas_nothing_waits(primary_and_replica, buffer_cls):
    primary, replica = primary_and_replica
    journal = TaskJournal(_url(primary.url), buffer_class=buffer_cls)
    try:
        replica.freeze()
        started = time.monotonic()
        for n in range(20):
            journal.register(f"t{n}", "node")
        assert time.monotonic() - started < 1.0
    finally:
        replica.thaw()
        journal.close()


def test_wait_replicas_on_a_cluster_with_a_replica_per_primary(redis_replicated, buffer_cls):
    url = _url(redis_replicated, "&wait_replicas=1&wait_timeout=5")
    journal = TaskJournal(url, buffer_class=buffer_cls)
    client = admin_client(redis_replicated)
    try:
        assert journal._store.cluster
        for n in range(60):
            journal.register(f"t{n}", "node")
            journal.start(f"t{n}")
            journal.complete(f"t{n}", n)
        # Each task's result is on the replica of the primary that holds it.
        layout = journal._store.layout
        # Who replicates whom, as the cluster says (CLUSTER SLOTS may leave out
        # a replica that attached a moment ago; CLUSTER NODES does not).
        nodes = client.cluster_nodes()
        ids = {info["node_id"]: address for address, info in nodes.items()}
        replica_of = {ids[info["master_id"]]: address for address, info in nodes.items()
                      if "slave" in info["flags"]}
        primaries = set()
        for n in range(60):
            key = layout.task_keys(f"t{n}")[0]
            primary = client.nodes_manager.get_node_from_slot(redis.cluster.key_slot(key.encode()))
            primaries.add(primary.name)
            host, port = replica_of[primary.name].split(":")
            on_replica = redis.Redis(host=host, port=int(port))
            try:
                on_replica.execute_command("READONLY")
                assert on_replica.hget(key, "result") == str(n).encode()
            finally:
                on_replica.close()
        assert len(primaries) == 3
    finally:
        client.close()
        journal.close()
    with pytest.raises(NotReplicated, match="of the 2 replica"):
        TaskJournal(_url(redis_replicated, "&wait_replicas=2&wait_timeout=0.1")).register("t", "n")
