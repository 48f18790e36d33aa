"""How the command refuses what it is given: one line on stderr, exit status 1.

Option and argument checks live here, made before any store is opened, so a
bad value never reaches the library as something it half-understands (a
negative TTL that removes every result, a poll interval of nan).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, Optional

import click

from journal.errors import InvalidArgument
from journal.validation import check_id

__all__ = [
    "CommandError",
    "Text",
    "UsageProblem",
    "check_task_id",
    "non_negative_int",
    "one_line",
    "seconds_option",
]


def one_line(message: str) -> str:
    """``message`` on one line: a store's multi-line error is joined up."""
    parts = [part.strip() for part in str(message).splitlines() if part.strip()]
    return "; ".join(parts) if parts else "failed"


class CommandError(click.ClickException):
    """A problem the user can fix: ``taskjournal: <message>`` and exit 1."""

    exit_code = 1

    def show(self, file: Optional[IO[Any]] = None) -> None:
        click.echo(f"taskjournal: {one_line(self.format_message())}", err=True)


class UsageProblem(CommandError):
    """Options that cannot go together: one line too, but exit status 2,
    as for every usage error."""

    exit_code = 2


if TYPE_CHECKING:
    # Recent click types ParamType by the value it converts to; subscripting
    # it at run time would break click 8.1, the floor this package declares.
    _ParamType = click.ParamType[object]
else:
    _ParamType = click.ParamType


class Text(_ParamType):
    """A str option or argument that must be valid UTF-8.

    Python hands argv (and the environment) bytes that are not UTF-8 over as
    lone surrogates (``surrogateescape``); no store can hold those, and
    SQLite raises UnicodeEncodeError on them, so they stop here, shown as the
    bytes the user typed.
    """

    name = "text"

    def __init__(self, label: str) -> None:
        self.label = label

    def convert(
        self, value: object, param: Optional[click.Parameter], ctx: Optional[click.Context]
    ) -> object:
        if not isinstance(value, str):
            return value
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raw = value.encode("utf-8", "surrogateescape") if _escaped_only(value) else None
            shown = repr(raw) if raw is not None else repr(value)
            raise CommandError(
                f"{self.label} {shown} is not valid UTF-8 (at position {exc.start}); "
                "give it as UTF-8 text"
            ) from None
        return value


def _escaped_only(value: str) -> bool:
    try:
        value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return True


def check_task_id(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[str]:
    """A TASK_ID argument the journal could hold, or a one-line refusal."""
    if value is None:
        return None
    try:
        return check_id("task id", value)
    except InvalidArgument as exc:
        raise CommandError(str(exc)) from None


def _option_name(param: click.Parameter) -> str:
    names: list[str] = getattr(param, "opts", None) or [param.name or "value"]
    return max(names, key=len)


def non_negative_int(ctx: click.Context, param: click.Parameter, value: Optional[int]) -> Optional[int]:
    if value is not None and value < 0:
        raise CommandError(f"{_option_name(param)} must be a whole number >= 0, got {value}")
    return value


def seconds_option(
    minimum: float, maximum: float, inclusive: bool = True
) -> Callable[[click.Context, click.Parameter, Optional[float]], Optional[float]]:
    """A click callback: the option is a finite number of seconds in range."""

    def check(ctx: click.Context, param: click.Parameter, value: Optional[float]) -> Optional[float]:
        if value is None:
            return None
        low_ok = value >= minimum if inclusive else value > minimum
        if not (math.isfinite(value) and low_ok and value <= maximum):
            bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
            raise CommandError(
                f"{_option_name(param)} must be seconds {bound} and at most {maximum:,.0f}, "
                f"got {value!r}"
            )
        return value

    return check
