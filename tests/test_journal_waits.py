"""Result hooks that always end, from threads and from asyncio."""

from __future__ import annotations

import asyncio
import time

import pytest

from journal import (
    JournalConfig,
    ResultExpired,
    TaskJournal,
    TaskLost,
    TaskStatus,
    UnknownTask,
    WaitTimeout,
)

from in_thread import WAIT, in_thread as _in_thread


FINISHERS = {
    "complete": (lambda j, c: j.complete("t", {"ok": True}), TaskStatus.COMPLETED),
    "fail": (lambda j, c: j.fail("t", "boom"), TaskStatus.FAILED),
    "cancel": (lambda j, c: j.cancel("t"), TaskStatus.CANCELLED),
    "deadline": (lambda j, c: (c.advance(31), j.sweep()), TaskStatus.TIMED_OUT),
}


@pytest.mark.parametrize("how", sorted(FINISHERS))
def test_sync_waiters_are_woken(journal, clock, how):
    journal.register("t", "n", deadline=30)
    waiters = [_in_thread(journal.wait, "t", WAIT) for _ in range(3)]
    finish, status = FINISHERS[how]
    finish(journal, clock)
    for waiter in waiters:
        assert waiter().status is status


@pytest.mark.parametrize("how", sorted(FINISHERS))
def test_async_waiters_are_woken(journal, clock, how):
    journal.register("t", "n", deadline=30)
    finish, status = FINISHERS[how]

    async def scenario():
        waits = [asyncio.ensure_future(journal.wait_async("t", WAIT)) for _ in range(3)]
        await asyncio.sleep(0.01)  # the waiters are parked
        # Finish from another thread, as a node's gRPC handler would.
        await asyncio.get_running_loop().run_in_executor(None, finish, journal, clock)
        return await asyncio.gather(*waits)

    for record in asyncio.run(scenario()):
        assert record.status is status


def test_lease_expiry_loses_the_task_and_wakes_waiters(journal, clock):
    journal.register("t", "quiet-node")
    journal.register("u", "busy-node")
    sync_waiter = _in_thread(journal.wait, "t", WAIT)
    clock.advance(59)
    journal.heartbeat("busy-node")
    journal.sweep()
    assert journal.get("t").status is TaskStatus.PENDING  # not yet: 59 s < 60 s
    clock.advance(2)
    assert journal.sweep()["lost"] == 1
    with pytest.raises(TaskLost, match="'t' was lost: node 'quiet-node' sent nothing for 60 s") as caught:
        sync_waiter()
    assert caught.value.record.status is TaskStatus.LOST
    assert journal.get("u").status is TaskStatus.PENDING  # its node heartbeat


@pytest.mark.parametrize("checkpoint_first", [False, True])
def test_a_streaming_task_keeps_its_node_alive(journal, clock, checkpoint_first):
    """checkpoint_first: the background thread runs the checkpoint pass (and
    its memory-budget pass) right before each sweep, their intervals being
    equal by default; whatever that pass notes about a stream must not use
    up the growth the sweep reads as the node being alive."""
    journal.register("t", "n")
    out = journal.stream("t")
    for _ in range(5):
        clock.advance(40)
        out.append(b"still going\n")
        if checkpoint_first:
            journal.checkpoint()
        journal.sweep()
    assert journal.get("t").status is TaskStatus.PENDING
    clock.advance(61)
    journal.sweep()
    assert journal.get("t").status is TaskStatus.LOST


def test_async_wait_sees_lost(journal, clock):
    journal.register("t", "n")

    async def scenario():
        waiter = asyncio.ensure_future(journal.wait_async("t", WAIT))
        await asyncio.sleep(0.01)
        clock.advance(61)
        journal.sweep()
        return await waiter

    with pytest.raises(TaskLost):
        asyncio.run(scenario())


def test_the_background_timer_ends_waits_by_itself(buffer_cls):
    config = JournalConfig(lease_timeout=0.2, sweep_interval=0.02)
    with TaskJournal(config=config, buffer_class=buffer_cls) as journal:
        journal.register("t", "silent-node")
        with pytest.raises(TaskLost):
            journal.wait("t", timeout=WAIT)


def test_the_background_thread_keeps_a_streaming_task_alive(buffer_cls, tmp_path):
    """The same with the real background thread on the embedded default
    store: checkpoint and sweep fall due together on every tick."""
    config = JournalConfig(lease_timeout=1.0, sweep_interval=0.05, checkpoint_interval=0.05)
    url = f"sqlite:///{tmp_path / 'journal.db'}"
    with TaskJournal(url, config=config, buffer_class=buffer_cls) as journal:
        journal.register("t", "streaming-node")
        out = journal.stream("t")
        until = time.monotonic() + 2.5  # two and a half leases
        while time.monotonic() < until:
            out.append(b"still going\n")
            time.sleep(0.02)
        assert journal.get("t").status is TaskStatus.PENDING
        with pytest.raises(TaskLost):  # and once it stops streaming, it is lost
            journal.wait("t", timeout=WAIT)


def test_wait_timeouts(journal):
    journal.register("t", "n")
    with pytest.raises(WaitTimeout, match="'t' on node 'n' is still PENDING after 0.05 s") as caught:
        journal.wait("t", timeout=0.05)
    assert isinstance(caught.value, TimeoutError)
    with pytest.raises(TimeoutError):
        asyncio.run(journal.wait_async("t", timeout=0.05))
    # A timed-out wait leaves no waiter behind.
    assert journal._table.find("t").async_waiters == []


def test_finished_tasks_answer_at_once(journal):
    journal.register("t", "n")
    journal.complete("t", 7)
    assert journal.wait("t", timeout=0).result == 7
    assert asyncio.run(journal.wait_async("t", timeout=0)).result == 7


def test_results_are_kept_for_the_ttl_then_expire(make_journal, clock):
    journal = make_journal(result_ttl=100)
    journal.register("t", "n")
    journal.stream("t").append(b"output")
    journal.complete("t", "answer")
    clock.advance(99)
    journal.sweep()
    assert journal.wait("t", 0).result == "answer"
    clock.advance(1)
    assert journal.sweep()["expired"] == 1
    # Expired is told apart from never-existed, for at least the TTL again.
    for call in (journal.get, journal.wait):
        with pytest.raises(ResultExpired, match="'t' finished and its result expired"):
            call("t")
    with pytest.raises(ResultExpired):
        asyncio.run(journal.wait_async("t"))
    with pytest.raises(UnknownTask):
        journal.get("never")
    clock.advance(99)
    journal.sweep()
    with pytest.raises(ResultExpired):
        journal.get("t")
    clock.advance(1)
    assert journal.sweep()["tombstones_forgotten"] == 1
    with pytest.raises(UnknownTask):
        journal.get("t")


def test_an_expired_id_can_be_registered_again(make_journal, clock):
    journal = make_journal(result_ttl=10)
    journal.register("t", "n")
    journal.complete("t", 1)
    clock.advance(10)
    journal.sweep()
    journal.register("t", "n")
    assert journal.get("t").status is TaskStatus.PENDING


def test_follow_streams_until_the_task_ends(journal):
    journal.register("t", "n")
    out = journal.stream("t")

    async def scenario():
        chunks = []

        async def produce():
            for n in range(5):
                out.append(b"line %d\n" % n)
                await asyncio.sleep(0.01)
            journal.complete("t", 0)

        producer = asyncio.ensure_future(produce())
        async for chunk in journal.follow("t", poll_interval=0.005):
            chunks.append(chunk)
        await producer
        return chunks

    chunks = asyncio.run(asyncio.wait_for(scenario(), WAIT))
    assert b"".join(c.data for c in chunks) == b"".join(b"line %d\n" % n for n in range(5))
    assert all(c.skipped == 0 for c in chunks)


def test_follow_reports_what_it_could_not_deliver(make_journal):
    journal = make_journal(head_bytes=4, tail_bytes=4)
    journal.register("t", "n")
    out = journal.stream("t")
    out.append(b"0123456789")  # 2 bytes dropped before anyone followed
    journal.complete("t", 0)

    async def collect():
        return [chunk async for chunk in journal.follow("t")]

    chunks = asyncio.run(asyncio.wait_for(collect(), WAIT))
    assert [(c.data, c.offset, c.skipped) for c in chunks] == [(b"0123", 0, 0), (b"6789", 6, 2)]


def test_follow_of_a_stream_never_written(journal):
    journal.register("t", "n")
    journal.fail("t", "no output")

    async def collect():
        return [chunk async for chunk in journal.follow("t", "stderr")]

    assert asyncio.run(asyncio.wait_for(collect(), WAIT)) == []


def test_a_task_nobody_waits_for_costs_the_collector_one_object(journal):
    # A full garbage collection walks every tracked object of the process,
    # on whichever thread triggers it (an event loop's, often): the journal
    # adds one per task held (the Task; no empty waiter list), and memory://
    # its row; where every dict is tracked, the Task's two empty ones too.
    import gc

    for n in range(50):
        journal.register(f"warm-{n}", "node")
    gc.collect()
    before = len(gc.get_objects())
    for n in range(2_000):
        journal.register(f"t{n}", "node", meta={"kind": "build"})
    gc.collect()
    per_task = 2 if journal.store_url.startswith("memory") else 1
    if gc.is_tracked({}):
        per_task += 2  # CPython 3.14 on tracks every dict: the Task's two empty ones
    assert len(gc.get_objects()) - before <= 2_000 * (per_task + 0.1)

    async def main():
        waiter = asyncio.ensure_future(journal.wait_async("t7", timeout=5))
        await asyncio.sleep(0.01)
        journal.complete("t7", {"ok": True})
        return await waiter

    assert asyncio.run(main()).status is TaskStatus.COMPLETED
