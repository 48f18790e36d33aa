"""Two hub replicas on a Redis server that misbehaves: waits keep their
timeouts and their event loop while the server does not answer, and a
replica whose task was adopted while its buffers were spilled lets go."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from journal import JournalConfig, TaskJournal, TaskStatus
from journal.errors import OwnedElsewhere, WaitTimeout
from redis_server import task_keys

pytestmark = pytest.mark.redis

QUIET = JournalConfig(checkpoint_interval=3600, sweep_interval=0)


@pytest.fixture
def server(private_redis):
    return private_redis


def _url(server, replica, **options):
    extra = "".join(f"&{name}={value}" for name, value in options.items())
    return f"{server.url}?prefix=p-{server.prefix}&replica={replica}{extra}"


@pytest.fixture
def replicas(server, buffer_cls):
    server.prefix = uuid.uuid4().hex[:8]
    opened = []

    def make(replica, config=QUIET, **options):
        journal = TaskJournal(_url(server, replica, **options), config=config, buffer_class=buffer_cls)
        opened.append(journal)
        return journal

    yield make
    if server.process is not None:
        server.thaw()
    for journal in opened:
        journal.close()


def test_waits_keep_their_timeout_while_redis_does_not_answer(server, replicas):
    holder, waiter = replicas("a"), replicas("b")
    holder.register("t", "node")
    holder.start("t")
    server.freeze()
    try:
        started = time.monotonic()
        with pytest.raises(WaitTimeout):
            waiter.wait("t", timeout=0.5)
        assert time.monotonic() - started < 3.0  # not the URL's 10 s timeout

        async def waits():
            stalls = [0.0]
            stop = asyncio.Event()

            async def ticker():
                last = time.monotonic()
                while not stop.is_set():
                    await asyncio.sleep(0.01)
                    now = time.monotonic()
                    stalls[0] = max(stalls[0], now - last)
                    last = now

            tick = asyncio.ensure_future(ticker())
            with pytest.raises(WaitTimeout):
                await waiter.wait_async("t", 0.5)

            async def follow():
                async for _ in waiter.follow("t"):
                    pass

            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(follow(), 0.5)
            stop.set()
            await tick
            return stalls[0]

        started = time.monotonic()
        longest_stall = asyncio.run(waits())
        assert time.monotonic() - started < 6.0
        # The loop never waited on Redis (its reads would stall it 10 s); the
        # bound leaves room for a loaded CI machine.
        assert longest_stall < 1.0
    finally:
        server.thaw()
    holder.complete("t", 1)
    assert waiter.wait("t", timeout=10).result == 1


def test_only_a_waits_first_read_gets_the_read_floor(server, replicas, monkeypatch):
    # wait(t, 0) must be able to read a finished task from the store, so the
    # first read of a wait gets at least READ_FLOOR; the later reads of a
    # wait on another replica's task get only the time left.  A long floor
    # makes the difference plain: with it on every read, this 1 s wait on a
    # frozen server took the floor's 5 s.
    from journal._ownership import SharedOwnership

    monkeypatch.setattr(SharedOwnership, "READ_FLOOR", 5.0)
    holder, waiter = replicas("a"), replicas("b")
    holder.register("t", "node")
    holder.start("t")
    outcome = []

    def wait():
        started = time.monotonic()
        try:
            waiter.wait("t", timeout=1.0)
        except WaitTimeout:
            outcome.append(time.monotonic() - started)

    import threading

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.4)  # its first read is done: it polls the holder's task
    server.freeze()
    try:
        thread.join(10)
        assert outcome and outcome[0] < 3.0, outcome
        # A wait's first read does get the floor (here 5 s, not the 0.3 s asked).
        monkeypatch.setattr(SharedOwnership, "READ_FLOOR", 1.5)
        started = time.monotonic()
        with pytest.raises(WaitTimeout, match=r"in 1\.5 s \(the wait's timeout: 0\.3 s"):
            waiter.wait("t", timeout=0.3)
        assert 1.4 <= time.monotonic() - started < 4.0
    finally:
        server.thaw()


def test_a_replica_whose_spilled_task_was_adopted_lets_it_go(server, replicas):
    budget = JournalConfig(checkpoint_interval=3600, sweep_interval=0, memory_budget=0)
    old = replicas("a", budget, lease=1)
    old.register("T", "node")
    old.start("T")
    old.stream("T").append(b"x" * 5000)
    old.checkpoint()  # spilled: the budget is 0
    assert old.stream("T").spilled
    old._store._renew_lease = lambda: None  # it stops renewing, as a frozen process would
    time.sleep(1.3)  # its lease runs out
    new = replicas("b")  # adopts "a"'s in-flight task as it opens
    assert [(r.task_id, r.owner, r.detached) for r in new.in_flight()] == [("T", "b", True)]
    new.reattach("T", "node")
    new.stream("T").append(b"y" * 10)
    new.checkpoint()  # the stored stream moves past what "a" spilled
    # "a" comes back: it reads the task as "b" wrote it, and lets it go.
    assert old.get("T").streams["stdout"].total == 5010
    with pytest.raises(OwnedElsewhere):
        old.complete("T")
    old.register("other", "node", deadline=0.5)
    old._clock = lambda: time.time() + 10
    assert old.sweep()["timed_out"] == 1  # its sweep goes on
    assert old.get("other").status is TaskStatus.TIMED_OUT
    new.complete("T", "done")
    assert old.wait("T", timeout=5).result == "done"


def test_a_sweep_never_adopts_this_replicas_own_live_task(server, replicas):
    """A task registered after the sweep listed what it holds is this
    replica's own and live: adopting it would bring back a stale RUNNING
    copy once it ended and was let go (seen under load in the soak)."""
    journal = replicas("a", JournalConfig(checkpoint_interval=3600, sweep_interval=0,
                                          memory_budget=0))
    journal.register("t", "node")
    journal.start("t")
    shard = journal._table.shard("t")
    with shard.lock:
        real = shard.entries.pop("t")  # as if registered after the sweep looked
    try:
        assert journal.sweep().get("adopted") == 0
    finally:
        with shard.lock:
            shard.entries["t"] = real
    journal.complete("t", 1)  # with the budget it is let go at once
    assert journal._table.held("t") is None
    assert journal.wait("t", timeout=5).result == 1
    assert not journal.get("t").detached


def test_an_inspector_reading_a_shared_store_takes_nothing_over(server, replicas):
    """Reading never adopts: a writable inspector lists a dead replica's
    in-flight task and leaves it for the hub replicas."""
    from journal import JournalInspector

    dead = replicas("a", lease=1)
    dead.register("t", "node")
    dead.start("t")
    dead.abandon()  # its lease is left to run out
    time.sleep(1.3)
    inspector = JournalInspector(_url(server, "inspector"), writable=True)
    try:
        assert [r.task_id for r in inspector.in_flight()] == ["t"]
    finally:
        inspector.close()
    client = server.client()
    assert client.hget(task_keys(f"p-{server.prefix}", "t")[0], "owner") == b"a"  # still the dead one's
    client.close()
    heir = replicas("b")  # a hub replica opening adopts it
    assert [(r.task_id, r.owner, r.detached) for r in heir.in_flight()] == [("t", "b", True)]
