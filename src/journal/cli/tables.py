"""Column widths for a terminal table that fits the screen without cutting ids.

Rich shrinks every column of a table that is too wide, ids included, and
drops narrow ones to a lone ellipsis.  An operator copies task and node ids
from the screen, so those columns keep their full width here, and the others
give up room instead: free text (a result, an error) first, then the rest
evenly, each cut with an ellipsis and never below a few characters.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

__all__ = ["Kind", "SEPARATOR", "fit"]

#: Characters between two columns: their padding, a space on each side.
SEPARATOR = 2
#: The narrowest a free-text column is cut before the other columns give.
TEXT_FLOOR = 12
#: The narrowest any column but an id is cut to.
FLOOR = 4


class Kind(Enum):
    ID = "id"  # never cut: copied from the screen
    TEXT = "text"  # free text, cut first
    VALUE = "value"  # a status, a time, a count: cut last


def fit(natural: Sequence[int], kinds: Sequence[Kind], width: int) -> list[int]:
    """Widths for columns whose widest cells are ``natural``, so that the
    table (separators included) fits ``width`` if cutting what may be cut is
    enough.  ID columns always keep their natural width."""
    widths = list(natural)
    room = width - SEPARATOR * max(len(widths) - 1, 0)
    for floor, shrinkable in (
        (TEXT_FLOOR, [i for i, kind in enumerate(kinds) if kind is Kind.TEXT]),
        (FLOOR, [i for i, kind in enumerate(kinds) if kind is not Kind.ID]),
    ):
        _shrink(widths, shrinkable, floor, sum(widths) - room)
    return widths


def _shrink(widths: list[int], columns: list[int], floor: int, excess: int) -> None:
    """Take ``excess`` characters from the widest of ``columns`` first, as
    water levels out, none going below ``floor``."""
    while excess > 0:
        candidates = [i for i in columns if widths[i] > floor]
        if not candidates:
            return
        widest = max(widths[i] for i in candidates)
        tops = [i for i in candidates if widths[i] == widest]
        below = max([widths[i] for i in candidates if widths[i] < widest] + [floor])
        # Lower every widest column to the next level down, or by what is left.
        step = min(widest - below, -(-excess // len(tops)))
        for i in tops:
            if excess <= 0:
                break
            cut = min(step, excess)
            widths[i] -= cut
            excess -= cut
