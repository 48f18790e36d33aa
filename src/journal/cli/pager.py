"""Paging long output on a terminal, the way git does.

The pager is ``$TASKJOURNAL_PAGER``, else ``$PAGER``, else ``less``; empty or
``cat`` means none.  ``LESS`` defaults to ``FRX`` as under git: ``R`` lets
the colours through, ``F`` quits at once on output that fits one screen and
``X`` leaves the screen as it was.  Output shorter than the terminal skips
the pager altogether, and a pager that cannot be found is skipped too: the
text is printed as it would have been, never lost.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
from typing import Optional

__all__ = ["pager_command", "page"]

DEFAULT = "less"


def pager_command() -> Optional[list[str]]:
    """The pager's argv, or None when paging is off or impossible."""
    value = os.environ.get("TASKJOURNAL_PAGER")
    if value is None:
        value = os.environ.get("PAGER", DEFAULT)
    try:
        argv = shlex.split(value)
    except ValueError:
        return None  # an unbalanced quote: no pager rather than an error
    if not argv or argv[0] == "cat":
        return None
    found = shutil.which(argv[0])
    return None if found is None else [found, *argv[1:]]


def page(text: str, height: int) -> None:
    """Show ``text`` (terminal escapes included) through the pager when it
    is longer than ``height`` lines, else print it."""
    argv = pager_command() if text.count("\n") >= height else None
    if argv is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    env = dict(os.environ)
    env.setdefault("LESS", "FRX")
    env.setdefault("LV", "-c")
    # Ctrl-C belongs to the pager (less uses it to stop a search); this
    # process waits for it to end instead of dying under it and leaving the
    # terminal to a half-closed pager.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        try:
            process = subprocess.Popen(argv, stdin=subprocess.PIPE, env=env)
        except OSError:
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        assert process.stdin is not None
        try:
            process.stdin.write(text.encode("utf-8", "replace"))
            process.stdin.close()
        except BrokenPipeError:
            pass  # the reader quit before the end: what they wanted
        process.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
