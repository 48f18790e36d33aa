"""Restarts on Redis with the default URL (issue 18, point 3): the default
replica id is the host name, so a restarted hub takes its own in-flight
tasks back; a second live hub with that id is refused; a previous holder
that stopped renewing is taken over after about one renewal period, not
its whole lease."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid

import pytest

from journal import JournalConfig, StoreLocked, TaskJournal, TaskStatus
from journal.store._redis_url import default_replica
from journal.store.redis import RedisStore
from redis_server import admin_client

pytestmark = pytest.mark.redis


@pytest.fixture
def default_url(redis_server):
    """A store URL that names no replica id (a namespace of its own only)."""
    return f"{redis_server}?prefix=test-{uuid.uuid4().hex}"


def test_the_default_replica_id_is_the_host_name(default_url):
    store = RedisStore(default_url)
    try:
        assert store.replica == default_replica()
        assert default_replica() == socket.gethostname()[:64] or not socket.gethostname().isalnum()
    finally:
        store.close()


def test_simulate_restart_at_50_works_with_the_default_url(default_url):
    """It used to fail every time with OwnedElsewhere: the reopened hub got a
    new random id and could not take back the tasks of its old one."""
    out = subprocess.run(
        [sys.executable, "-m", "journal", "simulate", "--store", default_url, "--tasks", "200",
         "--nodes", "20", "--restart-at", "50", "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    text = json.dumps(report)
    assert "OwnedElsewhere" not in text
    restart = report["restart"]
    assert restart["in_flight"] > 0 and restart["reattached"] == restart["in_flight"]
    assert report["lost"] == 0 and report["bytes_missing"] == 0
    assert sum(report["by_status"].values()) == 200


_HUB = (
    "import sys, time\n"
    "from journal import TaskJournal\n"
    "journal = TaskJournal(sys.argv[1])\n"
    "journal.register('t', 'node-1')\n"
    "journal.start('t')\n"
    "journal.stream('t').append(b'before the crash')\n"
    "journal.checkpoint()\n"
    "print('open', flush=True)\n"
    "time.sleep(120)\n"
)


def test_a_hub_killed_and_restarted_with_the_default_url_takes_its_task_back(default_url, buffer_cls):
    child = subprocess.Popen([sys.executable, "-c", _HUB, default_url + "&lease=30"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "open"
    finally:
        child.kill()
        child.wait(10)
    started = time.monotonic()
    journal = TaskJournal(default_url + "&lease=30", buffer_class=buffer_cls)
    try:
        assert time.monotonic() - started < 2  # not the 30 s lease
        assert journal.recovered == 1
        [task] = journal.in_flight()
        assert (task.task_id, task.owner) == ("t", default_replica())
        journal.reattach("t", "node-1")  # no OwnedElsewhere
        journal.stream("t").append(b", after")
        journal.complete("t", 0)
        assert journal.get("t").streams["stdout"].render() == b"before the crash, after"
    finally:
        journal.close()


def test_a_second_live_hub_with_the_default_id_is_refused(default_url):
    child = subprocess.Popen([sys.executable, "-c", _HUB, default_url + "&lease=0.6"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "open"
        with pytest.raises(StoreLocked, match=r"another hub with the same id.*\?replica="):
            TaskJournal(default_url + "&lease=0.6")
    finally:
        child.kill()
        child.wait(10)


@pytest.mark.parametrize("lease", [3.0, 6.0])
def test_a_holder_that_stopped_renewing_is_taken_over_after_one_renewal_period(
        default_url, redis_server, lease):
    """The previous holder ran on another host (its pid cannot be checked)
    and renewed its lease just now, then died: the next open waits until a
    renewal is overdue (a third of the lease, and a quarter of that), not
    until the lease runs out."""
    store_probe = RedisStore(default_url.replace("?", "?replica=probe&", 1), readonly=True)
    key = store_probe.layout.replica_prefix + default_replica()
    store_probe.close()
    lease_ms = int(lease * 1000)
    client = admin_client(redis_server)
    try:
        client.set(key, f"elsewhere:boot:4242:dead {lease_ms}", px=lease_ms)
        started = time.monotonic()
        store = RedisStore(f"{default_url}&lease={lease}")
        took = time.monotonic() - started
        store.close()
    finally:
        client.close()
    period = lease / 3
    assert period < took < period * 1.25 + 0.5
    assert took < lease / 2


def test_a_holder_that_keeps_renewing_is_never_taken_over(default_url):
    first = TaskJournal(default_url + "&lease=0.9", config=JournalConfig(sweep_interval=0))
    try:
        first.register("t", "n")
        with pytest.raises(StoreLocked):
            TaskJournal(default_url + "&lease=0.9")
        assert first.get("t").status is TaskStatus.PENDING
        first.complete("t", 1)  # still its own: nothing was taken
    finally:
        first.close()


def test_a_writing_inspector_beside_a_live_hub_needs_an_id_of_its_own(default_url):
    from journal import JournalInspector

    hub = TaskJournal(default_url)
    try:
        hub.register("t", "n")
        with pytest.raises(StoreLocked, match=r"\?replica="):
            JournalInspector(default_url, writable=True)
        inspector = JournalInspector(default_url + "&replica=maintenance", writable=True)
        try:
            assert inspector.check() == []
            assert [r.task_id for r in inspector.in_flight()] == ["t"]
        finally:
            inspector.close()
        reader = JournalInspector(default_url)  # reading holds no id
        reader.close()
        hub.complete("t", 0)  # the hub was not disturbed
    finally:
        hub.close()
