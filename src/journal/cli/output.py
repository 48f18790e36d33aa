"""How the command prints: rich tables on a terminal, plain text in a pipe,
JSON on request.  Commands build rows and hand them over; nothing else in
the command knows which of the three it is.

On a terminal, statuses are coloured, tables fit the screen without cutting
ids (see ``tables``), a stream's dropped middle and highlighted lines are
styled, and with ``pager=True`` the whole output goes through the pager
once it is longer than the screen.  In a pipe and with ``--json`` none of
that happens: the bytes are what they always were.
"""

from __future__ import annotations

import datetime
import io
import json
import re
import sys
import time
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple, Optional, Union, cast

from rich.console import Console
from rich.table import Table
from rich.text import Text

from journal.cli import pager as _pager
from journal.cli.styles import status_style, stream_text
from journal.cli.tables import SEPARATOR, Kind, fit
from journal.records import StreamView


_ColorSystem = Optional[Literal["auto", "standard", "256", "truecolor", "windows"]]


class Column(NamedTuple):
    """A table column: its header, and how it may be cut to fit a terminal."""

    name: str
    kind: Kind = Kind.VALUE


class Styled(NamedTuple):
    """A cell shown in ``style`` on a terminal, as plain ``value`` elsewhere."""

    value: Any
    style: str


def status(value: str) -> Styled:
    """A task status, in its colour on a terminal."""
    return Styled(value, status_style(value))


class Moment(NamedTuple):
    """A time: in full in a pipe (``when``), shorter on a terminal, where a
    table must fit the screen: the time alone today, the day and minute this
    year, the date before."""

    seconds: Optional[float]

    def short(self, now: Optional[float] = None) -> str:
        full = when(self.seconds)
        if self.seconds is None or len(full) != 19:
            return full
        today = when(time.time() if now is None else now)
        if full[:10] == today[:10]:
            return full[11:]
        return full[5:16] if full[:4] == today[:4] else full[:10]


class Output:
    def __init__(self, as_json: bool = False, pager: bool = False) -> None:
        self.as_json = as_json
        self.terminal = sys.stdout.isatty()
        self.console = Console(highlight=False, soft_wrap=not self.terminal)
        self._screen: Optional[Console] = None
        if pager and self.terminal and not as_json:
            # Drawn for the terminal, into a string the pager is given whole.
            self._screen, real = self.console, self.console
            self.console = Console(
                file=io.StringIO(), force_terminal=True,
                color_system=cast(_ColorSystem, real.color_system),  # the one it detected
                width=real.width, height=real.height, highlight=False, no_color=real.no_color,
            )

    def __enter__(self) -> Output:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.flush()

    def flush(self) -> None:
        """Hand what was drawn to the pager (a paged Output only)."""
        if self._screen is None:
            return
        stream = self.console.file
        assert isinstance(stream, io.StringIO)
        text, self.console, screen = stream.getvalue(), self._screen, self._screen
        self._screen = None
        _pager.page(text, screen.height)

    def json(self, value: Any) -> None:
        print(json.dumps(value, indent=2, default=_jsonable))

    def table(
        self, title: Optional[str], columns: Sequence[Union[str, Column]],
        rows: Sequence[Sequence[Any]], wrap: bool = False,
    ) -> None:
        """Rows under their headers.  On a terminal the table fits the
        screen by cutting text and values, never ids; ``wrap`` folds long
        cells onto more lines instead (a task's fields, read whole)."""
        specs = [column if isinstance(column, Column) else Column(column) for column in columns]
        if self.terminal:
            table, width = self._rich_table(title, specs, rows, wrap)
            # Wider than the screen only when the ids alone do not fit: the
            # terminal then wraps the line, but what is copied stays whole.
            screen = self.console.width
            self.console.width = max(width, screen)  # print(width=) cannot exceed it
            try:
                self.console.print(table)
            finally:
                self.console.width = screen
            return
        # Plain and pipe-friendly: tab-separated, one header line.
        if title:
            print(f"# {printable(title)}")
        print("\t".join(spec.name for spec in specs))
        for row in rows:
            print("\t".join(_cell(value) for value in row))

    def _rich_table(
        self, title: Optional[str], specs: list[Column], rows: Sequence[Sequence[Any]], wrap: bool,
    ) -> tuple[Table, int]:
        cells = [[_rich_cell(value) for value in row] for row in rows]
        # No rules between columns: two spaces (tables.SEPARATOR) leave the
        # room to ids and text, and a copied line is just its cells.
        table = Table(title=None if title is None else printable(title), title_justify="left",
                      box=None, pad_edge=False, header_style="bold")
        width = 0
        if wrap:
            for spec in specs:
                table.add_column(spec.name, overflow="fold")
        else:
            natural = [max([len(spec.name)] + [row[i].cell_len for row in cells if i < len(row)])
                       for i, spec in enumerate(specs)]
            widths = fit(natural, [spec.kind for spec in specs], self.console.width)
            width = sum(widths) + SEPARATOR * (len(widths) - 1)
            for spec, cut in zip(specs, widths):
                table.add_column(spec.name, width=cut, no_wrap=True, overflow="ellipsis")
        for row in cells:
            table.add_row(*row)
        return table, width

    def text(self, value: str) -> None:
        if self.terminal:
            self.console.print(value, markup=False)
        else:
            sys.stdout.write(value if value.endswith("\n") else value + "\n")

    def stream(self, view: StreamView) -> None:
        """A stream rendered: plain in a pipe, its dropped middle and
        highlighted lines styled on a terminal."""
        if not self.terminal:
            self.text(view.text())
            return
        self.console.print(stream_text(view), markup=False, end="" if view.text().endswith("\n") else "\n")

    def heading(self, value: str) -> None:
        """A line that introduces what follows (a stream in ``show``)."""
        if self.terminal:
            self.console.print(Text(printable(value), style="bold"))
        else:
            self.text(value)

    def note(self, value: str) -> None:
        """A remark beside the output, on stderr: pipes read stdout unchanged."""
        print(f"taskjournal: {printable(value)}", file=sys.stderr)


def when(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    try:
        moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
    except (OverflowError, OSError, ValueError, TypeError):
        return repr(seconds)  # a time no clock gives (a damaged row): shown as it is
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def size(count: Optional[float]) -> str:
    if count is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(count) < 1000 or unit == "GB":
            return f"{count:,.0f} {unit}" if unit == "B" else f"{count:,.1f} {unit}"
        count /= 1000
    return str(count)


# C0 and C1 control characters, DEL included: a node's error text (or a
# damaged row) could otherwise clear the operator's screen, retitle the
# window or break a tab-separated line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with control characters shown as escapes (``\\x1b``)."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def _cell(value: Any, grouped: bool = False) -> str:
    # Thousands separators for people; plain digits for pipes.
    if isinstance(value, Styled):
        return _cell(value.value, grouped)
    if isinstance(value, Moment):
        return value.short() if grouped else when(value.seconds)
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if grouped else f"{value:.2f}"
    if isinstance(value, int) and not isinstance(value, bool) and grouped:
        return f"{value:,}"
    return printable(str(value))


def _rich_cell(value: Any) -> Text:
    if isinstance(value, Styled):
        return Text(_cell(value.value, grouped=True), style=value.style)
    return Text(_cell(value, grouped=True))


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "_asdict"):
        return value._asdict()
    if hasattr(value, "value"):
        return value.value
    return str(value)
