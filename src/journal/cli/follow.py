"""``tail -f``: follow a task's stream checkpoint by checkpoint to its end.

What the follower sees, in order: new stream data; where the stream outran
the polls, how many bytes were not kept and the highlighted lines kept from
them; a notice when nothing has changed for a while (the hub may have
stopped checkpointing); and at the end the task's final status and exit
code.  Each of these is an event handed to a sink: plain (stdout carries
the stream's bytes exactly, notices go to stderr), terminal (the same,
styled) or JSON lines (one object per event, all on stdout).
"""

from __future__ import annotations

import codecs
import json
import sys
import time
from typing import Any, Callable, Optional, Protocol

from rich.console import Console
from rich.text import Text

from journal._highlights import Highlight
from journal.cli.output import printable
from journal.cli.styles import (
    HIGHLIGHT,
    LINE_NUMBER,
    MARKER,
    is_context,
    status_style,
    terminal_safe,
)
from journal.errors import StoreCorrupt, StoreError
from journal.records import StreamView, TaskRecord

__all__ = ["Follower", "JsonSink", "PlainSink", "exit_code_of", "exit_status"]


def exit_code_of(record: TaskRecord) -> Optional[int]:
    """The exit code a task's result carries (``{"exit_code": N}``, as the
    example hub and ``simulate`` record it), or None."""
    result = record.result
    if isinstance(result, dict):
        code = result.get("exit_code")
        if isinstance(code, int) and not isinstance(code, bool):
            return code
    return None


def exit_status(record: TaskRecord) -> int:
    """What ``tail -f`` exits with once the task ended: 0 if it completed,
    else its own exit code when that is 1 to 125 (above are the shell's
    codes for signals), else 1."""
    if record.status.value == "completed":
        return 0
    code = exit_code_of(record)
    return code if code is not None and 1 <= code <= 125 else 1


class Sink(Protocol):
    def data(self, position: int, skipped: int, data: bytes) -> None: ...
    def highlights(self, skipped: int, lines: list[Highlight]) -> None: ...
    def stalled(self, record: TaskRecord, seconds: float) -> None: ...
    def resumed(self, seconds: float) -> None: ...
    def unreachable(self, error: str) -> None: ...
    def end(self, record: TaskRecord) -> None: ...


def end_line(record: TaskRecord) -> str:
    code = exit_code_of(record)
    line = f"--- task {record.task_id} {record.status.value}"
    if code is not None:
        line += f", exit code {code}"
    if record.error:
        line += f": {record.error}"
    return line


def stall_line(record: TaskRecord, seconds: float) -> str:
    return (f"no new checkpoint of task {record.task_id} ({record.status.value}) for "
            f"{_seconds(seconds)}: its hub may have stopped checkpointing, or the task prints "
            "nothing; still following (Ctrl-C to stop)")


def _matches(lines: list[Highlight]) -> int:
    return sum(not is_context(line) for line in lines)


def _label(line: Highlight) -> str:
    # As the rendered stream shows them: a bar marks a line of context.
    return f"[line {line.line}] | " if is_context(line) else f"[line {line.line}] "


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 10 else f"{value:,.0f} s"


class Follower:
    """Polls the task every ``interval`` seconds and feeds ``sink``."""

    def __init__(self, get: Callable[[], TaskRecord], name: str, sink: Sink, interval: float,
                 stall_after: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._get, self.name, self.sink = get, name, sink
        self.interval, self.stall_after = interval, stall_after
        self._clock, self._sleep = clock, sleep
        self.offset = 0

    def run(self, record: TaskRecord) -> TaskRecord:
        """Follow from ``record`` (the first read) to the task's end; the final record."""
        changed_at = self._clock()
        fingerprint = _fingerprint(record)
        stalled = unreachable = False
        while True:
            view = record.streams.get(self.name)
            if view is not None and view.total > self.offset:
                self._print_new(view)
            if record.terminal:
                self.sink.end(record)
                return record
            self._sleep(self.interval)
            try:
                record = self._get()
            except StoreCorrupt:
                raise  # damage does not heal by waiting
            except StoreError as exc:
                # A store restarting (Redis gone, SQLite busy) is not the end
                # of the task: say so once, go on.
                if not unreachable:
                    self.sink.unreachable(str(exc))
                unreachable = True
                continue
            unreachable = False
            now = self._clock()
            if _fingerprint(record) != fingerprint:
                fingerprint = _fingerprint(record)
                if stalled:
                    self.sink.resumed(now - changed_at)
                changed_at, stalled = now, False
            elif not stalled and now - changed_at >= self.stall_after:
                stalled = True
                self.sink.stalled(record, now - changed_at)

    def _print_new(self, view: StreamView) -> None:
        while self.offset < view.total:
            position, data = view.read_from(self.offset)
            if position > self.offset:
                # Outrun between two polls: the lines kept from what was dropped.
                kept = [h for h in view.highlights if self.offset <= h.offset < position]
                self.sink.highlights(position - self.offset, kept)
            self.sink.data(position, position - self.offset, data)
            self.offset = position + len(data)


def _fingerprint(record: TaskRecord) -> tuple[Any, ...]:
    return (record.status, record.updated_at,
            tuple(sorted((name, view.total) for name, view in record.streams.items())))


class PlainSink:
    """The stream's bytes on stdout exactly; markers between them; notices
    on stderr, so ``tail -f TASK > file`` keeps only the stream."""

    def __init__(self) -> None:
        self._line_start = True

    def data(self, position: int, skipped: int, data: bytes) -> None:
        if data:
            self._write(data)

    def highlights(self, skipped: int, lines: list[Highlight]) -> None:
        lead = b"" if self._line_start else b"\n"
        if not lines:
            self._write(lead + f"[... {skipped:,} bytes not kept ...]\n".encode())
            return
        out = [lead + f"[... {skipped:,} bytes not kept; {_matches(lines)} highlighted lines "
               "follow ...]\n".encode()]
        out += [_label(line).encode() + line.text + b"\n" for line in lines]
        out.append(b"[... end of highlights ...]\n")
        self._write(b"".join(out))

    def stalled(self, record: TaskRecord, seconds: float) -> None:
        self._note(stall_line(record, seconds))

    def resumed(self, seconds: float) -> None:
        self._note(f"checkpoints again after {_seconds(seconds)}")

    def unreachable(self, error: str) -> None:
        self._note(f"store unreachable, retrying: {error}")

    def end(self, record: TaskRecord) -> None:
        if not self._line_start:
            self._write(b"\n")  # the status starts its own line on a shared terminal
        self._note(end_line(record))

    def _write(self, data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        self._line_start = data.endswith(b"\n")

    def _note(self, line: str) -> None:
        print(printable(line), file=sys.stderr, flush=True)


class TerminalSink(PlainSink):
    """The same on a terminal: text decoded and made safe to show, the
    marker, highlights and status styled."""

    def __init__(self) -> None:
        super().__init__()
        self._out = Console(highlight=False, soft_wrap=True)
        self._err = Console(highlight=False, soft_wrap=True, stderr=True)
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def data(self, position: int, skipped: int, data: bytes) -> None:
        if skipped:
            self._decoder.reset()  # a character cut by the gap is part of it
        self._print(self._decoder.decode(data), "")

    def highlights(self, skipped: int, lines: list[Highlight]) -> None:
        lead = "" if self._line_start else "\n"
        if not lines:
            self._print(f"{lead}[... {skipped:,} bytes not kept ...]\n", MARKER)
            return
        self._print(f"{lead}[... {skipped:,} bytes not kept; {_matches(lines)} highlighted lines "
                    "follow ...]\n", MARKER)
        for line in lines:
            self._print(_label(line), LINE_NUMBER)
            self._print(line.text.decode("utf-8", "replace") + "\n",
                        "" if is_context(line) else HIGHLIGHT)
        self._print("[... end of highlights ...]\n", MARKER)

    def end(self, record: TaskRecord) -> None:
        if not self._line_start:
            self._print("\n", "")
        self._err.print(terminal_safe(end_line(record)), style=status_style(record.status.value) or None,
                        markup=False)

    def _print(self, text: str, style: str) -> None:
        if not text:
            return
        self._out.print(Text(terminal_safe(text), style=style), end="")
        self._line_start = text.endswith("\n")

    def _note(self, line: str) -> None:
        self._err.print(terminal_safe(f"taskjournal: {line}"), style="yellow", markup=False)


class JsonSink:
    """One JSON object per event on stdout, each with an ``event`` key."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def data(self, position: int, skipped: int, data: bytes) -> None:
        if skipped:
            self._decoder.reset()
        self._emit(event="data", offset=position, skipped=skipped,
                   text=self._decoder.decode(data))

    def highlights(self, skipped: int, lines: list[Highlight]) -> None:
        for line in lines:
            self._emit(event="highlight", line=line.line, offset=line.offset,
                       text=line.text.decode("utf-8", "replace"), context=is_context(line))

    def stalled(self, record: TaskRecord, seconds: float) -> None:
        self._emit(event="stalled", seconds=round(seconds, 3), status=record.status.value)

    def resumed(self, seconds: float) -> None:
        self._emit(event="resumed", seconds=round(seconds, 3))

    def unreachable(self, error: str) -> None:
        self._emit(event="unreachable", error=error)

    def end(self, record: TaskRecord) -> None:
        self._emit(event="end", status=record.status.value, exit_code=exit_code_of(record),
                   error=record.error)

    def _emit(self, **fields: Any) -> None:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()
