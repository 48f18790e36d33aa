"""The ``taskjournal`` commands (click), over JournalInspector and the simulation."""

from __future__ import annotations

import functools
import json
import os
import re
import secrets
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn, Optional, ParamSpec, TypeVar

import click

from journal import __version__
from journal._heap import NO_THREAD_CACHES, limit_arenas, thread_caches_off
from journal.buffer import IMPLEMENTATION
from journal.cli.errors import (
    CommandError,
    Text,
    UsageProblem,
    check_task_id,
    non_negative_int,
    one_line,
    seconds_option,
)
from journal.cli.follow import Follower, JsonSink, PlainSink, TerminalSink, exit_status
from journal.cli.output import Column, Moment, Output, printable, size, when
from journal.cli.output import status as status_cell
from journal.cli.simulate import DEFAULT_BUDGET, Settings, Simulation
from journal.cli.tables import Kind
from journal.config import MAX_SECONDS, JournalConfig
from journal.errors import JournalError
from journal.inspect import JournalInspector
from journal.records import TaskRecord
from journal.validation import check_limit

DEFAULT_STORE = "sqlite:///journal.db"
_P = ParamSpec("_P")
_R = TypeVar("_R")
#: The longest pause between two polls of ``tail -f``.
MAX_INTERVAL = 3600.0
#: How long ``tail -f`` watches a running task change nothing before it says so.
STALL_AFTER = 10.0
#: Rows ``ls`` counts past its --limit to say how many more there are.
COUNT_MORE = 10_000

store_option = click.option(
    "--store", "store_url", type=Text("--store"), default=DEFAULT_STORE, show_default=True,
    envvar="JOURNAL_STORE_URL", help="The journal's store URL (or JOURNAL_STORE_URL).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
task_id_argument = click.argument("task_id", type=Text("TASK_ID"), callback=check_task_id)
pager_option = click.option("--no-pager", is_flag=True,
                            help="Print straight to the terminal (no pager is used in a pipe).")
TASK = Column("task", Kind.ID)
NODE = Column("node", Kind.ID)


def _one_line_errors(command: Callable[_P, _R]) -> Callable[_P, _R]:
    """Any error ends the command with one line on stderr and exit status 1,
    never a traceback: a journal error or an OS error (a permission, a
    missing file) says what was wrong; anything else is a bug, said so.
    ``TASKJOURNAL_TRACEBACK=1`` shows the traceback of the latter."""

    @functools.wraps(command)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return command(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except JournalError as exc:
            _fail(str(exc))
        except BrokenPipeError:
            # The reader went away (`taskjournal ls | head`): nothing to say.
            _silence_stdout()
            sys.exit(1)
        except OSError as exc:
            _fail(_os_error(exc))
        except KeyboardInterrupt:
            click.echo("taskjournal: interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - the promise is: never a traceback
            if os.environ.get("TASKJOURNAL_TRACEBACK"):
                raise
            _fail(f"unexpected {type(exc).__name__}: {exc} - this is a bug in taskjournal, "
                  "please report it (TASKJOURNAL_TRACEBACK=1 shows where)")

    return run


def _fail(message: str) -> NoReturn:
    click.echo(f"taskjournal: {one_line(message)}", err=True)
    sys.exit(1)


def _os_error(exc: OSError) -> str:
    what = exc.strerror or str(exc) or type(exc).__name__
    where = f" {exc.filename!r}" if exc.filename else ""
    return f"cannot use{where}: {what}; check that the path exists and that you may read it"


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _memory_budget(text: Optional[str]) -> Optional[int]:
    """--memory-budget: bytes, 'none' for no bound, or unset for the default."""
    if text is None:
        return DEFAULT_BUDGET
    if text.strip().lower() == "none":
        return None
    try:
        return int(text.strip().replace("_", ""))
    except ValueError:
        raise UsageProblem(
            f"--memory-budget must be a number of bytes or 'none', got {text!r}"
        ) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="taskjournal",
                      message=f"%(prog)s %(version)s (buffer: {IMPLEMENTATION})")
def cli() -> None:
    """Look into a task journal, or watch one carry a simulated mesh."""


@cli.command()
@click.option("--nodes", default=100, show_default=True, help="Simulated nodes.")
@click.option("--tasks", default=1000, show_default=True, help="Tasks to run.")
@click.option("--store", "store_url", type=Text("--store"), default=DEFAULT_STORE,
              show_default=True, envvar="JOURNAL_STORE_URL",
              help="Where the journal is kept (or JOURNAL_STORE_URL).")
@click.option("--restart-at", type=click.FloatRange(0, 100, min_open=True, max_open=True),
              default=None, metavar="PERCENT",
              help="Crash and reopen the hub's journal when this share of tasks has finished.")
@click.option("--silent", default=0, show_default=True,
              help="Nodes told to go quiet in their last task (those tasks must end LOST).")
@click.option("--rate", default=0.0, show_default=True, metavar="KB/S",
              help="Output rate of each node; 0 streams as fast as the journal takes it.")
@click.option("--lease", "lease_timeout", type=float, default=None, metavar="SECONDS",
              help="Lease of a node that stops streaming (default: one that fits the mesh, "
                   "10 s and 20 ms per node past 500).")
@click.option("--memory-budget", default=None, metavar="BYTES",
              help="The journal's memory_budget, or 'none' for no bound "
                   "(default: the journal's own, 256 MiB).")
@click.option("--seed", default=1, show_default=True, help="Seed of the workload.")
@json_option
@_one_line_errors
def simulate(nodes: int, tasks: int, store_url: str, restart_at: Optional[float], silent: int,
             rate: float, lease_timeout: Optional[float], memory_budget: Optional[str],
             seed: int, as_json: bool) -> None:
    """Run a simulated mesh of nodes streaming build and test output through
    the journal, then report what it cost and that nothing was lost."""
    out = Output(as_json)
    settings = Settings(nodes=nodes, tasks=tasks, store_url=store_url, restart_at=restart_at,
                        silent=silent, rate_kbps=rate, seed=seed, lease_timeout=lease_timeout,
                        memory_budget=_memory_budget(memory_budget), run_id=f"sim-{secrets.token_hex(3)}")
    try:
        settings.check()
    except ValueError as exc:
        raise UsageProblem(str(exc)) from None
    # A node is a thread: as a hub of thousands of threads should, cap the
    # malloc arenas they would otherwise spread their free pages over (the
    # per-thread caches went off when the command started: journal.cli).
    capped = limit_arenas(2)
    with _Progress(out, tasks) as progress:
        summary = Simulation(settings, progress).run()
        # Every task has its final status now (the silent ones too): the bar says so.
        progress.finish(sum(summary["by_status"].values()))
    summary["malloc"] = {
        "arenas_capped": capped,
        "thread_caches_off": thread_caches_off(os.environ),
        # What an operator set instead, as glibc read it at start-up.
        "arena_max": os.environ.get("MALLOC_ARENA_MAX"),
        "tunables": os.environ.get("GLIBC_TUNABLES"),
    }
    if as_json:
        out.json(summary)
        return
    _print_summary(out, summary)
    if summary["lost"] != summary["lost_expected"] or summary["bytes_missing"]:
        sys.exit(1)


class _Progress:
    """A live bar on a terminal; a line per tenth of the tasks in a pipe."""

    def __init__(self, out: Output, total: int) -> None:
        self.out, self.total = out, total
        self._bar: Any = None
        self._last_tenth = -1
        self._last_note = ""

    def __enter__(self) -> _Progress:
        if self.out.terminal and not self.out.as_json:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("[bold]simulate"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.description}"),
                                 console=self.out.console, transient=False)
            self._bar.start()
            self._task = self._bar.add_task("", total=self.total)
        return self

    def __call__(self, done: int, total: int, note: str) -> None:
        self.update(done, total, note)

    def finish(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, description="")
        elif not self.out.as_json and done * 10 // max(self.total, 1) != self._last_tenth:
            # A run that ended between two looks (or before the first) still
            # says where it ended.
            self._last_tenth = done * 10 // max(self.total, 1)
            print(f"simulate: {done}/{self.total} tasks finished", flush=True)

    def update(self, done: int, total: int, note: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, description=note)
            return
        if self.out.as_json:
            return
        tenth = done * 10 // max(total, 1)
        # A new kind of note is printed at once; a note whose figures only
        # moved waits for the next tenth.
        kind = re.sub(r"[\d.]+", "#", note)
        fresh_note = note if kind != self._last_note else ""
        if tenth != self._last_tenth or fresh_note:
            self._last_tenth, self._last_note = tenth, kind
            print(f"simulate: {done}/{total} tasks finished" + (f"; {note}" if note else ""),
                  flush=True)

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def _malloc_setting(malloc: dict[str, Any]) -> str:
    said = []
    if malloc["arenas_capped"]:
        said.append("2 arenas")
    elif malloc["arena_max"]:
        said.append(f"MALLOC_ARENA_MAX={malloc['arena_max']}")
    if malloc["tunables"] and malloc["tunables"] != NO_THREAD_CACHES:
        said.append(f"GLIBC_TUNABLES={malloc['tunables']}")
    elif malloc["thread_caches_off"]:
        said.append("no per-thread caches")
    return ", ".join(said) or "the C library's defaults"


def _print_summary(out: Output, s: dict[str, Any]) -> None:
    statuses = [(status, count) for status, count in s["by_status"].items() if count]
    out.table("tasks by final status", ["status", "tasks"], statuses)
    rows: list[tuple[str, Any]] = [
        ("store", s["store"]),
        ("nodes / tasks", f"{s['nodes']} / {s['tasks']}"),
        ("appends", s["appends"]),
        ("appends/s", round(s["appends_per_second"])),
        ("MB/s", round(s["megabytes_per_second"], 1)),
        ("bytes written", size(s["bytes_written"])),
        ("bytes kept (head + tail)", size(s["bytes_kept"])),
        ("bytes dropped (middle)", size(s["bytes_dropped"])),
        ("bytes lost", s["bytes_missing"]),
        ("error lines shown", f"{s['error_lines_shown']} of {s['error_lines']}"),
        ("append p50 / p99", f"{s['append_p50_ns'] / 1000:.1f} / {s['append_p99_ns'] / 1000:.1f} µs"),
        ("peak RSS", size(s["peak_rss_bytes"])),
        ("malloc", _malloc_setting(s["malloc"])),
        ("lost tasks", f"{s['lost']} (silent nodes: {s['lost_expected']})"),
        ("tasks ended by the hub", s["ended_by_hub"]),
        ("lease", f"{s['lease_seconds']:g} s"),
        ("memory budget", "none" if s["memory_budget"] is None
         else f"{s['memory_budget'] / 2**20:g} MiB"),
        ("tasks/s", round(s["tasks_per_second"])),
        ("wall time", f"{s['seconds']:.1f} s"),
    ]
    if s["bytes_released"]:
        rows.insert(8, ("bytes released (memory://)", size(s["bytes_released"])))
        rows.insert(10, ("error lines released", s["error_lines_released"]))
    restart = s["restart"]
    if restart:
        rows += [
            ("hub restart", f"after {restart['at_finished']} tasks finished"),
            ("in flight at restart", restart["in_flight"]),
            ("re-attached", restart["reattached"]),
            ("reopen (recovery)", f"{restart['reopen_seconds'] * 1000:.0f} ms"),
            ("crash to last re-attach", f"{restart['recovered_seconds'] * 1000:.0f} ms"),
        ]
    out.table("simulation", ["measure", "value"], rows)


@cli.command("ls")
@store_option
@click.option("--status", type=Text("--status"), default=None, help="Only tasks in this status.")
@click.option("--node", "node_id", type=Text("--node"), default=None,
              help="Only tasks of this node.")
@click.option("--limit", default=50, show_default=True, callback=non_negative_int,
              help="At most this many, newest first.")
@json_option
@_one_line_errors
def list_tasks(store_url: str, status: Optional[str], node_id: Optional[str], limit: int,
               as_json: bool) -> None:
    """List tasks, newest first."""
    out = Output(as_json)
    most = check_limit(limit)
    with JournalInspector(store_url) as inspector:
        # One row past the limit tells whether there are more; only then are
        # they counted (up to COUNT_MORE past it, a bounded read).
        records = inspector.list_tasks(status=status, node_id=node_id,
                                       limit=None if most is None else most + 1)
        more = 0
        if most is not None and len(records) > most:
            more = len(inspector.list_tasks(status=status, node_id=node_id,
                                            limit=most + COUNT_MORE + 1)) - most
            records = records[:most]
    if as_json:
        out.json([_record_json(r) for r in records])
        return
    out.table(None, [TASK, NODE, "status", "created", "finished",
                     Column("result / error", Kind.TEXT)], [
        (r.task_id, r.node_id, status_cell(r.status.value), Moment(r.created_at),
         Moment(r.finished_at), _outcome(r)) for r in records])
    if more:
        counted = f"more than {COUNT_MORE:,}" if more > COUNT_MORE else f"{more:,}"
        out.note(f"{counted} more; use --limit to see them")


@cli.command()
@store_option
@task_id_argument
@json_option
@pager_option
@_one_line_errors
def show(store_url: str, task_id: str, as_json: bool, no_pager: bool) -> None:
    """A task: status, node, timings, result, and each stream rendered.

    On a terminal, long output goes through the pager ($TASKJOURNAL_PAGER,
    $PAGER or less)."""
    with JournalInspector(store_url) as inspector:
        record = inspector.get(task_id)
    with Output(as_json, pager=not no_pager) as out:
        if as_json:
            out.json(_record_json(record, streams=True))
            return
        out.table(f"task {record.task_id}", ["field", "value"], [
            ("status", status_cell(record.status.value)), ("node", record.node_id),
            ("created", when(record.created_at)), ("updated", when(record.updated_at)),
            ("finished", when(record.finished_at)), ("deadline", when(record.deadline)),
            ("result", _json_text(record.result)), ("error", record.error),
            ("meta", _json_text(record.meta)),
        ], wrap=True)
        for name, view in record.streams.items():
            out.heading(f"--- {name}: {view.total:,} bytes written, {view.dropped:,} dropped ---")
            out.stream(view)


@cli.command()
@store_option
@task_id_argument
@click.option("--stream", "name", type=Text("--stream"), default="stdout", show_default=True)
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the task ends.")
@click.option("--interval", default=0.5, show_default=True, metavar="SECONDS",
              callback=seconds_option(minimum=0.0, inclusive=False, maximum=MAX_INTERVAL),
              help="Seconds between polls with -f.")
@click.option("--stall-after", default=STALL_AFTER, show_default=True, metavar="SECONDS",
              callback=seconds_option(minimum=0.0, inclusive=False, maximum=MAX_SECONDS),
              help="With -f, say so when a running task has changed nothing for this long.")
@json_option
@pager_option
@_one_line_errors
def tail(store_url: str, task_id: str, name: str, follow: bool, interval: float,
         stall_after: float, as_json: bool, no_pager: bool) -> None:
    """Print a task's stream; with -f, follow a live task to its end.

    A live hub writes streams to its store at every checkpoint, so -f shows
    them checkpoint by checkpoint, with the highlighted lines of what it
    could not keep, and ends with the task's status (on stderr) and an exit
    status of 0 if it completed, else its exit code (or 1).  With --json:
    the stream as one object, or with -f one object per event (JSON lines:
    data, highlight, stalled, resumed, unreachable, end)."""
    with JournalInspector(store_url) as inspector:
        record = inspector.get(task_id)
        if follow:
            sink = JsonSink() if as_json else TerminalSink() if sys.stdout.isatty() else PlainSink()
            final = Follower(lambda: inspector.get(task_id), name, sink, interval,
                             stall_after).run(record)
            sys.exit(exit_status(final))
    view = record.streams.get(name)
    if view is None:
        names = ", ".join(repr(n) for n in record.streams) or "none yet"
        raise CommandError(f"task {task_id!r} has no stream {name!r} (it has: {names})")
    with Output(as_json, pager=not no_pager) as out:
        if as_json:
            out.json({"task_id": task_id, "stream": name, "total": view.total,
                      "dropped": view.dropped, "text": view.text()})
        else:
            out.stream(view)


@cli.command()
@store_option
@json_option
@_one_line_errors
def stats(store_url: str, as_json: bool) -> None:
    """Tasks by status, nodes, and the bytes the checkpointed streams hold."""
    out = Output(as_json)
    with JournalInspector(store_url) as inspector:
        figures = inspector.stats()
    if as_json:
        out.json(figures)
        return
    rows: list[tuple[str, Any]] = [(f"tasks {status}", count)
                                   for status, count in figures["by_status"].items()]
    rows += [("tasks", figures["tasks"]), ("nodes", figures["nodes"]),
             ("streams", figures["streams"]), ("bytes written", size(figures["bytes_written"])),
             ("bytes held", size(figures["bytes_held"])),
             ("bytes dropped", size(figures["bytes_dropped"]))]
    out.table(figures["store"], ["measure", "value"], rows)


@cli.command("in-flight")
@store_option
@json_option
@_one_line_errors
def in_flight(store_url: str, as_json: bool) -> None:
    """Tasks not yet finished, oldest first, with their nodes."""
    out = Output(as_json)
    with JournalInspector(store_url) as inspector:
        records = inspector.in_flight()
    if as_json:
        out.json([_record_json(r) for r in records])
        return
    out.table(None, [TASK, NODE, "status", "created", "bytes checkpointed"], [
        (r.task_id, r.node_id, status_cell(r.status.value), Moment(r.created_at),
         sum(view.total for view in r.streams.values())) for r in records])


@cli.command()
@store_option
@click.option("--result-ttl", default=JournalConfig().result_ttl, show_default=True,
              metavar="SECONDS", callback=seconds_option(minimum=0.0, maximum=MAX_SECONDS),
              help="Remove results finished longer ago than this.")
@json_option
@_one_line_errors
def gc(store_url: str, result_ttl: float, as_json: bool) -> None:
    """Remove expired results now (the hub does it on its own timer).

    Needs the store to itself: stop the hub first."""
    out = Output(as_json)
    with _writable(store_url) as inspector:
        done = inspector.gc(result_ttl)
    if as_json:
        out.json(done)
    else:
        out.text(f"removed {done['expired']} expired results, "
                 f"forgot {done['tombstones_forgotten']} old tombstones")


@cli.command()
@store_option
@click.option("--repair", is_flag=True, help="Fix what is safe to fix (needs the store to itself).")
@json_option
@_one_line_errors
def check(store_url: str, repair: bool, as_json: bool) -> None:
    """Check the store's integrity; exit 1 if a problem remains."""
    out = Output(as_json)
    repaired: list[str] = []
    with (_writable(store_url) if repair else JournalInspector(store_url)) as inspector:
        problems = inspector.check()
        if repair and problems:
            # What the repair changed: the problems it found that are gone after it.
            remaining = inspector.check(repair=True)
            repaired = [problem for problem in problems if problem not in remaining]
            problems = remaining
    if as_json:
        report: dict[str, Any] = {"ok": not problems, "problems": problems}
        if repair:
            report["repaired"] = repaired
        out.json(report)
    else:
        for problem in repaired:
            out.text(f"repaired: {printable(problem)}")
        for problem in problems:
            out.text(f"problem: {printable(problem)}")
        if not problems:
            out.text(f"ok: {store_url}")
    if problems:
        sys.exit(1)


def _writable(store_url: str) -> JournalInspector:
    """The store opened for writing, if it exists: a read-only open first
    refuses a missing file, so a mistyped path is an error, not a new empty
    journal created by a command meant to clean one up."""
    JournalInspector(store_url).close()
    return JournalInspector(store_url, writable=True)


def _outcome(record: TaskRecord) -> str:
    if record.error:
        return record.error
    return _json_text(record.result)


def _json_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bytes):
        return f"<{len(value):,} bytes>"
    return json.dumps(value)


def _record_json(record: TaskRecord, streams: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "task_id": record.task_id, "node_id": record.node_id, "status": record.status.value,
        "result": record.result, "error": record.error, "meta": record.meta,
        "created_at": record.created_at, "updated_at": record.updated_at,
        "finished_at": record.finished_at, "deadline": record.deadline,
    }
    if streams:
        data["streams"] = {
            name: {"total": view.total, "dropped": view.dropped,
                   "dropped_lines": view.dropped_lines, "text": view.text(),
                   "highlights": [h._asdict() for h in view.highlights]}
            for name, view in record.streams.items()
        }
    return data
