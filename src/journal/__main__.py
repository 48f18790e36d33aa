"""``python -m journal``: the same as the ``taskjournal`` command."""

from journal.cli import main

main()
