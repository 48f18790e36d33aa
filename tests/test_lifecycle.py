"""The transition table, on its own and driven at random against a model."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from journal import InvalidTransition, TaskStatus
from journal.lifecycle import TERMINAL, check_transition

S = TaskStatus
LEGAL = {(S.PENDING, S.RUNNING)} | {(a, b) for a in (S.PENDING, S.RUNNING) for b in TERMINAL}


@pytest.mark.parametrize(("current", "target"), list(itertools.product(S, S)))
def test_every_pair_follows_the_table(current, target):
    if (current, target) in LEGAL:
        check_transition("t", current, target)
    else:
        with pytest.raises(InvalidTransition) as caught:
            check_transition("t", current, target)
        message = str(caught.value)
        assert current.name in message and target.name in message and "'t'" in message


def test_terminal_states():
    assert {s for s in S if s.terminal} == {S.COMPLETED, S.FAILED, S.CANCELLED, S.TIMED_OUT, S.LOST}


# -- the journal against a model, one task id space ----------------------

MOVES = {
    "start": S.RUNNING,
    "complete": S.COMPLETED,
    "fail": S.FAILED,
    "cancel": S.CANCELLED,
}


class LifecycleMachine(RuleBasedStateMachine):
    """Random register/move/expire sequences; the journal must agree with a dict."""

    def __init__(self):
        super().__init__()
        from journal import JournalConfig, TaskJournal

        from conftest import FakeClock

        self.clock = FakeClock()
        self.journal = TaskJournal(
            config=JournalConfig(sweep_interval=0, result_ttl=100, lease_timeout=1e6),
            clock=self.clock,
            buffer_class=self.buffer_cls,
        )
        self.model: dict[str, TaskStatus] = {}
        #: expired id -> clock time its tombstone is forgotten
        self.expired: dict[str, float] = {}

    ids = st.sampled_from([f"task-{n}" for n in range(6)])

    @rule(task_id=ids)
    def register(self, task_id):
        from journal import DuplicateTask

        if task_id in self.model:
            with pytest.raises(DuplicateTask):
                self.journal.register(task_id, "node")
        else:
            record = self.journal.register(task_id, "node")
            assert record.status is S.PENDING
            self.model[task_id] = S.PENDING
            self.expired.pop(task_id, None)

    @rule(task_id=ids, move=st.sampled_from(sorted(MOVES)))
    def move(self, task_id, move):
        from journal import ResultExpired, UnknownTask

        action = getattr(self.journal, move)
        args = (task_id, "x") if move in ("complete", "fail") else (task_id,)
        if task_id not in self.model:
            expected = ResultExpired if task_id in self.expired else UnknownTask
            with pytest.raises(expected):
                action(*args)
            return
        target = MOVES[move]
        if (self.model[task_id], target) in LEGAL:
            assert action(*args).status is target
            self.model[task_id] = target
        else:
            with pytest.raises(InvalidTransition):
                action(*args)

    @precondition(lambda self: self.model)
    @rule()
    def let_results_expire(self):
        self.clock.advance(101)
        self.journal.sweep()
        now = self.clock()
        for task_id, status in list(self.model.items()):
            if status.terminal:
                del self.model[task_id]
                self.expired[task_id] = now + 100
        # Tombstones outlive the result by one more TTL, then are forgotten.
        self.expired = {t: until for t, until in self.expired.items() if now < until}

    @invariant()
    def journal_matches_model(self):
        for task_id, status in self.model.items():
            assert self.journal.get(task_id).status is status
        live = {r.task_id for r in self.journal.in_flight()}
        assert live == {t for t, s in self.model.items() if not s.terminal}

    def teardown(self):
        self.journal.close()


@pytest.mark.parametrize("_", [None])
def test_lifecycle_state_machine(buffer_cls, _):
    machine = type("Machine", (LifecycleMachine,), {"buffer_cls": buffer_cls})
    settings(max_examples=60, stateful_step_count=30, deadline=None)(machine)
    machine.TestCase().runTest()
