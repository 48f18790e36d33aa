"""The ``taskjournal`` command.

Its libraries (click, rich) come with the ``cli`` extra, so the embedded
core keeps no runtime dependency; without them the command says which
extra to install rather than failing on an import.
"""

from __future__ import annotations

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
    from journal.cli.commands import cli

    cli.main(args=argv, prog_name="taskjournal")
