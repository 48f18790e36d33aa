"""The sweep against the changes that answer its verdict.

The sweep decides a task is LOST from its node's lease (or its re-attach
grace) and then ends it.  A registration, start() or reattach() committed
meanwhile renews that lease: the verdict must be judged again, not carried
out, and the sweep must not sit waiting for somebody else's commit.
"""

from __future__ import annotations

import threading

import pytest

from journal import TaskStatus


def _sweep_during(journal, store, commit_of):
    """Patch ``store.put_task`` so that a sweep runs, on its own thread,
    while the commit ``commit_of(row, kwargs)`` picks is in flight; the sweep
    must be over before that commit ends."""
    real_put = store.put_task
    swept = []

    def put_task(row, *args, **kwargs):
        if commit_of(row, kwargs) and not swept:
            sweeper = threading.Thread(target=lambda: swept.append(journal.sweep()))
            sweeper.start()
            sweeper.join(5)
            assert not sweeper.is_alive(), "the sweep waited on a commit in flight"
        return real_put(row, *args, **kwargs)

    store.put_task = put_task
    return swept


def test_a_task_registered_while_the_sweep_runs_is_not_lost(journal, clock):
    # Node n finished a task and was quiet for just under a lease: the
    # journal still remembers it, with a time that a new task must renew.
    journal.register("old", "n")
    journal.complete("old")
    clock.advance(59.5)
    journal.sweep()
    clock.advance(1.0)
    swept = _sweep_during(journal, journal._table.store,
                          lambda row, kwargs: kwargs.get("new") and row.task_id == "new")
    assert journal.register("new", "n").status is TaskStatus.PENDING
    assert swept and swept[0]["lost"] == 0
    assert journal.get("new").status is TaskStatus.PENDING
    journal.sweep()
    assert journal.get("new").status is TaskStatus.PENDING  # its lease starts now
    clock.advance(61)
    journal.sweep()
    assert journal.get("new").status is TaskStatus.LOST


def test_a_task_started_while_the_sweep_runs_is_not_lost(journal, clock):
    journal.register("t", "n")
    clock.advance(60.5)  # the lease ran out; start() renews it
    swept = _sweep_during(journal, journal._table.store, lambda row, kwargs: row.status == "running")
    assert journal.start("t").status is TaskStatus.RUNNING
    assert swept and swept[0]["lost"] == 0
    journal.sweep()
    assert journal.get("t").status is TaskStatus.RUNNING


def test_a_reattach_made_within_the_grace_is_not_lost(reopen, clock):
    first = reopen(reattach_grace=30)
    first.register("t", "n")
    first.close()
    second = reopen(reattach_grace=30)
    clock.advance(29.9)

    def reattach_commit(row, kwargs):
        if row.task_id == "t" and not kwargs.get("new"):
            clock.advance(0.2)  # the commit is slow: the grace runs out meanwhile
            return True
        return False

    swept = _sweep_during(second, second._table.store, reattach_commit)
    assert not second.reattach("t", "n").detached
    assert swept and swept[0]["lost"] == 0
    second.sweep()
    assert second.get("t").status is TaskStatus.PENDING


def test_a_start_applied_after_the_verdict_is_judged_again(journal, clock):
    """start() commits and applies between the sweep's verdict and the
    sweep's own change: the lease it renewed answers the verdict."""
    journal.register("t", "n")
    clock.advance(60.5)
    changes = journal._changes
    real_transition = changes.transition

    def transition(task_id, target, *args, **kwargs):
        if target is TaskStatus.LOST:
            changes.transition = real_transition
            journal.start("t")
        return real_transition(task_id, target, *args, **kwargs)

    changes.transition = transition
    assert journal.sweep()["lost"] == 0
    assert journal.get("t").status is TaskStatus.RUNNING


def test_a_change_that_commits_late_does_not_move_the_lease_back(journal, clock):
    """start() renews with the time it began at; a heartbeat that came
    while its commit was in flight is later, and stays."""
    journal.register("t", "n")
    store = journal._table.store
    real_put = store.put_task

    def put_task(row, *args, **kwargs):
        if row.status == "running":
            clock.advance(30)
            journal.heartbeat("n")
        return real_put(row, *args, **kwargs)

    store.put_task = put_task
    journal.start("t")
    clock.advance(35)  # 65 s after start() began, 35 s after the heartbeat
    journal.sweep()
    assert journal.get("t").status is TaskStatus.RUNNING
    clock.advance(26)
    journal.sweep()
    assert journal.get("t").status is TaskStatus.LOST


def test_a_wall_clock_stepped_back_leaves_no_lease_in_the_future(journal, clock):
    """The clock is time.time by default: a step forward then back (NTP)
    must not keep a node alive until the clock catches up again."""
    journal.register("t", "n")
    clock.advance(3600)
    journal.heartbeat("n")  # stamped an hour ahead
    clock.advance(-3600 + 10)
    journal.heartbeat("n")  # its last sign of life, at the right time
    clock.advance(61)
    journal.sweep()
    assert journal.get("t").status is TaskStatus.LOST


def test_the_sweeps_streaming_renewal_does_not_undo_a_later_heartbeat(make_journal, clock):
    """The sweep renews a streaming node's lease; a heartbeat that came
    while the same sweep ended another task (one slow commit) is later,
    and stays."""
    journal = make_journal(shards=1)
    journal.register("b", "m", deadline=5)  # the sweep ends it first
    journal.register("a", "n")
    journal.stream("a").append(b"output")
    store = journal._table.store
    real_put = store.put_task

    def put_task(row, *args, **kwargs):
        if row.task_id == "b" and row.status == "timed_out":
            clock.advance(30)  # a slow commit
            journal.heartbeat("n")
        return real_put(row, *args, **kwargs)

    store.put_task = put_task
    clock.advance(10)
    assert journal.sweep()["timed_out"] == 1
    clock.advance(31)  # 31 s after the heartbeat, 61 s after the sweep began
    journal.sweep()
    assert journal.get("a").status is TaskStatus.PENDING, journal.get("a").error


@pytest.mark.parametrize("first", ["quiet", "loud"])
def test_a_node_that_streams_on_one_task_keeps_its_others(make_journal, clock, first):
    """Streaming on one task renews its node: the node's other task is not
    LOST, whichever of the two the sweep reaches first."""
    journal = make_journal(shards=1)  # one shard: the order of registration is the sweep's
    for task_id in (first, "loud" if first == "quiet" else "quiet"):
        journal.register(task_id, "n")
    loud = journal.stream("loud")
    clock.advance(30)
    loud.append(b"still going\n")
    journal.sweep()
    clock.advance(55)
    loud.append(b"still going\n")
    clock.advance(6)  # 61 s since the last sweep saw it stream; 6 s since it did
    assert journal.sweep()["lost"] == 0
    assert journal.get("quiet").status is TaskStatus.PENDING
