"""The journal's promises under the interleavings an adversary forces.

Each test gates or breaks one store call so that a background pass and a
foreground call meet at the worst moment, then checks what the journal
acknowledged is what the store holds.  They run on every store they concern
and on both buffer twins (the fixtures of conftest.py).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time

import pytest

from forked import in_a_forked_child
from in_thread import in_thread
from journal import TaskStatus
from journal.errors import (
    InvalidArgument,
    JournalClosed,
    JournalError,
    StoreError,
    StreamSealed,
    UnknownTask,
)

QUIET = 3600.0  # a checkpoint timer that never fires during a test


class Gate:
    """Wraps a store method: the first call (matching ``when``) stops until
    ``release()``; later calls go straight through."""

    def __init__(self, store, name, when=lambda *args, **kwargs: True, then=None):
        self.entered = threading.Event()
        self._open = threading.Event()
        self._real = getattr(store, name)
        self._when = when
        self._then = then
        self._used = False
        setattr(store, name, self)

    def __call__(self, *args, **kwargs):
        if not self._used and self._when(*args, **kwargs):
            self._used = True
            self.entered.set()
            assert self._open.wait(10), "the gate was never released"
            if self._then is not None:
                raise self._then
        return self._real(*args, **kwargs)

    def release(self):
        self._open.set()


def _running(journal, task_id="t", data=b"a" * 1000):
    journal.register(task_id, "node")
    journal.start(task_id)
    out = journal.stream(task_id)
    out.append(data)
    return out


# -- 1. final output is never rolled back -----------------------------------


def test_checkpoint_committed_after_complete_keeps_the_final_output(reopen):
    journal = reopen(checkpoint_interval=QUIET)
    out = _running(journal)
    gate = Gate(journal._store, "put_streams")
    checkpoint = in_thread(journal.checkpoint)
    assert gate.entered.wait(10)  # its snapshot (1,000 bytes) is taken
    out.append(b"b" * 500)
    journal.complete("t", {"exit": 0})  # commits 1,500 bytes as final
    gate.release()
    checkpoint()  # ... then commits its older snapshot
    assert journal.get("t").streams["stdout"].total == 1500
    journal.close()
    view = reopen().get("t").streams["stdout"]
    assert view.total == 1500 and view.text().endswith("bbb")


# -- 2. the memory budget never wedges a task --------------------------------


def test_overlapping_checkpoint_passes_never_wedge_a_spilled_stream(reopen):
    journal = reopen(checkpoint_interval=QUIET, memory_budget=1)
    out = _running(journal)
    gate = Gate(journal._store, "put_streams")
    first = in_thread(journal.checkpoint)  # snapshot of 1,000 bytes, held at the gate
    assert gate.entered.wait(10)
    out.append(b"x" * 10)
    second = in_thread(journal.checkpoint)  # would spill 1,010 bytes meanwhile
    time.sleep(0.2)
    gate.release()
    first()
    second()
    journal.checkpoint()
    assert journal.get("t").streams["stdout"].total == 1010  # no CorruptSnapshot
    journal.complete("t")
    journal.close()
    assert reopen().get("t").streams["stdout"].total == 1010


@pytest.mark.parametrize("failure", [RuntimeError("OOM command not allowed"), StoreError("disk full")])
def test_a_store_that_raises_anything_loses_no_held_byte(reopen, failure):
    journal = reopen(checkpoint_interval=QUIET, memory_budget=1)
    out = _running(journal)
    journal.checkpoint()  # durable at 1,000 bytes, and spilled
    out.append(b"y" * 24)
    real = journal._store.put_streams

    def broken(items):
        list(items)
        raise failure

    journal._store.put_streams = broken
    journal.checkpoint()  # neither the checkpoint nor the spill is taken
    journal.checkpoint()
    stats = journal.stats()
    assert stats["store_errors"] >= 2 and str(failure) in stats["last_store_error"]
    view = journal.get("t").streams["stdout"]
    assert view.total == 1024 and view.text().endswith("y" * 24)
    journal._store.put_streams = real
    journal.complete("t")
    journal.close()
    assert reopen().get("t").streams["stdout"].total == 1024


def test_reads_racing_the_budget_pass_never_see_a_spilled_buffer(reopen):
    journal = reopen(checkpoint_interval=QUIET, memory_budget=1)
    out = _running(journal)
    stop = threading.Event()
    errors = []

    def spill_forever():
        while not stop.is_set():
            out.append(b"z" * 64)
            journal.checkpoint()

    async def follow():
        async for _ in journal.follow("t"):
            if stop.is_set():
                return

    def read_forever():
        try:
            while not stop.is_set():
                journal.get("t")
        except JournalError as exc:
            errors.append(exc)

    def follow_forever():
        try:
            asyncio.run(follow())
        except JournalError as exc:
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=f) for f in (spill_forever, read_forever, follow_forever)]
        for thread in threads:
            thread.start()
        time.sleep(2.0)
        stop.set()
        out.append(b"end")
        for thread in threads:
            thread.join(10)
    finally:
        sys.setswitchinterval(interval)
    assert errors == []


# -- 3. background passes survive and count ---------------------------------


def test_the_background_thread_survives_and_counts_a_failing_pass(make_journal):
    journal = make_journal(sweep_interval=0.01)

    def broken():
        raise RuntimeError("an unexpected failure")

    journal._sweep = broken
    time.sleep(0.3)
    assert journal._maintenance.thread.is_alive()
    assert journal.stats()["background_errors"] >= 2
    del journal._sweep  # the real one again: the thread goes on sweeping
    journal.register("t", "node", deadline=0.05)
    journal._clock.advance(1)
    assert journal.wait("t", timeout=5).status is TaskStatus.TIMED_OUT


# -- 4. every waiter ends ------------------------------------------------------


def test_close_ends_every_waiter(make_journal):
    journal = make_journal()
    journal.register("t", "node")

    async def wait_async():
        return await journal.wait_async("t")

    sync = in_thread(journal.wait, "t")
    coroutine = in_thread(asyncio.run, wait_async())
    time.sleep(0.2)
    journal.close()
    for waiter in (sync, coroutine):
        with pytest.raises(JournalClosed):
            waiter()


def test_a_wait_on_a_registration_that_fails_ends_unknown(make_journal):
    journal = make_journal()
    gate = Gate(journal._store, "put_task", when=lambda *a, new=False, **k: new,
                then=StoreError("the disk is full"))
    register = in_thread(journal.register, "t", "node")
    assert gate.entered.wait(10)
    waiter = in_thread(journal.wait, "t")  # finds the task being registered
    time.sleep(0.1)
    gate.release()
    with pytest.raises(StoreError):
        register()
    with pytest.raises(UnknownTask):
        waiter()


@pytest.mark.parametrize("timeout", [float("inf"), 1e10, threading.TIMEOUT_MAX * 2])
def test_a_wait_with_an_enormous_timeout_waits(make_journal, timeout):
    journal = make_journal()
    journal.register("t", "node")
    waiter = in_thread(journal.wait, "t", timeout)
    time.sleep(0.1)
    journal.complete("t", 7)
    assert waiter().result == 7


# -- 5. nothing is accepted after close that would not be kept ---------------


def test_after_close_nothing_is_accepted(make_journal):
    journal = make_journal()
    out = _running(journal)
    journal.close()
    with pytest.raises(StreamSealed):
        out.append(b"late")
    for call in (lambda: journal.stream("t", "stderr"), journal.list_tasks, journal.stats,
                 journal.sweep, journal.checkpoint, journal.in_flight,
                 lambda: journal.register("u", "node"), lambda: journal.complete("t"),
                 lambda: journal.get("never-registered")):
        with pytest.raises(JournalClosed):
            call()
    assert journal.get("t").streams["stdout"].total == 1000  # what it held still reads


def test_streams_sealed_by_close_go_on_after_a_restart(reopen):
    journal = reopen()
    _running(journal)
    journal.close()
    again = reopen()
    again.reattach("t", "node")
    out = again.stream("t")
    out.append(b"more")  # not sealed: the task is still running
    again.complete("t")
    assert again.get("t").streams["stdout"].total == 1004


# -- 6. text the store cannot hold --------------------------------------------


def test_a_lone_surrogate_is_refused_and_poisons_nothing(make_journal):
    journal = make_journal()
    out = _running(journal)
    for call in (lambda: journal.stream("t", "\ud800"), lambda: journal.register("\udcff", "n"),
                 lambda: journal.register("u", "no\ud800de")):
        with pytest.raises(InvalidArgument):
            call()
    out.append(b"b")
    journal.checkpoint()
    record = journal.fail("t", "decoded badly: \udcff")  # free text is escaped, not refused
    assert record.error == "decoded badly: \\udcff"
    assert journal.get("t").streams["stdout"].total == 1001


# -- 7. one owner: a forked child is refused ---------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_cannot_use_its_parents_journal(make_journal):
    journal = make_journal()
    _running(journal)
    pid = os.fork()
    if pid == 0:  # the child: every call must be refused
        code = 0
        for call in (lambda: journal.complete("t"), lambda: journal.get("t"),
                     lambda: journal.register("u", "n")):
            try:
                call()
                code = 1
            except JournalClosed:
                pass
            except BaseException:  # noqa: BLE001 - reported through the exit code
                code = 2
        journal.close()  # must not touch the parent's store
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    journal.complete("t", "parent")
    assert journal.wait("t", timeout=5).result == "parent"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_childs_close_returns_while_a_spill_held_a_lock_at_the_fork(reopen):
    """The spill writes under its task's shard lock; a fork that lands then
    leaves that lock held in the child for good (its holder did not come
    along). The child's close() must return all the same, and seal."""
    journal = reopen(memory_budget=1, checkpoint_interval=3600)
    journal.register("t", "n")
    out = journal.stream("t")
    out.append(b"x" * 1000)
    journal.checkpoint()  # written; the next pass spills it
    store = journal._table.store
    real_put_streams = store.put_streams
    in_spill, release = threading.Event(), threading.Event()

    def slow_put_streams(items):
        in_spill.set()
        assert release.wait(10)
        return real_put_streams(items)

    store.put_streams = slow_put_streams
    out.append(b"y" * 1000)
    spiller = threading.Thread(target=journal.checkpoint)
    spiller.start()
    assert in_spill.wait(5)
    code = in_a_forked_child(lambda: _close_then_append(journal, out))
    release.set()
    spiller.join(10)
    assert code == 0, "the child's close() hung or did not seal"
    assert out.spilled  # the parent's spill went on, and so does the parent
    journal.complete("t")
    assert journal.get("t").streams["stdout"].total == 2000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_childs_close_returns_while_an_append_held_a_buffer_lock(make_journal):
    journal = make_journal()
    journal.register("t", "n")
    out = journal.stream("t")
    lock = getattr(out, "_lock", None)
    if lock is None:
        pytest.skip("the compiled buffer appends without a lock")
    held, release = threading.Event(), threading.Event()

    def append_in_flight():
        with lock:  # as an append of another thread holds it
            held.set()
            assert release.wait(15)

    appender = threading.Thread(target=append_in_flight)
    appender.start()
    assert held.wait(5)
    code = in_a_forked_child(lambda: _close_then_append(journal, out))
    release.set()
    appender.join(10)
    assert code == 0, "the child's close() hung or did not seal"
    out.append(b"parent")
    assert journal.get("t").streams["stdout"].total == 6


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_in_a_forked_child_close_still_waits_for_the_childs_own_append(make_journal):
    """A buffer from before the fork: seal() does not wait for good on a
    lock the parent's threads may hold, but does wait for an append of the
    child's own threads, as in any process."""
    journal = make_journal()
    journal.register("t", "n")
    out = journal.stream("t")
    lock = getattr(out, "_lock", None)
    if lock is None:
        pytest.skip("the compiled buffer appends without a lock")

    def child():
        holding, done = threading.Event(), threading.Event()

        def append_in_flight():
            with lock:
                holding.set()
                time.sleep(0.2)
                done.set()

        appender = threading.Thread(target=append_in_flight)
        appender.start()
        holding.wait(5)
        journal.close()
        return 0 if done.is_set() else 4

    assert in_a_forked_child(child) == 0


def _close_then_append(journal, out):
    """In a forked child: 0 if close() returns and sealed the stream."""
    journal.close()
    try:
        out.append(b"z")
    except StreamSealed:
        return 0
    return 3


# -- 12. errors a caller can trigger are in the hierarchy ----------------------


@pytest.mark.parametrize("arguments", [{"status": "bogus"}, {"status": 3}, {"limit": -1},
                                       {"limit": 1.5}, {"limit": True}, {"node_id": "\ud800"}])
def test_list_tasks_refuses_bad_filters(make_journal, arguments):
    journal = make_journal()
    journal.register("t", "node")
    with pytest.raises(InvalidArgument):
        journal.list_tasks(**arguments)
    assert [r.task_id for r in journal.list_tasks(status="pending", limit=0)] == []
    assert [r.task_id for r in journal.list_tasks(status=TaskStatus.PENDING)] == ["t"]


def test_an_in_flight_stream_stored_sealed_is_unsealed_on_restart(reopen, buffer_cls):
    from journal.store import open_store

    journal = reopen()
    _running(journal)
    url = journal.store_url
    journal.close()
    store = open_store(url)  # as a journal of an older release might have left it
    buf = buffer_cls(20_000, 20_000)
    buf.append(b"a" * 1001)
    buf.seal()
    store.put_streams([("t", "stdout", buf.snapshot())])
    store.close()
    again = reopen()
    again.reattach("t", "node")
    again.stream("t").append(b"b")
    assert again.complete("t").streams["stdout"].total == 1002


# -- found by the second attack: one task, or one slow store, holding up others


def _remove_spilled_part(url, task_id):
    """Delete a stream's stored state behind the journal's back (as an
    eviction or an operator would)."""
    if url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(url[len("sqlite:///"):]) as conn:
            conn.execute("DELETE FROM streams WHERE task_id = ?", (task_id,))
        return
    from urllib.parse import parse_qs, urlsplit

    from redis_server import admin_client, task_keys

    prefix = parse_qs(urlsplit(url).query)["prefix"][0]
    client = admin_client(url)
    client.delete(task_keys(prefix, task_id)[1])
    client.close()


def test_one_task_whose_spilled_part_is_gone_does_not_stop_the_sweep(reopen):
    journal = reopen(checkpoint_interval=QUIET, memory_budget=0, result_ttl=60)
    journal.register("poison", "node", deadline=10)
    journal.stream("poison").append(b"p" * 5000)
    journal.checkpoint()  # spilled: the budget is 0
    assert journal.stream("poison").spilled
    _remove_spilled_part(journal.store_url, "poison")
    journal.register("done", "node")
    journal.complete("done", 1)
    victims = [f"v{n}" for n in range(32)]
    for task_id in victims:
        journal.register(task_id, "node", deadline=10)
    journal._clock.advance(100)
    counts = journal.sweep()  # ends every other task, and expires "done"
    assert counts["timed_out"] == len(victims) and counts["expired"] == 1
    assert all(journal.get(t).status is TaskStatus.TIMED_OUT for t in victims)
    assert "poison" in journal.stats()["last_store_error"]


@pytest.mark.parametrize("poll", [0, -1, float("nan"), float("inf"), 10**400, "1"])
def test_follow_refuses_a_poll_interval_it_cannot_keep(make_journal, poll):
    journal = make_journal()
    journal.register("t", "node")

    async def follow():
        async for _ in journal.follow("t", poll_interval=poll):
            pass

    with pytest.raises(InvalidArgument, match="poll_interval"):
        asyncio.run(follow())
