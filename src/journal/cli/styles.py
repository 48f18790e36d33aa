"""What the eye should find on a terminal: statuses in colour, and in a
rendered stream the marker of the dropped middle and the highlighted lines.

Used only on a terminal: pipes get the plain text, byte for byte.  Rich
honours ``NO_COLOR`` (and a dumb ``TERM``) on its own.
"""

from __future__ import annotations

import re
import secrets

from rich.text import Text

from journal._buffer_shared import DEFAULT_MARKER
from journal._highlights import HIGHLIGHT_MARKER, Highlight
from journal.records import StreamView

__all__ = ["MARKER", "HIGHLIGHT", "is_context", "status_style", "stream_text", "terminal_safe"]

STATUS_STYLES = {
    "pending": "dim",
    "running": "cyan",
    "completed": "green",
    "failed": "bold red",
    "cancelled": "yellow",
    "timed_out": "bold yellow",
    "lost": "bold magenta",
}
#: The line that says the middle was dropped, and the lines kept from it.
MARKER = "bold yellow"
HIGHLIGHT = "bold red"
LINE_NUMBER = "yellow"

# Control characters but newline and tab: stream text is shown with its
# lines, but an escape sequence a node printed must not drive the terminal.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def is_context(kept: Highlight) -> bool:
    """Whether a kept line is context around a match rather than a match."""
    return kept.context


def _line(out: Text, text: str, style: str) -> None:
    out.append(terminal_safe(text), style)
    out.append("\n")


def status_style(status: str) -> str:
    return STATUS_STYLES.get(status, "")


def terminal_safe(text: str) -> str:
    """``text`` with control characters (not newlines or tabs) shown as escapes."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def stream_text(view: StreamView) -> Text:
    """The stream as ``view.text()`` renders it, the dropped middle styled.

    The middle is found by a random token put in front of the marker, so
    stream text that merely looks like a marker is never styled as one."""
    if view.dropped == 0:
        return Text(terminal_safe(view.text()))
    token = f"\x00{secrets.token_hex(8)}\x00"
    template = DEFAULT_MARKER if view.dropped_lines is None else HIGHLIGHT_MARKER
    before, _, rest = view.text(marker=token + template).partition(token)
    # The middle's lines: the marker's leading newline, the marker, each
    # kept line, the "more not kept" line and the closing line.
    count = 2
    if view.dropped_lines is not None and (view.highlights or view.highlights_skipped):
        count += len(view.highlights) + (1 if view.highlights_skipped else 0) + 1
    pieces = rest.split("\n", count)
    middle, after = pieces[:count], pieces[count] if len(pieces) > count else ""
    out = Text(terminal_safe(before))
    out.append("\n")
    lines = iter(middle[1:])
    _line(out, next(lines, ""), MARKER)
    skipped = view.dropped_lines is not None and view.highlights_skipped > 0
    for index, kept in enumerate(view.highlights):
        if index == view.highlights_first and skipped:
            _line(out, next(lines, ""), MARKER)  # "... more highlighted lines not kept"
        label, cut, text = next(lines, "").partition("] ")
        out.append(terminal_safe(label + cut), LINE_NUMBER)
        # A context line (kept for the lines around a match) is not the match.
        _line(out, text, "" if is_context(kept) else HIGHLIGHT)
    if skipped and view.highlights_first == len(view.highlights):
        _line(out, next(lines, ""), MARKER)
    for rest_line in lines:
        _line(out, rest_line, MARKER)  # the closing "end of highlights"
    out.append(terminal_safe(after))
    return out
