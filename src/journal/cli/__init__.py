"""The ``taskjournal`` command.

Its libraries (click, rich) come with the ``cli`` extra, so the embedded
core keeps no runtime dependency; without them the command says which
extra to install rather than failing on an import.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

__all__ = ["main"]

EXTRA_HINT = (
    "taskjournal: the command needs the 'cli' extra: python -m pip install 'taskjournal[cli]'"
)


def main(argv: Optional[list[str]] = None) -> None:
    try:
        import click  # noqa: F401
        import rich  # noqa: F401
    except ImportError as exc:
        print(f"{EXTRA_HINT} ({exc.name} is missing)", file=sys.stderr)
        raise SystemExit(2) from None
    if argv is None:
        _restart_without_thread_caches(sys.argv[1:])
    from journal.cli.commands import cli

    cli.main(args=argv, prog_name="taskjournal")


#: Set in the environment of the restarted command: it never restarts twice,
#: whatever the C library made of the tunable (a secure start drops it).
RESTARTED = "TASKJOURNAL_RESTARTED"


def _restart_without_thread_caches(args: list[str]) -> None:
    """``taskjournal simulate`` runs a thread per node: with glibc, it starts
    itself again, once, with the per-thread malloc caches off (they hold a
    third of a 2,000-node run's memory; see ``journal._heap``).  Only when
    this process is the command itself (the console script or ``python -m
    journal``), so that running its command line again repeats nothing else:
    not from ``-c``, a script on stdin, pdb or a wrapper of one's own."""
    orig_argv = getattr(sys, "orig_argv", None)
    if (args[:1] != ["simulate"] or not sys.executable or not orig_argv
            or os.environ.get(RESTARTED) or not _started_as_the_command(orig_argv)):
        return
    from journal._heap import environ_without_thread_caches

    environ = environ_without_thread_caches(os.environ)
    if environ is None:
        return
    environ[RESTARTED] = "1"
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:  # None: that descriptor was closed at start
            stream.flush()
    try:
        os.execve(sys.executable, orig_argv, environ)
    except OSError:
        return  # it runs with the caches, as it would without glibc


#: Interpreter options that take the next argument as their value.
_OPTIONS_WITH_VALUE = {"-X", "-W", "--check-hash-based-pycs"}


def _started_as_the_command(orig_argv: list[str]) -> bool:
    """Whether the interpreter ran ``-m journal`` or the ``taskjournal``
    script, behind nothing but its own options."""
    rest = iter(orig_argv[1:])
    for arg in rest:
        if arg == "-m":
            return next(rest, None) == "journal"
        if arg in ("-c", "-"):
            return False  # code of the caller's own, run before main()
        if arg in _OPTIONS_WITH_VALUE:
            next(rest, None)
        elif not arg.startswith("-"):
            name = os.path.basename(arg)
            return name in ("taskjournal", "taskjournal.exe") and os.path.isfile(arg)
    return False
