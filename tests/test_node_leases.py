"""Node bookkeeping stays bounded: a node with nothing in flight whose
lease ran out is forgotten at the next sweep, while a node that still runs
a task is kept (and its lease still judged)."""

from __future__ import annotations

from journal import TaskStatus


def test_nodes_with_nothing_in_flight_are_forgotten_after_their_lease(make_journal):
    journal = make_journal(lease_timeout=60)
    for n in range(500):
        journal.register(f"t{n}", f"node-{n}")
        journal.complete(f"t{n}")
    journal.register("busy", "node-busy")
    journal.start("busy")
    assert journal.stats()["nodes"] == 501
    journal._clock.advance(30)
    journal.heartbeat("node-busy")
    journal.sweep()
    assert journal.stats()["nodes"] == 501  # all still within their lease
    journal._clock.advance(45)
    journal.sweep()
    # node-busy renewed 45 s ago: kept, and its task is not LOST; the others went.
    assert journal.stats()["nodes"] == 1
    assert journal.get("busy").status is TaskStatus.RUNNING
    journal._clock.advance(61)
    journal.sweep()
    assert journal.get("busy").status is TaskStatus.LOST
