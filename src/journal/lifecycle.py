"""Task states and the one table that decides every move between them."""

from __future__ import annotations

import enum

from journal.errors import InvalidTransition

__all__ = ["TERMINAL", "TaskStatus", "check_transition"]


class TaskStatus(str, enum.Enum):
    PENDING = "pending"  # registered and dispatched, not yet reported running
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"  # its deadline passed
    LOST = "lost"  # its node's lease or reattach grace ran out

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    def __str__(self) -> str:
        return self.value


TERMINAL = frozenset(
    {
        TaskStatus.COMPLETED,
        TaskStatus.FAILED,
        TaskStatus.CANCELLED,
        TaskStatus.TIMED_OUT,
        TaskStatus.LOST,
    }
)

# A task may end straight from PENDING (a node can fail before it starts, a
# quick command can finish before its "running" report arrives).  Terminal
# states are final.
_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PENDING: frozenset({TaskStatus.RUNNING}) | TERMINAL,
    TaskStatus.RUNNING: TERMINAL,
    **{state: frozenset() for state in TERMINAL},
}


def check_transition(task_id: str, current: TaskStatus, target: TaskStatus) -> None:
    """Raise InvalidTransition, naming both states, unless the move is legal."""
    if target not in _TRANSITIONS[current]:
        if current.terminal:
            hint = "terminal states are final"
        else:
            allowed = ", ".join(sorted(s.name for s in _TRANSITIONS[current]))
            hint = f"from {current.name} a task can move to {allowed}"
        raise InvalidTransition(
            f"task {task_id!r} cannot move from {current.name} to {target.name}: {hint}"
        )
