"""Calls that close() overtakes, and a forked child's copy on a shared store.

Every call after close() (or in a forked child) answers JournalClosed, the
documented error, at once: never the closed store's StoreError, a shut-down
thread pool's RuntimeError, or a wait on read threads that no longer exist.
And close()'s own last checkpoint reports a real store error as it is.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from forked import in_a_forked_child
from journal.errors import JournalClosed, StoreError, UnknownTask, WaitTimeout

fork_only = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")


def _shared(store_url):
    if not store_url.startswith("redis"):
        pytest.skip("only a shared store reads through threads of its own")


def _use_the_read_threads(journal):
    """A wait on a task not held here reads through the read threads."""
    with pytest.raises(UnknownTask):
        journal.wait("nobody-registered-this", timeout=0.5)


@fork_only
def test_a_forked_childs_waits_and_follows_raise_journal_closed_at_once(make_journal, store_url):
    _shared(store_url)
    journal = make_journal()
    journal.register("t", "n")
    journal.stream("t").append(b"x")
    _use_the_read_threads(journal)  # the child inherits a pool whose thread did not come

    def wait():
        try:
            journal.wait("t", timeout=5)
        except JournalClosed:
            return 0
        return 4

    def follow():
        async def first_chunk():
            async for chunk in journal.follow("t"):
                return chunk

        try:
            asyncio.run(asyncio.wait_for(first_chunk(), 5))
        except JournalClosed:
            return 0
        return 5

    assert (in_a_forked_child(wait), in_a_forked_child(follow)) == (0, 0)


def test_waits_after_close_on_a_shared_store_raise_journal_closed(make_journal, store_url):
    _shared(store_url)
    journal = make_journal()
    journal.register("t", "n")
    _use_the_read_threads(journal)
    journal.close()
    with pytest.raises(JournalClosed):
        journal.wait("somebody-elses", timeout=1)
    with pytest.raises(JournalClosed):
        asyncio.run(journal.wait_async("somebody-elses", timeout=1))


def test_a_wait_on_another_replicas_task_that_close_wakes_raises_journal_closed(make_journal, store_url):
    _shared(store_url)
    other = make_journal(store_url=store_url.replace("replica=hub-1", "replica=hub-2"))
    other.register("t", "n")
    journal = make_journal()
    outcome = []

    def wait():
        try:
            journal.wait("t", timeout=30)
        except Exception as exc:  # noqa: BLE001 - the test looks at what it was
            outcome.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    deadline = time.monotonic() + 10
    while "t" not in journal._ownership._remote_waiters and time.monotonic() < deadline:
        time.sleep(0.01)  # until it waits for the other replica's task
    journal.close()
    waiter.join(10)
    assert [type(exc) for exc in outcome] == [JournalClosed], outcome


@pytest.mark.parametrize("call, read", [
    ("list_tasks", "list_tasks"), ("in_flight", "in_flight_owned_elsewhere"),
    ("check", "check"), ("sweep", "expire_finished"),
])
def test_a_call_that_close_overtakes_raises_journal_closed(make_journal, store_url, call, read):
    if store_url.startswith("memory"):
        pytest.skip("memory:// is never closed under a read")
    journal = make_journal()
    journal.register("t", "n")
    store = journal._table.store
    if not hasattr(store, read):
        pytest.skip(f"{call}() does not read this store")
    real = getattr(store, read)

    def overtaken(*args, **kwargs):
        closer = threading.Thread(target=journal.close)  # close() lands meanwhile
        closer.start()
        closer.join(10)
        return real(*args, **kwargs)

    setattr(store, read, overtaken)
    with pytest.raises(JournalClosed):
        getattr(journal, call)()


def test_close_reports_a_real_store_error_of_its_last_checkpoint_as_it_is(reopen):
    journal = reopen(memory_budget=1, checkpoint_interval=3600)
    journal.register("t", "n")
    out = journal.stream("t")
    out.append(b"x" * 1000)
    journal.checkpoint()
    journal.checkpoint()  # spilled
    assert out.spilled
    out.append(b"y")  # taken while spilled: close() reads the spill back to write it

    def get_stream(*args):
        raise StoreError("connection reset (the real trouble)")

    journal._table.store.get_stream = get_stream
    journal.close()
    assert "the real trouble" in journal._table.last_store_error


def test_a_wait_on_a_task_whose_registration_is_committing_keeps_its_timeout(make_journal, store_url):
    """The id is claimed here, but the task is not in memory yet: the wait
    reads the store, and that read gets the wait's time (at least the 1 s
    floor of a first read), not however long the store takes."""
    _shared(store_url)
    journal = make_journal()
    store = journal._table.store
    real_put, real_get = store.put_task, store.get
    committing, release = threading.Event(), threading.Event()

    def slow_commit(row, *args, **kwargs):
        committing.set()
        assert release.wait(10)
        return real_put(row, *args, **kwargs)

    def slow_read(task_id):
        time.sleep(5)  # the store is busy
        return real_get(task_id)

    store.put_task, store.get = slow_commit, slow_read
    registrar = threading.Thread(target=journal.register, args=("t", "n"))
    registrar.start()
    assert committing.wait(5)
    began = time.monotonic()
    try:
        with pytest.raises(WaitTimeout):
            journal.wait("t", 0.2)
        took = time.monotonic() - began
    finally:
        release.set()
        registrar.join(10)
    assert took < 2.5, f"wait(t, 0.2) took {took:.2f} s"
