"""A Redis Cluster losing a primary, and moving slots, under live hubs
(issue 18, point 5).  Each test starts a cluster of its own: it kills nodes
and moves slots, which no other test should see."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import redis
import redis.cluster

from journal import JournalConfig, JournalInspector, TaskJournal, TaskStatus
from redis_server import RedisClusterServers

pytestmark = [pytest.mark.redis, pytest.mark.timeout(240)]


class Writers:
    """Threads registering, starting, streaming and completing tasks through
    several hubs, keeping what each call acknowledged (returned from)."""

    def __init__(self, hubs: dict[str, TaskJournal], threads_per_hub: int = 2) -> None:
        self.hubs = hubs
        self.stop = threading.Event()
        self.lock = threading.Lock()
        #: task id -> the last step acknowledged: "registered", "started", "completed".
        self.acked: dict[str, str] = {}
        self.failed = 0
        self.errors: list[str] = []
        self.threads = [
            threading.Thread(target=self.run, args=(hub, n), daemon=True)
            for hub in hubs for n in range(threads_per_hub)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)
            assert not thread.is_alive()

    def run(self, hub: str, n: int) -> None:
        journal = self.hubs[hub]
        i = 0
        while not self.stop.is_set():
            i += 1
            task_id = f"{hub}-{n}-{i}"
            steps = (
                ("registered", lambda: journal.register(task_id, f"node-{n}")),
                ("started", lambda: journal.start(task_id)),
                (None, lambda: journal.stream(task_id).append(b"line %d\n" % i * 20)),
                ("completed", lambda: journal.complete(task_id, i)),
            )
            for step, call in steps:
                try:
                    call()
                except Exception as exc:  # noqa: BLE001 - an unacknowledged change
                    with self.lock:
                        self.failed += 1
                        if len(self.errors) < 5:
                            self.errors.append(f"{type(exc).__name__}: {exc}")
                    break
                if step is not None:
                    with self.lock:
                        self.acked[task_id] = step

    def count(self) -> int:
        with self.lock:
            return len(self.acked)

    def wait_for(self, more: int, seconds: float = 60) -> None:
        target = self.count() + more
        deadline = time.monotonic() + seconds
        while self.count() < target:
            assert time.monotonic() < deadline, f"writers stalled: {self.errors}"
            time.sleep(0.02)


def _check_acknowledged(url: str, acked: dict[str, str]) -> None:
    """Every acknowledged change, read through a fresh inspector."""
    inspector = JournalInspector(url)
    try:
        for task_id, step in acked.items():
            record = inspector.get(task_id)
            if step == "completed":
                assert record.status is TaskStatus.COMPLETED, task_id
                assert record.result == int(task_id.rsplit("-", 1)[1])
                assert record.streams["stdout"].total > 0
            elif step == "started":
                assert record.status in (TaskStatus.RUNNING, TaskStatus.COMPLETED), task_id
            else:
                assert record.status is not None
    finally:
        inspector.close()


def _node_of(client, key: str) -> str:
    return client.nodes_manager.get_node_from_slot(redis.cluster.key_slot(key.encode())).name


def test_a_killed_primary_loses_nothing_acknowledged_with_wait_replicas(tmp_path, buffer_cls):
    cluster = RedisClusterServers(tmp_path, primaries=3, replicas=1, node_timeout_ms=1000)
    cluster.start()
    prefix = f"fo-{uuid.uuid4().hex[:8]}"
    base = f"?prefix={prefix}&wait_replicas=1&wait_timeout=1&timeout=30"
    hubs = {}
    try:
        for name in ("hub-a", "hub-b"):
            hubs[name] = TaskJournal(f"{cluster.url}{base}&replica={name}", buffer_class=buffer_cls,
                                     config=JournalConfig(checkpoint_interval=0.05))
        writers = Writers(hubs)
        writers.start()
        writers.wait_for(300)
        # The primary holding the most acknowledged tasks.
        client = redis.cluster.RedisCluster(host="127.0.0.1", port=cluster.ports[0])
        layout = hubs["hub-a"]._store.layout
        with writers.lock:
            ids = list(writers.acked)
        by_node: dict[str, int] = {}
        for task_id in ids:
            name = _node_of(client, layout.task_keys(task_id)[0])
            by_node[name] = by_node.get(name, 0) + 1
        victim = max(by_node, key=by_node.__getitem__)
        client.close()
        victim_port = int(victim.rsplit(":", 1)[1])
        heir = cluster.replica_of(victim_port)
        cluster.kill(victim_port)
        killed_at = time.monotonic()
        cluster.wait_promoted(heir)
        promoted_after = time.monotonic() - killed_at
        # Until the dead node comes back (as the new primary's replica),
        # writes to its slots cannot be confirmed by a replica: they fail
        # with NotReplicated, never acknowledged.
        cluster.start_node(victim_port)
        cluster.wait_healthy(60)
        writers.wait_for(200)  # and the hubs go on writing
        writers.finish()
        assert promoted_after < 30
        live = cluster.live_ports()[0]
        _check_acknowledged(f"redis://127.0.0.1:{live}/0?prefix={prefix}", writers.acked)
        completed = sum(1 for step in writers.acked.values() if step == "completed")
        assert completed >= 300
    finally:
        for journal in hubs.values():
            journal.close()
        cluster.stop()


def _migrate_slot(cluster: RedisClusterServers, slot: int, source: int, target: int) -> None:
    """Move one slot from port ``source`` to port ``target`` a few keys at a
    time (with pauses, so scripts meet half-moved slots: ASK and TRYAGAIN)."""
    nodes = {port: redis.Redis(port=port) for port in cluster.live_ports()}
    try:
        ids = {port: nodes[port].execute_command("CLUSTER", "MYID").decode() for port in nodes}
        nodes[target].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        nodes[source].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        while True:
            keys = nodes[source].execute_command("CLUSTER", "GETKEYSINSLOT", slot, 20)
            if not keys:
                break
            nodes[source].execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
            time.sleep(0.005)
        for node in nodes.values():
            node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
    finally:
        for node in nodes.values():
            node.close()


def test_slots_of_live_tasks_move_between_primaries_while_they_stream(tmp_path, buffer_cls):
    cluster = RedisClusterServers(tmp_path, primaries=3, replicas=0)
    cluster.start()
    prefix = f"mv-{uuid.uuid4().hex[:8]}"
    hubs = {}
    try:
        for name in ("hub-a", "hub-b"):
            # poll=30: a waiter on the other hub is woken by the sharded
            # "ended" message, or not in time at all.
            hubs[name] = TaskJournal(
                f"{cluster.url}?prefix={prefix}&replica={name}&poll=30&timeout=30",
                buffer_class=buffer_cls, config=JournalConfig(checkpoint_interval=0.05))
        writers = Writers(hubs)
        writers.start()
        writers.wait_for(100)
        # Listings fan out over the buckets while they move: every one
        # answers, and the number of tasks they count never goes down.
        listed: list[int] = []
        listing_errors: list[str] = []

        def list_while_moving() -> None:
            while not writers.stop.is_set():
                try:
                    total = sum(hubs["hub-b"].stats()["by_status"].values())
                    rows = hubs["hub-b"]._store.list_tasks(limit=20)
                except Exception as exc:  # noqa: BLE001 - reported below
                    listing_errors.append(f"{type(exc).__name__}: {exc}")
                    return
                assert len(rows) == 20
                listed.append(total)

        lister = threading.Thread(target=list_while_moving, daemon=True)
        lister.start()
        client = redis.cluster.RedisCluster(host="127.0.0.1", port=cluster.ports[0])
        layout = hubs["hub-a"]._store.layout
        moved = []
        for bucket in range(0, layout.buckets, 8):  # an eighth of the buckets
            slot = redis.cluster.key_slot(layout.bucket_keys[bucket].created.encode())
            source = int(_node_of(client, layout.bucket_keys[bucket].created).rsplit(":", 1)[1])
            target = next(p for p in cluster.ports if p != source)
            _migrate_slot(cluster, slot, source, target)
            moved.append(bucket)
        client.close()
        writers.wait_for(100)
        # A task in a moved bucket ends on hub-a; hub-b waits for it.
        task_id = next(t for t in (f"x{n}" for n in range(10_000)) if layout.bucket(t) in moved)
        hubs["hub-a"].register(task_id, "node")
        woken: list[float] = []

        def wait_elsewhere() -> None:
            hubs["hub-b"].wait(task_id, timeout=20)
            woken.append(time.monotonic())

        waiter = threading.Thread(target=wait_elsewhere)
        waiter.start()
        time.sleep(0.5)
        ended = time.monotonic()
        hubs["hub-a"].complete(task_id, "done")
        waiter.join(25)
        assert woken and woken[0] - ended < 5  # far below the 30 s poll
        writers.finish()
        lister.join(30)
        assert not listing_errors and len(listed) > 3, listing_errors
        assert listed == sorted(listed)
        assert writers.failed == 0, writers.errors  # every call rode the moves out
        _check_acknowledged(f"{cluster.url}?prefix={prefix}", writers.acked)
        for journal in hubs.values():
            assert journal.check() == []
    finally:
        for journal in hubs.values():
            journal.close()
        cluster.stop()
