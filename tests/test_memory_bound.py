"""Memory is bounded by default, on every store.

Durable stores: a finished task leaves memory when its final commit returns,
and is read back from the store.  memory://: past ``memory_budget`` the
output of the oldest finished tasks is released; their records keep the
rest and say so.  Results are never released.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from journal import JournalClosed, JournalConfig, TaskStatus

OUT = b"line of build output\n" * 100  # 2,100 bytes, all held (head 1,000 + tail 1,100)
LIMITS = {"head_bytes": 1_000, "tail_bytes": 1_100}
HELD = 2_100


def _finish(journal, task_id, output=OUT, result=None):
    journal.register(task_id, "node-1", meta={"n": task_id})
    journal.start(task_id)
    journal.stream(task_id).append(output)
    return journal.complete(task_id, result if result is not None else {"id": task_id})


def test_the_default_budget_is_finite():
    assert JournalConfig().memory_budget == 256 * 1024 * 1024


# -- durable stores: a finished task is not kept in memory -------------------


def test_a_finished_task_leaves_memory_when_its_final_commit_returns(reopen):
    journal = reopen(**LIMITS)
    finished = _finish(journal, "a")
    journal.register("b", "node-1")
    journal.stream("b").append(b"still running\n")
    stats = journal.stats()
    assert stats["tasks_in_memory"] == 1  # b only
    assert stats["bytes_resident"] == len(b"still running\n")
    again = journal.get("a")
    assert again.status is TaskStatus.COMPLETED and again.result == {"id": "a"}
    assert again.meta == {"n": "a"}
    assert again.streams["stdout"] == finished.streams["stdout"]
    assert journal.wait("a", timeout=1).result == {"id": "a"}
    assert [r.task_id for r in journal.list_tasks(status="completed")] == ["a"]


def test_a_finished_task_whose_end_raced_no_append_loses_none(reopen):
    # Appends from many threads while the task completes: whatever the seal
    # let in is in the record read back from the store.
    journal = reopen(**LIMITS)
    journal.register("t", "n")
    journal.start("t")
    out = journal.stream("t")
    accepted = []
    stop = threading.Event()

    def push():
        count = 0
        while not stop.is_set():
            try:
                out.append(b"x" * 10)
            except Exception:  # noqa: BLE001 - the seal
                break
            count += 10
        accepted.append(count)

    threads = [threading.Thread(target=push) for _ in range(4)]
    for thread in threads:
        thread.start()
    journal.complete("t")
    stop.set()
    for thread in threads:
        thread.join()
    assert journal.stats()["tasks_in_memory"] == 0
    assert journal.get("t").streams["stdout"].total == sum(accepted)


# -- memory://: finished output past the budget is released ------------------


@pytest.fixture
def memory_journal(buffer_cls, clock):
    from journal import TaskJournal

    opened = []

    def make(**config):
        config.setdefault("sweep_interval", 0)
        journal = TaskJournal("memory://", config=JournalConfig(**LIMITS, **config),
                              clock=clock, buffer_class=buffer_cls)
        opened.append(journal)
        return journal

    yield make
    for journal in opened:
        journal.close()


def test_past_the_budget_the_oldest_finished_output_is_released(memory_journal):
    journal = memory_journal(memory_budget=int(HELD * 2.5))
    for n in range(5):
        _finish(journal, f"t{n}", result={"exit": n})
    stats = journal.stats()
    assert stats["output_released_tasks"] == 3
    assert stats["output_released_bytes"] == 3 * HELD
    assert stats["bytes_resident"] == 2 * HELD
    for n in range(3):
        record = journal.get(f"t{n}")
        view = record.streams["stdout"]
        # Status, result, meta and counters stay; the output says it was released.
        assert record.status is TaskStatus.COMPLETED and record.result == {"exit": n}
        assert record.meta == {"n": f"t{n}"}
        assert (view.total, view.released, view.head, view.tail) == (len(OUT), HELD, b"", b"")
        assert view.render().startswith(b"[output released:")
        assert f"its {HELD:,} held bytes" in view.text()
        assert journal.wait(f"t{n}", timeout=1).result == {"exit": n}
    for n in (3, 4):
        view = journal.get(f"t{n}").streams["stdout"]
        assert view.released == 0 and view.render() == OUT


def test_running_tasks_output_is_never_released(memory_journal):
    journal = memory_journal(memory_budget=100)
    journal.register("running", "n")
    journal.stream("running").append(OUT)
    _finish(journal, "done")
    assert journal.get("running").streams["stdout"].render() == OUT
    assert journal.get("done").streams["stdout"].released == HELD
    # Nothing can be appended to a released stream, as to any ended task's.
    with pytest.raises(Exception, match="ended|sealed"):
        journal.stream("done").append(b"late")


def test_no_budget_releases_nothing(memory_journal):
    journal = memory_journal(memory_budget=None)
    for n in range(5):
        _finish(journal, f"t{n}")
    assert journal.stats()["output_released_tasks"] == 0
    assert all(journal.get(f"t{n}").streams["stdout"].render() == OUT for n in range(5))


def test_expired_tasks_leave_the_budget_they_used(memory_journal, clock):
    journal = memory_journal(memory_budget=int(HELD * 2.5), result_ttl=60)
    _finish(journal, "old-1")
    _finish(journal, "old-2")
    clock.advance(61)
    assert journal.sweep()["expired"] == 2
    _finish(journal, "new-1")
    _finish(journal, "new-2")
    # Had the expired tasks still been counted, new-1 would be released.
    assert journal.stats()["output_released_tasks"] == 0
    assert journal.get("new-1").streams["stdout"].render() == OUT


def test_follow_of_a_released_stream_ends(memory_journal):
    import asyncio

    journal = memory_journal(memory_budget=0)
    _finish(journal, "t")

    async def drain():
        return [chunk async for chunk in journal.follow("t")]

    chunks = asyncio.run(drain())
    assert b"".join(c.data for c in chunks) == b""
    assert sum(c.skipped for c in chunks) in (0, len(OUT))


def test_reads_racing_releases_see_whole_output_or_a_released_one(memory_journal):
    journal = memory_journal(memory_budget=HELD * 3)
    errors = []
    done = threading.Event()

    def finish_many(worker):
        try:
            for n in range(200):
                _finish(journal, f"w{worker}-{n}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def read_many():
        try:
            while not done.is_set():
                for record in journal.list_tasks(limit=20):
                    view = journal.get(record.task_id).streams.get("stdout")
                    if view is None:
                        continue
                    assert view.total == len(OUT)
                    assert view.render() == OUT or view.released == HELD
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    writers = [threading.Thread(target=finish_many, args=(w,)) for w in range(4)]
    readers = [threading.Thread(target=read_many) for _ in range(2)]
    for thread in writers + readers:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    for thread in readers:
        thread.join()
    assert not errors, errors[0]
    stats = journal.stats()
    assert stats["output_released_tasks"] == 800 - 3
    assert stats["bytes_resident"] == 3 * HELD


# -- durable stores: spilled streams that go on appending stay spilled -------


def test_a_spilled_stream_that_appends_again_is_spilled_again_not_merged_back(reopen):
    # 40 running streams of 4 KB each under a 10 KB budget.  The second pass
    # must not bring every grown stream back into memory to checkpoint it:
    # at every store write of that pass, resident bytes stay within the
    # budget plus the one stream being written.
    journal = reopen(head_bytes=2_048, tail_bytes=2_048, memory_budget=10_000,
                     checkpoint_interval=3600)
    chunk = b"y" * 4_096
    for n in range(40):
        journal.register(f"r{n}", "node")
        journal.stream(f"r{n}").append(chunk)
    journal.checkpoint()
    assert journal.stats()["bytes_resident"] <= 10_000
    for n in range(40):
        journal.stream(f"r{n}").append(b"more\n" * 20)

    table = journal._table
    seen = []
    real = table.store.put_streams

    def resident():
        # Without the shard locks: a spill holds one while it writes.
        return sum(len(buf) for shard in table.tasks._shards
                   for task in list(shard.entries.values()) for buf in task.streams.values())

    def watching(items):
        seen.append(resident())
        return real(items)

    table.store.put_streams = watching
    try:
        journal.checkpoint()
    finally:
        table.store.put_streams = real
    assert seen, "the pass wrote nothing"
    assert max(seen) <= 10_000 + 4_096 + 100, max(seen)
    assert journal.stats()["bytes_resident"] <= 10_000
    for n in (0, 17, 39):
        view = journal.get(f"r{n}").streams["stdout"]
        assert view.total == 4_096 + 100 and view.tail.endswith(b"more\n" * 20)


def test_a_checkpoint_pass_writes_in_batches_not_one_copy_of_everything(reopen):
    # 300 streams of 40 KB changed since the last pass: 12 MB of snapshots.
    # Written in batches of at most 4 MiB (plus one snapshot), a pass never
    # holds a second copy of every buffer.
    journal = reopen(checkpoint_interval=3600)
    chunk = b"z" * 40_000
    for n in range(300):
        journal.register(f"s{n}", "node")
        journal.stream(f"s{n}").append(chunk)
    table = journal._table
    batches = []
    real = table.store.put_streams

    def watching(items):
        batches.append(sum(len(snapshot) for _, _, snapshot in items))
        return real(items)

    table.store.put_streams = watching
    try:
        assert journal.checkpoint() == 300
    finally:
        table.store.put_streams = real
    assert len(batches) >= 3 and max(batches) <= 4 * 1024 * 1024 + 41_000, batches
    assert journal.stats()["bytes_checkpointed"] == 300 * 40_000


def _complete_with_its_last_checkpoint_refused(journal, task_id):
    """complete() the task with 5 bytes ("late\\n") appended after its final
    snapshot, before the seal, and the checkpoint of them at its end refused
    by the store: the task stays in memory until a pass writes them."""
    store = journal._table.store
    put_task, put_streams = store.put_task, store.put_streams

    def racing(row, *args, **kwargs):
        put_task(row, *args, **kwargs)
        if row.status == "completed":
            journal.stream(task_id).append(b"late\n")
            store.put_streams = refused

    def refused(items):
        store.put_streams = put_streams  # only the checkpoint at its end
        raise OSError("disk full")

    store.put_task = racing
    try:
        journal.complete(task_id, {"ok": 1})
    finally:
        store.put_task, store.put_streams = put_task, put_streams


def test_a_pass_among_silent_tasks_still_writes_spills_and_lets_go(reopen):
    # The pass looks only at tasks with a stream or an end.  Beside 200
    # silent pending tasks: a running one is checkpointed and then spilled,
    # and a finished one whose last checkpoint (of appends that raced its
    # end) the store refused is written and leaves memory.
    journal = reopen(**LIMITS, memory_budget=1_000, checkpoint_interval=3600)
    for n in range(200):
        journal.register(f"quiet-{n}", "node-1")
    journal.register("busy", "node-1")
    journal.start("busy")
    journal.stream("busy").append(OUT)
    journal.register("done", "node-1")
    journal.start("done")
    journal.stream("done").append(OUT)
    _complete_with_its_last_checkpoint_refused(journal, "done")
    assert journal.stats()["tasks_in_memory"] == 202  # "done" waits for its checkpoint
    journal.stream("busy").append(b"more\n")  # changed since: to be written
    assert journal.checkpoint() == 2
    assert journal.stats()["tasks_in_memory"] == 201
    assert journal.stream("busy").spilled
    assert journal.get("done").streams["stdout"].total == len(OUT) + 5
    assert journal.get("busy").streams["stdout"].total == len(OUT) + 5
    assert journal.get("quiet-7").status is TaskStatus.PENDING


def test_a_task_the_pass_lets_go_of_does_not_count_against_the_budget(reopen):
    # A finished task kept in memory (its last checkpoint was refused) holds
    # five times the budget; the pass writes it and lets go of it.  What is
    # left resident, a running task's 200 bytes, is under the budget and
    # must stay in memory: counting the bytes just let go of spilled it.
    journal = reopen(memory_budget=1_000, checkpoint_interval=3600)
    for task_id in ("running", "done"):
        journal.register(task_id, "node-1")
        journal.start(task_id)
    running = journal.stream("running")
    running.append(b"r" * 200)
    journal.stream("done").append(b"F" * 5_000)
    _complete_with_its_last_checkpoint_refused(journal, "done")
    assert journal.stats()["tasks_in_memory"] == 2  # "done" waits for its checkpoint
    journal.checkpoint()
    assert journal.stats()["tasks_in_memory"] == 1
    assert not running.spilled
    assert journal.stats()["bytes_resident"] == 200
    assert journal.get("done").streams["stdout"].total == 5_005


def test_appends_racing_the_end_of_a_task_spilled_meanwhile_are_kept(reopen):
    # complete() has taken its final snapshot and is committing; a budget
    # pass meanwhile must leave the task be (its end is being committed: the
    # record complete() returns must not need a store read), and appends
    # that land before the seal must be written by its last checkpoint,
    # after which the task leaves memory.
    journal = reopen(head_bytes=1_000, tail_bytes=1_000, memory_budget=100,
                     checkpoint_interval=3600)
    journal.register("t", "node")
    journal.start("t")
    out = journal.stream("t")
    out.append(b"a" * 3_000)
    store = journal._table.store
    real = store.put_task
    entered, gate = threading.Event(), threading.Event()

    def held(row, *args, **kwargs):
        if row.status == "completed":
            entered.set()
            assert gate.wait(10)
        return real(row, *args, **kwargs)

    store.put_task = held
    ending = threading.Thread(target=journal.complete, args=("t", {"ok": 1}))
    ending.start()
    try:
        assert entered.wait(10)
        journal.checkpoint()  # a budget pass, far over its budget
        assert not out.spilled
        out.append(b"late\n" * 10)
    finally:
        gate.set()
        ending.join()
        store.put_task = real
    # Written and let go by complete() itself, not left for the next pass.
    assert journal.stats()["tasks_in_memory"] == 0
    journal.close()
    view = reopen().get("t").streams["stdout"]
    assert view.total == 3_050 and view.tail.endswith(b"late\n" * 10)


def test_after_close_a_held_task_whose_stream_was_spilled_raises_journal_closed(reopen):
    """After close() a held task is read from memory; what the budget moved
    to the store cannot be read from there any more. The answer is the
    documented JournalClosed, never the closed store's own error, and the
    spilled output is intact for the next journal."""
    journal = reopen(memory_budget=1, checkpoint_interval=3600)
    journal.register("t", "n")
    journal.register("u", "n")
    journal.stream("t").append(b"x" * 1000)
    journal.checkpoint()
    journal.checkpoint()  # the budget spills t's idle stream
    assert journal.stream("t").spilled
    journal.close()
    assert journal.get("u").status is TaskStatus.PENDING  # held, nothing spilled: read
    with pytest.raises(JournalClosed, match="moved its stream 'stdout' to the store"):
        journal.get("t")
    again = reopen()
    assert again.get("t").streams["stdout"].total == 1000


def test_a_follow_of_a_stream_spilled_before_close_ends_with_journal_closed(reopen):
    journal = reopen(memory_budget=1, checkpoint_interval=3600)
    journal.register("t", "n")
    out = journal.stream("t")
    out.append(b"x" * 1000)

    async def scenario():
        follower = journal.follow("t", poll_interval=0.01)
        got = [await follower.__anext__()]
        out.append(b"y" * 500)
        journal.checkpoint()  # the budget spills the stream
        assert out.spilled
        journal.close()
        with pytest.raises(JournalClosed):
            async for chunk in follower:
                got.append(chunk)
        return got

    assert [chunk.data for chunk in asyncio.run(scenario())] == [b"x" * 1000]
    assert reopen().get("t").streams["stdout"].total == 1500
