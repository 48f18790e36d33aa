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


def _restart_without_thread_caches(args: list[str]) -> None:
    """``taskjournal simulate`` runs a thread per node: with glibc, it starts
    itself again, once, with the per-thread malloc caches off (they hold a
    third of a 2,000-node run's memory; see ``journal._heap``).  Only from the
    command line, where this process is the command's own, and only where
    the interpreter's own command line can be run again."""
    if args[:1] != ["simulate"] or not sys.executable or not getattr(sys, "orig_argv", None):
        return
    from journal._heap import environ_without_thread_caches

    environ = environ_without_thread_caches(os.environ)
    if environ is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, sys.orig_argv, environ)
    except OSError:
        return  # it runs with the caches, as it would without glibc
