"""What the command prints of text a node or a damaged row supplied."""

from __future__ import annotations

import json

from test_cli import run

from journal import JournalConfig, TaskJournal


def test_control_characters_in_stored_text_reach_no_terminal_raw(tmp_path, buffer_cls):
    url = f"sqlite:///{tmp_path / 'j.db'}"
    hostile = "\x1b[2J\x1b]0;owned\x07boom"
    with TaskJournal(url, config=JournalConfig(sweep_interval=0), buffer_class=buffer_cls) as journal:
        journal.register("t", "node")
        journal.fail("t", hostile)
    for args in (["show", "t"], ["ls"]):
        shown = run(*args, "--store", url).stdout
        assert "\x1b" not in shown and "\x07" not in shown
        assert "\\x1b[2J\\x1b]0;owned\\x07boom" in shown
    # --json keeps the text exact: JSON escapes it itself.
    assert json.loads(run("show", "t", "--json", "--store", url).stdout)["error"] == hostile
