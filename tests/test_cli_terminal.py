"""What an operator sees on a terminal: the command run on a real
pseudo-terminal (tests/terminal.py), its screen read back, escapes and all;
and that a pipe gets none of it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX pseudo-terminals")

from terminal import Screen, run_on_terminal  # noqa: E402
from test_cli import run  # noqa: E402

from journal import JournalConfig, TaskJournal  # noqa: E402

#: Task ids as long as the simulation's, and one longer.
IDS = ["sim-afb3f1-t00922", "sim-afb3f1-t00999", "build-linux-x86_64-r2"]
#: Longer than half the screen.
LONG_ID = "build-2026-11-29-linux-x86_64-release-with-debug-info"
ERROR = "src/core/parse_753.c:456:7: error: 'token_753' undeclared"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A journal with a long failed build (its error in the dropped middle),
    a completed task, and a lost one with a long error."""
    url = f"sqlite:///{tmp_path_factory.mktemp('terminal') / 'j.db'}"
    config = JournalConfig(store_url=url, sweep_interval=0, head_bytes=2000, tail_bytes=2000)
    with TaskJournal(config=config) as journal:
        journal.register(IDS[0], "node-022", meta={"kind": "build"})
        out = journal.stream(IDS[0])
        for n in range(600):
            out.append(b"cc -O2 -Wall -c src/file_%03d.c -o build/file_%03d.o\n" % (n, n))
            if n == 300:
                out.append(ERROR.encode() + b"\n")
        journal.fail(IDS[0], "exit status 1", {"exit_code": 1})
        journal.register(IDS[1], "node-099")
        journal.stream(IDS[1]).append(b"all good\n")
        journal.complete(IDS[1], {"exit_code": 0})
        journal.register(IDS[2], "node-1")
        journal.fail(IDS[2], "node 'node-1' sent nothing for 60 s and its lease ran out, "
                             "so the task was declared lost by the sweep")
    return url


@pytest.fixture(scope="module")
def long_ids(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('terminal') / 'long.db'}"
    with TaskJournal(config=JournalConfig(store_url=url, sweep_interval=0)) as journal:
        journal.register(LONG_ID, "node-with-a-long-name-7")
        journal.fail(LONG_ID, "exit status 2: " + "the compiler said a great deal " * 5)
    return url


def _lines(screen: Screen) -> list[str]:
    return [line.rstrip("\r") for line in screen.plain.split("\n")]


def test_ls_fits_80_columns_and_keeps_every_id_whole(store):
    code, screen = run_on_terminal("ls", "--store", store, columns=80)
    assert code == 0, screen.plain
    lines = _lines(screen)
    assert all(len(line) <= 80 for line in lines), "\n".join(lines)
    for task_id in IDS:
        assert any(task_id in line for line in lines), (task_id, lines)
    # The long error was cut, with an ellipsis, to make room.
    assert any(line.rstrip().endswith("…") and "node 'node-1' s" in line for line in lines)
    # The times, shortened for the screen, are not cut.
    assert not any("…" in line.split()[3] for line in lines[1:] if line.strip())
    # Statuses in colour: red for the failed ones, green for the completed one.
    assert b"\x1b[1;31mfailed" in screen.output and b"\x1b[32mcompleted" in screen.output


def test_ids_longer_than_the_screen_allows_stay_whole(long_ids):
    code, screen = run_on_terminal("ls", "--store", long_ids, columns=80)
    assert code == 0, screen.plain
    # The terminal wraps the line (it is longer than the screen), yet the ids
    # are whole in it and the other columns gave up their room.
    text = screen.plain.replace("\n", "")
    assert LONG_ID in text and "node-with-a-long-name-7" in text
    assert "exit status 2: the compiler said a great deal" not in text and "…" in text


def test_ls_in_a_pipe_is_plain_tab_separated_text(store):
    done = run("ls", "--store", store)
    assert "\x1b" not in done.stdout and done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[0] == "task\tnode\tstatus\tcreated\tfinished\tresult / error"
    assert {line.split("\t")[0] for line in lines[1:]} == set(IDS)
    assert lines[1].count("\t") == 5 and "…" not in done.stdout


def test_no_color_turns_the_colours_off_on_a_terminal(store):
    code, screen = run_on_terminal("ls", "--store", store, env={"NO_COLOR": "1"})
    assert code == 0 and b"\x1b[1;31m" not in screen.output and "failed" in screen.plain


def test_show_pages_long_output_with_the_error_styled(store, tmp_path):
    seen = tmp_path / "paged"
    pager = f"{sys.executable} -c \"import sys; open({str(seen)!r}, 'wb').write(sys.stdin.buffer.read())\""
    code, screen = run_on_terminal("show", IDS[0], "--store", store,
                                   env={"TASKJOURNAL_PAGER": pager})
    assert code == 0, screen.plain
    paged = seen.read_bytes()
    # The whole task went to the pager, escapes included; the screen had none of it.
    assert b"cc -O2" not in screen.output and paged.count(b"\n") > 24
    assert b"\x1b[1;31mfailed" in paged
    # The error of the dropped middle, in bold red, after its line number.
    assert b"\x1b[1;31m" + ERROR.encode() in paged
    assert b"\x1b[1;33m[... " in paged  # the marker


def test_no_pager_and_short_output_go_straight_to_the_screen(store, tmp_path):
    seen = tmp_path / "paged"
    pager = f"{sys.executable} -c \"open({str(seen)!r}, 'w')\""
    code, screen = run_on_terminal("show", IDS[0], "--no-pager", "--store", store,
                                   env={"TASKJOURNAL_PAGER": pager})
    assert code == 0 and not seen.exists() and ERROR in screen.plain
    code, screen = run_on_terminal("show", IDS[1], "--store", store,
                                   env={"TASKJOURNAL_PAGER": pager})
    assert code == 0 and not seen.exists() and "all good" in screen.plain


def test_in_a_pipe_there_is_no_pager_and_no_escape(store, tmp_path):
    seen = tmp_path / "paged"
    pager = f"{sys.executable} -c \"open({str(seen)!r}, 'w')\""
    done = subprocess.run([sys.executable, "-m", "journal", "show", IDS[0], "--store", store],
                          capture_output=True, env={**_env(), "TASKJOURNAL_PAGER": pager},
                          check=True)
    assert not seen.exists() and b"\x1b" not in done.stdout
    text = done.stdout.decode()
    assert "status\tfailed" in text and f"[line 302] {ERROR}\n" in text
    # --json is the same JSON on a terminal as in a pipe.
    code, screen = run_on_terminal("show", IDS[0], "--json", "--store", store)
    piped = run("show", IDS[0], "--json", "--store", store).stdout
    assert code == 0 and json.loads(screen.plain) == json.loads(piped)
    assert b"\x1b[" not in screen.output


def test_the_real_less_pages_and_quits_on_q(store):
    screen = Screen(["show", IDS[0], "--store", store], columns=80, rows=24,
                    env={"PAGER": "less"})
    screen.expect(rb"cc -O2")
    screen.send(b"G")  # to the end, past the error
    screen.expect(rb"file_599")
    screen.send(b"q")
    assert screen.wait(30) == 0


def test_tail_f_on_a_terminal_ends_with_the_status_and_exit_code(tmp_path):
    url = f"sqlite:///{tmp_path / 'live.db'}"
    hub = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from journal import JournalConfig, TaskJournal
        config = JournalConfig(store_url={url!r}, checkpoint_interval=0.05, head_bytes=200,
                               tail_bytes=200, sweep_interval=0)
        journal = TaskJournal(config=config)
        journal.register("live", "node-1")
        out = journal.stream("live")
        out.append(b"starting\\n")
        journal.checkpoint()
        print("ready", flush=True)
        time.sleep(0.5)
        # Far more than one poll keeps: the error must still reach the follower.
        out.append(b"".join(b"step %05d\\n" % n for n in range(2000)))
        out.append(b"error: the linker gave up\\n")
        out.append(b"".join(b"step %05d\\n" % n for n in range(2000, 4000)))
        journal.fail("live", "exit status 3", {{"exit_code": 3}})
        journal.close()
    """)], stdout=subprocess.PIPE, text=True)
    assert hub.stdout.readline() == "ready\n"
    code, screen = run_on_terminal("tail", "-f", "live", "--interval", "0.2", "--store", url)
    assert hub.wait(timeout=30) == 0
    assert code == 3, screen.plain
    text = screen.plain
    assert "starting" in text and "step 03999" in text
    assert "error: the linker gave up" in text and "bytes not kept; 1 highlighted lines" in text
    assert text.rstrip().endswith("--- task live failed, exit code 3: exit status 3")
    assert b"\x1b[1;31merror: the linker gave up" in screen.output


def _env() -> dict[str, str]:
    import os

    return {key: value for key, value in os.environ.items()
            if key not in ("TASKJOURNAL_PAGER", "PAGER")}


def test_ls_says_how_many_more_the_limit_hid(store):
    done = run("ls", "--limit", "1", "--store", store)
    assert len(done.stdout.splitlines()) == 2  # the header and one row, as before
    assert done.stderr == "taskjournal: 2 more; use --limit to see them\n"
    assert run("ls", "--limit", "3", "--store", store).stderr == ""
    listed = run("ls", "--limit", "1", "--json", "--store", store)
    assert len(json.loads(listed.stdout)) == 1 and listed.stderr == ""
    code, screen = run_on_terminal("ls", "--limit", "2", "--store", store)
    assert code == 0 and "1 more; use --limit to see them" in screen.plain


def test_the_progress_bar_ends_at_the_total_after_a_silent_run():
    code, screen = run_on_terminal("simulate", "--nodes", "2", "--tasks", "6", "--silent", "1",
                                   "--lease", "0.5", "--store", "memory://", timeout=120)
    assert code == 0, screen.plain
    # The bar's last frame, before the tables: every task counted, the lost one too.
    frames = screen.plain.split("tasks by final status")[0]
    assert "6/6" in frames.splitlines()[-2] or "6/6" in frames.rsplit("\r", 1)[-1], frames[-500:]


def test_a_pager_that_is_not_there_does_not_lose_the_output(store):
    code, screen = run_on_terminal("show", IDS[0], "--store", store,
                                   env={"TASKJOURNAL_PAGER": "no-such-pager-here -x"})
    assert code == 0 and ERROR in screen.plain and "file_599" in screen.plain


def test_tail_pages_like_show(store, tmp_path):
    seen = tmp_path / "paged"
    pager = f"{sys.executable} -c \"import sys; open({str(seen)!r}, 'wb').write(sys.stdin.buffer.read())\""
    code, screen = run_on_terminal("tail", IDS[0], "--store", store,
                                   env={"TASKJOURNAL_PAGER": pager})
    assert code == 0 and b"\x1b[1;31m" + ERROR.encode() in seen.read_bytes()
    assert b"file_599" not in screen.output
