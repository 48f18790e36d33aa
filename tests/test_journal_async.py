"""The async durable calls: the same changes as their sync twins, durable
when the await returns, without blocking the loop, one loop wake-up per
batch, errors per caller, and cancellation that neither loses nor repeats
a change.  On every store (Redis through the default: its sync call on a
thread) and both buffer twins."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from journal import (
    DuplicateTask,
    InvalidTransition,
    JournalClosed,
    JournalError,
    TaskStatus,
    UnknownTask,
)

from in_thread import WAIT


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, WAIT))


class HeldCommits:
    """Stops a journal's store writes at the store until released, so a
    test can pile changes into one batch or cancel while one is in flight.
    SQLite: the group commit's batch run; other durable stores: put_task
    (which the async default calls on a thread)."""

    def __init__(self, journal):
        self.release = threading.Event()
        self.entered = threading.Event()
        self.batches = []
        store = journal._store
        writer = getattr(store, "_writer", None)
        if writer is not None:
            real = writer._run

            def held(batch):
                self.entered.set()
                self.release.wait(WAIT)
                self.batches.append(len(batch))
                return real(batch)

            writer._run = held
        else:
            real_put = store.put_task

            def held_put(*args, **kwargs):
                self.entered.set()
                self.release.wait(WAIT)
                self.batches.append(1)
                return real_put(*args, **kwargs)

            store.put_task = held_put

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release.set()


def count_wakeups(loop):
    """Count the calls into ``loop`` from other threads."""
    calls = []
    real = loop.call_soon_threadsafe

    def counted(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    loop.call_soon_threadsafe = counted
    return calls


# -- the same changes, durable when the await returns ---------------------------------


def test_every_async_call_makes_its_change_durably(reopen):
    journal = reopen()

    async def scenario():
        record = await journal.register_async("a", "n1", {"argv": ["ls"]}, deadline=60)
        assert record.status is TaskStatus.PENDING and record.meta == {"argv": ["ls"]}
        assert (await journal.start_async("a")).status is TaskStatus.RUNNING
        journal.stream("a").append(b"hello")
        done = await journal.complete_async("a", {"exit_code": 0})
        assert done.status is TaskStatus.COMPLETED and done.result == {"exit_code": 0}
        for task_id in "bcd":
            await journal.register_async(task_id, "n1")
        assert (await journal.fail_async("b", "boom", {"exit_code": 2})).status is TaskStatus.FAILED
        assert (await journal.cancel_async("c", "user")).error == "user"
        await journal.start_async("d")

    run(scenario())
    journal.abandon()  # no close-time writes: what is there was written by the calls
    again = reopen()
    assert again.get("a").status is TaskStatus.COMPLETED
    assert again.get("a").result == {"exit_code": 0}
    assert again.get("a").streams["stdout"].head == b"hello"
    assert again.get("b").error == "boom" and again.get("b").result == {"exit_code": 2}
    assert again.get("c").status is TaskStatus.CANCELLED
    assert [r.task_id for r in again.in_flight()] == ["d"]

    async def reattach():
        record = await again.reattach_async("d", "n2")
        assert record.node_id == "n2" and not record.detached

    run(reattach())
    again.abandon()
    assert reopen().get("d").node_id == "n2"


def test_async_calls_refuse_what_the_sync_calls_refuse(journal):
    async def scenario():
        await journal.register_async("t", "n")
        with pytest.raises(DuplicateTask):
            await journal.register_async("t", "n")
        await journal.complete_async("t")
        with pytest.raises(InvalidTransition):
            await journal.start_async("t")
        with pytest.raises(UnknownTask):
            await journal.start_async("nope")
        with pytest.raises(JournalError):
            await journal.register_async("", "n")
        with pytest.raises(JournalError):
            await journal.complete_async("t", object())

    run(scenario())
    assert journal.get("t").status is TaskStatus.COMPLETED


def test_async_waiters_wake_on_an_async_end(journal):
    async def scenario():
        await journal.register_async("t", "n")
        waiter = asyncio.ensure_future(journal.wait_async("t", WAIT))
        await asyncio.sleep(0.01)
        await journal.complete_async("t", 7)
        return await waiter

    assert run(scenario()).result == 7


# -- the loop never waits for the store ------------------------------------------------


@pytest.mark.parametrize("call", ["register", "complete", "reattach"])
def test_the_loop_runs_while_a_commit_is_held(reopen, call):
    journal = reopen()
    journal.register("t", "n")

    async def scenario():
        with HeldCommits(journal) as held:
            if call == "register":
                change = journal.register_async("u", "n")
            elif call == "complete":
                change = journal.complete_async("t", 1)
            else:
                change = journal.reattach_async("t", "n2")
            pending = asyncio.ensure_future(change)
            ticks = 0
            while not held.entered.is_set() or ticks < 20:
                await asyncio.sleep(0.001)  # a blocked loop would never get here
                ticks += 1
            assert not pending.done()
            # Reads and handles of the task take no lock its change holds.
            assert journal.get("t").status is TaskStatus.PENDING
            journal.stream("t").append(b"x")
        return await pending

    record = run(scenario())
    assert record.task_id in ("t", "u")


def test_a_sync_change_on_the_loop_thread_does_not_deadlock_with_an_async_one(reopen):
    """A sync call made on the loop thread while an async change of the same
    task is in flight waits for that change's commit, which is applied on
    the committing thread, not on the (blocked) loop."""
    journal = reopen()
    journal.register("t", "n")

    async def scenario():
        held = HeldCommits(journal)
        pending = asyncio.ensure_future(journal.complete_async("t", 1))
        await asyncio.sleep(0.01)  # queued, gate closed
        threading.Timer(0.2, held.release.set).start()
        with pytest.raises(InvalidTransition):
            journal.cancel("t")  # waits for the complete, then finds it ended
        return await pending

    assert run(scenario()).status is TaskStatus.COMPLETED
    assert journal.get("t").status is TaskStatus.COMPLETED


# -- batches: one commit, one wake-up per loop ------------------------------------------


def test_coroutines_share_a_commit_and_a_wakeup(sqlite_url, make_journal):
    journal = make_journal(sqlite_url)

    async def scenario():
        calls = count_wakeups(asyncio.get_running_loop())
        with HeldCommits(journal) as held:
            first = asyncio.ensure_future(journal.register_async("first", "n"))
            while not held.entered.is_set():
                await asyncio.sleep(0.001)
            rest = [asyncio.ensure_future(journal.register_async(f"t{n}", "n")) for n in range(63)]
            await asyncio.sleep(0.01)  # all 63 are queued behind the held commit
        records = await asyncio.gather(first, *rest)
        return held.batches, calls, records

    batches, calls, records = run(scenario())
    assert batches == [1, 63]
    # One call into the loop per batch, not one per coroutine.
    assert len(calls) == 2, calls
    assert [r.task_id for r in records] == ["first"] + [f"t{n}" for n in range(63)]


def test_threads_and_coroutines_share_a_commit(sqlite_url, make_journal):
    journal = make_journal(sqlite_url)

    async def scenario():
        with HeldCommits(journal) as held:
            first = asyncio.ensure_future(journal.register_async("first", "n"))
            while not held.entered.is_set():
                await asyncio.sleep(0.001)
            threads = [threading.Thread(target=journal.register, args=(f"s{n}", "n")) for n in range(8)]
            for thread in threads:
                thread.start()
            rest = [asyncio.ensure_future(journal.register_async(f"a{n}", "n")) for n in range(8)]
            deadline = time.monotonic() + WAIT
            while journal._store._writer._queue.qsize() < 16 and time.monotonic() < deadline:
                await asyncio.sleep(0.001)
        await asyncio.gather(first, *rest)
        for thread in threads:
            await asyncio.get_running_loop().run_in_executor(None, thread.join)
        return held.batches

    assert run(scenario()) == [1, 16]
    assert len(journal.list_tasks()) == 17


def test_a_bad_write_in_a_shared_batch_fails_only_its_caller(reopen):
    first = reopen()
    first.register("old", "n")
    first.complete("old")
    first.close()
    journal = reopen(result_ttl=3600)
    journal._table.shard("old").entries.pop("old", None)  # let go: only the store has it

    async def scenario():
        with HeldCommits(journal) as held:
            lead = asyncio.ensure_future(journal.register_async("lead", "n"))
            while not held.entered.is_set():
                await asyncio.sleep(0.001)
            calls = [journal.register_async(task_id, "n") for task_id in ("a", "old", "b")]
            changes = [asyncio.ensure_future(call) for call in calls]
            await asyncio.sleep(0.01)
        return await asyncio.gather(lead, *changes, return_exceptions=True)

    lead, a, old, b = run(scenario())
    assert isinstance(old, DuplicateTask)
    assert (lead.task_id, a.task_id, b.task_id) == ("lead", "a", "b")
    assert journal.get("old").status is TaskStatus.COMPLETED  # untouched
    assert {r.task_id for r in journal.in_flight()} == {"lead", "a", "b"}


# -- cancellation ------------------------------------------------------------------------


@pytest.mark.parametrize("call", ["register", "complete", "fail"])
def test_a_cancelled_await_neither_loses_nor_repeats_the_change(reopen, call):
    journal = reopen()
    journal.register("t", "n")
    journal.stream("t").append(b"out")

    async def scenario():
        with HeldCommits(journal) as held:
            if call == "register":
                change = journal.register_async("u", "n")
            elif call == "complete":
                change = journal.complete_async("t", {"ok": 1})
            else:
                change = journal.fail_async("t", "boom")
            pending = asyncio.ensure_future(change)
            while not held.entered.is_set():
                await asyncio.sleep(0.001)
            pending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pending
        # The change was queued: it is made, once, cancelled await or not.
        task_id, expected = {"register": ("u", "pending"), "complete": ("t", "completed"),
                             "fail": ("t", "failed")}[call]
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            stored = journal._store.get(task_id)
            if stored is not None and stored.row.status == expected:
                if journal.get(task_id).status.value == expected:
                    break
            await asyncio.sleep(0.005)
        assert journal.get(task_id).status.value == expected
        if call == "register":
            with pytest.raises(DuplicateTask):
                await journal.register_async("u", "n")  # a retry hears it was made
        else:
            with pytest.raises(InvalidTransition):
                await journal.cancel_async("t")
        return held.batches

    batches = run(scenario())
    assert batches[0] == 1
    journal.abandon()
    again = reopen()
    if call == "register":
        assert again.get("u").status is TaskStatus.PENDING
    else:
        ended = again.get("t")
        assert ended.status is (TaskStatus.COMPLETED if call == "complete" else TaskStatus.FAILED)
        assert ended.streams["stdout"].head == b"out"


def test_a_change_cancelled_before_it_was_queued_is_not_made(reopen):
    """A change waiting for another change of the same task has queued
    nothing: cancelled there, it is not made."""
    journal = reopen()
    journal.register("t", "n")

    async def scenario():
        with HeldCommits(journal) as held:
            start = asyncio.ensure_future(journal.start_async("t"))
            while not held.entered.is_set():
                await asyncio.sleep(0.001)
            behind = asyncio.ensure_future(journal.complete_async("t", 1))
            await asyncio.sleep(0.01)
            behind.cancel()
            with pytest.raises(asyncio.CancelledError):
                await behind
        return await start

    assert run(scenario()).status is TaskStatus.RUNNING
    assert journal.get("t").status is TaskStatus.RUNNING
    journal.abandon()
    assert reopen().get("t").status is TaskStatus.RUNNING


def test_a_change_finishes_even_if_its_loop_is_gone(sqlite_url, make_journal):
    journal = make_journal(sqlite_url)
    journal.register("t", "n")
    held = HeldCommits(journal)
    loop = asyncio.new_event_loop()

    async def start():
        asyncio.ensure_future(journal.complete_async("t", 1))
        await asyncio.sleep(0.01)

    loop.run_until_complete(start())
    loop.close()  # the awaiting coroutine is gone with it
    held.release.set()
    assert journal.wait("t", WAIT).status is TaskStatus.COMPLETED


# -- close ---------------------------------------------------------------------------------


def test_close_async_ends_waiters_and_refuses_later_calls(store_url, make_journal):
    journal = make_journal(store_url)

    async def scenario():
        await journal.register_async("t", "n")
        waiter = asyncio.ensure_future(journal.wait_async("t", WAIT))
        await asyncio.sleep(0.01)
        await journal.close_async()
        with pytest.raises(JournalClosed):
            await waiter
        with pytest.raises(JournalClosed):
            await journal.register_async("u", "n")
        with pytest.raises(JournalClosed):
            await journal.complete_async("t")

    run(scenario())


def test_changes_queued_at_close_end_one_way_or_the_other(reopen):
    journal = reopen()

    async def scenario():
        held = HeldCommits(journal)
        first = asyncio.ensure_future(journal.register_async("first", "n"))
        while not held.entered.is_set():
            await asyncio.sleep(0.001)
        queued = [asyncio.ensure_future(journal.register_async(f"t{n}", "n")) for n in range(10)]
        await asyncio.sleep(0.01)
        closing = asyncio.ensure_future(journal.close_async())
        await asyncio.sleep(0.05)
        held.release.set()
        await closing
        return await asyncio.gather(first, *queued, return_exceptions=True)

    outcomes = run(scenario())
    made = {o.task_id for o in outcomes if not isinstance(o, BaseException)}
    assert all(isinstance(o, JournalError) for o in outcomes if isinstance(o, BaseException))
    assert "first" in made
    again = reopen()
    # Exactly what was acknowledged is there: nothing more, nothing less.
    assert {r.task_id for r in again.in_flight()} == made
