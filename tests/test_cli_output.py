"""What the command prints of text a node or a damaged row supplied."""

from __future__ import annotations

import json

import pytest

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


@pytest.mark.parametrize("case", ["none", "one", "many", "context", "no-rules", "no-drop"])
def test_the_styled_stream_is_the_rendered_stream(buffer_cls, case):
    """On a terminal the stream is drawn from view.text() with styles laid
    over it: the characters must be exactly the rendered text (control
    characters escaped), whatever the middle holds, and only real
    highlights are red."""
    from journal.cli.styles import HIGHLIGHT, MARKER, stream_text, terminal_safe

    settings = {"head_bytes": 300, "tail_bytes": 300, "sweep_interval": 0}
    if case == "no-rules":
        settings["highlight_budget"] = 0
    if case == "many":
        settings.update(highlight_budget=128, highlight_line_limit=32)  # some are not kept
    with TaskJournal(buffer_class=buffer_cls, config=JournalConfig(**settings)) as journal:
        journal.register("t", "n")
        out = journal.stream("t")
        noise = b"".join(b"compiling unit %04d\n" % n for n in range(100))
        out.append(noise)
        if case in ("one", "no-rules", "context"):
            out.append(b"src/a.c:1:2: error: \x1b[31mboom\x1b[0m\n[line 9] looks like a marker\n")
        if case == "context":
            # A Rust panic's message is on the next line: kept as context.
            out.append(b"thread 'main' panicked at src/main.rs:2:5:\nindex out of bounds\n"
                       b"note: run with RUST_BACKTRACE=1\n")
        if case == "many":
            out.append(b"".join(b"error: number %d\n" % n for n in range(40)))
        if case != "no-drop":
            out.append(noise)
        view = journal.get("t").streams["stdout"]
    styled = stream_text(view)
    assert styled.plain == terminal_safe(view.text())
    assert "\x1b" not in styled.plain
    red = [styled.plain[span.start:span.end] for span in styled.spans if span.style == HIGHLIGHT]
    marked = [styled.plain[span.start:span.end] for span in styled.spans if span.style == MARKER]
    if case in ("none", "no-drop", "no-rules"):
        assert red == []
    if case == "context":
        context = [h for h in view.highlights if h.context]
        assert context, view.highlights  # the rules keep context: it is drawn, not red
        assert not any(h.text.decode() in red for h in context)
        assert "thread 'main' panicked at src/main.rs:2:5:" in red
    if case == "one":
        assert red == ["src/a.c:1:2: error: \\x1b[31mboom\\x1b[0m"]
    if case == "many":
        assert len(red) == len(view.highlights) > 0 and all("error: number" in r for r in red)
        assert any("not kept" in line for line in marked)
    if case != "no-drop":
        assert marked and marked[0].startswith("[... ")
