"""follow() of a task whose registration is being committed.

The id is claimed in memory before the store has the task. A follow that
begins then must end as a wait would: with the task's data once the
registration lands, or UnknownTask if it fails, and never by spinning the
event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest

from journal import JournalConfig, TaskJournal
from journal.errors import StoreError, UnknownTask


def _registration_held(journal, *, fail):
    """Register "t" on a thread whose commit waits for the returned event
    (after writing the row, or instead of it, raising StoreError)."""
    store = journal._table.store
    real_put = store.put_task
    committing, release = threading.Event(), threading.Event()

    def put_task(row, *args, **kwargs):
        if not kwargs.get("new"):
            return real_put(row, *args, **kwargs)
        written = None if fail else real_put(row, *args, **kwargs)
        committing.set()
        assert release.wait(10)
        if fail:
            raise StoreError("the disk is full")
        return written

    store.put_task = put_task
    outcome = []

    def register():
        try:
            outcome.append(journal.register("t", "n"))
        except StoreError as exc:
            outcome.append(exc)

    registrar = threading.Thread(target=register)
    registrar.start()
    assert committing.wait(5)
    return registrar, release, outcome


def _follow_on_its_own_loop(journal, then):
    """Follow "t" on a loop of its own thread; after 0.3 s run ``then()``
    (on a worker thread) and return the first chunk or the exception, or
    "spinning" if the loop never came back."""
    result = []

    async def main():
        first = asyncio.ensure_future(journal.follow("t").__anext__())
        await asyncio.sleep(0.3)  # the follow has begun, on the claim
        await asyncio.get_running_loop().run_in_executor(None, then)
        try:
            result.append(await asyncio.wait_for(first, 5))
        except Exception as exc:  # noqa: BLE001 - the test looks at what it was
            result.append(exc)

    runner = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    runner.start()
    runner.join(10)
    return "spinning" if runner.is_alive() else result[0]


def test_a_follow_that_began_before_the_registration_landed_gets_the_data(make_journal):
    journal = make_journal()
    registrar, release, outcome = _registration_held(journal, fail=False)

    def register_then_stream():
        release.set()
        registrar.join(5)
        journal.stream("t").append(b"hello")
        journal.complete("t")

    chunk = _follow_on_its_own_loop(journal, register_then_stream)
    assert getattr(chunk, "data", chunk) == b"hello"


def test_a_follow_of_a_registration_that_fails_raises_unknown_task(make_journal):
    journal = make_journal()
    registrar, release, outcome = _registration_held(journal, fail=True)

    def fail_the_registration():
        release.set()
        registrar.join(5)

    ended = _follow_on_its_own_loop(journal, fail_the_registration)
    assert isinstance(outcome[0], StoreError)
    assert isinstance(ended, UnknownTask), ended


@pytest.fixture
def replicas(redis_single, buffer_cls, clock):
    """Open hub replicas on one Redis namespace, with a short lease."""
    prefix = f"test-{uuid.uuid4().hex}"
    opened = []

    def open_replica(name):
        url = f"{redis_single}?prefix={prefix}&replica={name}&lease=0.5&poll=1&timeout=10"
        config = JournalConfig(sweep_interval=0, checkpoint_interval=3600)
        opened.append(TaskJournal(url, config=config, clock=clock, buffer_class=buffer_cls))
        return opened[-1]

    yield open_replica
    for journal in opened:
        journal.close()


@pytest.mark.redis
def test_a_follow_of_a_task_let_go_of_and_adopted_again_neither_spins_nor_misses_its_end(replicas):
    a, b, c = replicas("a"), replicas("b"), replicas("c")
    a.register("t", "n")
    a.start("t")
    a.abandon()
    time.sleep(0.8)  # a's lease runs out
    assert b.sweep()["adopted"] == 1
    seen = {"ticks": 0}

    async def main():
        async def tick():
            while True:
                seen["ticks"] += 1
                await asyncio.sleep(0.01)

        async def follow():
            return [chunk.data async for chunk in b.follow("t")]

        ticker, follower = asyncio.ensure_future(tick()), asyncio.ensure_future(follow())
        run = asyncio.get_running_loop().run_in_executor
        await asyncio.sleep(0.2)
        await run(None, lambda: (c.reattach("t", "n"), b.sweep()))  # b lets go of it
        await asyncio.sleep(0.3)
        await run(None, lambda: (c.abandon(), time.sleep(0.8)))
        assert (await run(None, b.sweep))["adopted"] == 1  # b holds it again: a new object
        before = seen["ticks"]
        await run(None, time.sleep, 1.0)
        seen["in a second"] = seen["ticks"] - before
        await run(None, lambda: (b.reattach("t", "n"), b.stream("t").append(b"hi"), b.complete("t")))
        data = await asyncio.wait_for(follower, 5)
        ticker.cancel()
        return data

    outcome = []
    runner = threading.Thread(target=lambda: outcome.append(asyncio.run(main())), daemon=True)
    runner.start()
    runner.join(15)
    assert not runner.is_alive(), f"the event loop froze: {seen}"
    assert seen["in a second"] > 20, seen
    assert outcome == [[b"hi"]]
