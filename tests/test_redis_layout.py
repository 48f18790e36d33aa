"""The bucketed key layout (issue 18, point 1): one slot per script, tasks
spread over every primary of a cluster, listings that fan out over the
buckets, and a namespace of another layout refused, never misread."""

from __future__ import annotations

import uuid

import pytest
import redis.cluster

from journal import StoreError, TaskJournal, TaskStatus
from journal.store.base import TaskRow
from journal.store.redis import RedisStore
from redis_server import admin_client

pytestmark = pytest.mark.redis


@pytest.fixture
def url(redis_server):
    return f"{redis_server}?prefix=test-{uuid.uuid4().hex}&replica=hub-1"


def _prefix(url):
    return url.split("prefix=")[1].split("&")[0]


def test_a_cluster_is_detected_from_any_node(redis_cluster, redis_single):
    on_cluster = RedisStore(f"{redis_cluster}?prefix=test-{uuid.uuid4().hex}")
    on_server = RedisStore(f"{redis_single}?prefix=test-{uuid.uuid4().hex}")
    try:
        assert on_cluster.cluster and not on_server.cluster
    finally:
        on_cluster.close()
        on_server.close()


def test_a_cluster_named_with_another_database_is_refused(redis_cluster):
    with pytest.raises(Exception, match="database 0 only") as caught:
        RedisStore(redis_cluster.replace("/0", "/3") + f"?prefix=test-{uuid.uuid4().hex}")
    from journal import InvalidArgument

    assert isinstance(caught.value, InvalidArgument)


def test_tasks_spread_over_every_primary_of_a_cluster(redis_cluster, buffer_cls):
    url = f"{redis_cluster}?prefix=test-{uuid.uuid4().hex}&replica=hub-1"
    journal = TaskJournal(url, buffer_class=buffer_cls)
    try:
        for n in range(200):
            journal.register(f"t{n}", "node")
        client = admin_client(redis_cluster)
        try:
            layout = journal._store.layout
            owners = {client.nodes_manager.get_node_from_slot(
                redis.cluster.key_slot(layout.task_keys(f"t{n}")[0].encode())).name
                for n in range(200)}
            assert len(owners) == len(client.get_primaries()) == 3
        finally:
            client.close()
        assert journal.stats()["by_status"]["pending"] == 200
    finally:
        journal.close()


def test_every_script_touches_one_slot_whatever_the_id():
    from journal.store._redis_keys import Layout

    layout = Layout("ns")
    for task_id in ["t", "{x}", "a}:streams", "}{", "ü", "x" * 300, "ns:1}"]:
        slots = {redis.cluster.key_slot(key.encode()) for key in layout.script_keys(task_id)}
        slots.add(redis.cluster.key_slot(layout.channel(task_id).encode()))
        assert len(slots) == 1, task_id


def test_listings_merge_the_buckets_newest_first(url, buffer_cls, clock):
    journal = TaskJournal(url, buffer_class=buffer_cls, clock=clock)
    try:
        for n in range(300):  # more than one page of a bucket: 128
            clock.advance(1)
            journal.register(f"t{n:03d}", f"node-{n % 3}")
            if n % 2:
                journal.complete(f"t{n:03d}", n)
        ids = [row.task_id for row in journal._store.list_tasks()]
        assert ids == [f"t{n:03d}" for n in reversed(range(300))]
        assert [row.task_id for row in journal._store.list_tasks(limit=5)] == ids[:5]
        done = journal._store.list_tasks(status="completed", node_id="node-1")
        assert [row.task_id for row in done] == [f"t{n:03d}" for n in reversed(range(300))
                                                 if n % 2 and n % 3 == 1]
        assert journal.stats()["by_status"]["completed"] == 150
        assert len(journal._store.load_in_flight()) == 150
    finally:
        journal.close()


def test_a_store_of_the_first_layout_is_refused_not_read_as_empty(url, redis_server):
    prefix = _prefix(url)
    client = admin_client(redis_server)
    try:
        # What the first layout wrote for one task: a global index.
        client.zadd(f"{prefix}:index:created", {"old-task": 1.0})
        with pytest.raises(StoreError, match=r"first key layout.*index:created.*prefix="):
            RedisStore(url)
        with pytest.raises(StoreError, match="first key layout"):
            RedisStore(url, readonly=True)
        assert client.zcard(f"{prefix}:index:created") == 1  # left as it was
        assert client.get(f"{{{prefix}}}:layout") is None
    finally:
        client.delete(f"{prefix}:index:created")
        client.close()


def test_a_layout_marker_of_another_version_is_refused(url, redis_server):
    prefix = _prefix(url)
    client = admin_client(redis_server)
    try:
        client.set(f"{{{prefix}}}:layout", "3 128")
        with pytest.raises(StoreError, match=r"layout is b'3 128'.*newer taskjournal"):
            RedisStore(url)
    finally:
        client.close()


def test_the_bucket_count_is_read_from_the_namespace(url, redis_server):
    """A namespace made with another bucket count keeps it: every replica
    reads the count from the marker, never from its own constant."""
    prefix = _prefix(url)
    client = admin_client(redis_server)
    client.set(f"{{{prefix}}}:layout", "2 8")
    client.close()
    store = RedisStore(url)
    try:
        assert store.layout.buckets == 8
        store.put_task(TaskRow("t", "n", "pending", None, None, None, 1.0, 1.0, None, None), new=True)
        assert store.count_by_status() == {"pending": 1}
        assert store.layout.task_keys("t")[0].startswith(f"{{{prefix}:")
        assert [row.task_id for row in store.list_tasks()] == ["t"]
    finally:
        store.close()
    assert TaskJournal(url).get("t").status is TaskStatus.PENDING
