"""How the command prints: rich tables on a terminal, plain text in a pipe,
JSON on request.  Commands build rows and hand them over; nothing else in
the command knows which of the three it is."""

from __future__ import annotations

import datetime
import json
import re
import sys
from collections.abc import Sequence
from typing import Any, Optional

from rich.console import Console
from rich.table import Table


class Output:
    def __init__(self, as_json: bool = False) -> None:
        self.as_json = as_json
        self.terminal = sys.stdout.isatty()
        self.console = Console(highlight=False, soft_wrap=not self.terminal)

    def json(self, value: Any) -> None:
        print(json.dumps(value, indent=2, default=_jsonable))

    def table(self, title: Optional[str], columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if self.terminal:
            table = Table(title=None if title is None else printable(title), title_justify="left")
            for name in columns:
                table.add_column(name, overflow="fold")
            for row in rows:
                table.add_row(*(_cell(value, grouped=True) for value in row))
            self.console.print(table)
            return
        # Plain and pipe-friendly: tab-separated, one header line.
        if title:
            print(f"# {printable(title)}")
        print("\t".join(columns))
        for row in rows:
            print("\t".join(_cell(value) for value in row))

    def text(self, value: str) -> None:
        if self.terminal:
            self.console.print(value, markup=False)
        else:
            sys.stdout.write(value if value.endswith("\n") else value + "\n")


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
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if grouped else f"{value:.2f}"
    if isinstance(value, int) and not isinstance(value, bool) and grouped:
        return f"{value:,}"
    return printable(str(value))


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "_asdict"):
        return value._asdict()
    if hasattr(value, "value"):
        return value.value
    return str(value)
