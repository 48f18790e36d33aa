"""Every public read and wait on a replica that does not own the task
behaves as on the owner: follow, get, wait, wait_async, in_flight,
list_tasks and stats."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest

from journal import JournalConfig, TaskJournal, TaskStatus

pytestmark = pytest.mark.redis


@pytest.fixture
def owner_and_other(redis_server, buffer_cls):
    prefix = f"test-{uuid.uuid4().hex}"
    config = JournalConfig(checkpoint_interval=0.05, sweep_interval=0)
    opened = [
        TaskJournal(f"{redis_server}?prefix={prefix}&replica={name}&poll=0.2",
                    config=config, buffer_class=buffer_cls)
        for name in ("owner", "other")
    ]
    yield opened
    for journal in opened:
        journal.close()


def _strip(record):
    """A record without what differs by replica: who holds it, and detached."""
    return record._replace(owner=None, detached=False)


def test_follow_on_another_replica_follows_the_task_to_its_end(owner_and_other):
    owner, other = owner_and_other
    owner.register("t", "node")
    owner.start("t")
    out = owner.stream("t")
    chunks = [f"line {n}\n".encode() for n in range(30)]

    def node():
        for chunk in chunks:
            out.append(chunk)
            time.sleep(0.05)  # 1.5 s of output, checkpointed every 0.05 s
        owner.complete("t", 0)

    async def follow():
        received = b""
        async for chunk in other.follow("t", poll_interval=0.05):
            assert chunk.skipped == 0
            received += chunk.data
        return received

    streaming = threading.Thread(target=node)
    streaming.start()
    received = asyncio.run(follow())
    streaming.join()
    # It ended with the task, not with the first checkpoint it saw.
    assert received == b"".join(chunks)
    assert other.get("t").status is TaskStatus.COMPLETED


def test_reads_and_waits_on_another_replica_match_the_owner(owner_and_other):
    owner, other = owner_and_other
    owner.register("t", "node", meta={"cmd": "make"})
    owner.start("t")
    owner.stream("t").append(b"x" * 100)
    owner.checkpoint()
    assert _strip(other.get("t")) == _strip(owner.get("t"))
    assert [_strip(r) for r in other.in_flight()] == [_strip(r) for r in owner.in_flight()]
    assert other.list_tasks() == owner.list_tasks()
    assert other.stats()["by_status"] == owner.stats()["by_status"]

    sync = {}
    waiter = threading.Thread(target=lambda: sync.setdefault("record", other.wait("t", 10)))
    waiter.start()

    async def wait_async():
        return await other.wait_async("t", 10)

    def finish():
        time.sleep(0.3)
        owner.complete("t", {"exit": 0})

    finisher = threading.Thread(target=finish)
    finisher.start()
    record = asyncio.run(wait_async())
    waiter.join(10)
    finisher.join()
    assert record.result == sync["record"].result == {"exit": 0}
    assert _strip(other.get("t")) == _strip(owner.get("t"))
    assert other.list_tasks(status="completed") == owner.list_tasks(status="completed")
    assert other.stats()["by_status"] == owner.stats()["by_status"]
