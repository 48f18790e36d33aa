"""``tail -f`` off the happy path: a stream that outruns the polls (its
highlighted lines must still reach the follower), a hub that goes quiet
(the follower must say so, not poll in silence), and the end of the task
(its status and exit code, on stderr and in the exit status).

The hub is a real process writing a real SQLite journal; the follower is
the real command.  The hub waits for a file the test creates before each
step, so the follower's polls cannot miss a phase by luck of timing.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from test_cli import run

from journal import JournalConfig, TaskJournal

ERRORS = [b"error: undefined reference to 'main'", b"FAILED tests/test_io.py::test_read"]


def _hub(tmp_path, script: str) -> tuple[str, subprocess.Popen]:
    """A hub process running ``script`` (``journal``, ``out`` and ``step(n)``
    are defined) once it has started task ``live`` (100+100 byte buffers)
    and checkpointed its first line."""
    url = f"sqlite:///{tmp_path / 'live.db'}"
    code = textwrap.dedent(f"""
        import os, time
        from journal import JournalConfig, TaskJournal
        config = JournalConfig(store_url={url!r}, checkpoint_interval=0.05, head_bytes=100,
                               tail_bytes=100, sweep_interval=0)
        journal = TaskJournal(config=config)
        journal.register("live", "node-1")
        journal.start("live")
        out = journal.stream("live")
        out.append(b"starting\\n")
        journal.checkpoint()

        def step(n):
            print("step", n, flush=True)
            while not os.path.exists({str(tmp_path)!r} + "/go-%d" % n):
                time.sleep(0.01)
    """) + textwrap.dedent(script)
    hub = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    return url, hub


def _follow(url: str, *args: str) -> subprocess.Popen:
    # SIGINT as a terminal sends it: a suite run in the background of a
    # non-interactive shell (as CI's second core runs it) inherits SIGINT
    # ignored, and Python then leaves it ignored.
    return subprocess.Popen([sys.executable, "-m", "journal", "tail", "-f", "live", "--store",
                             url, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_default_sigint)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _go(tmp_path, hub, n: int) -> None:
    """Let the hub take step ``n`` once it waits for it."""
    assert hub.stdout.readline() == f"step {n}\n"
    (tmp_path / f"go-{n}").touch()


def _started(tmp_path, script: str, *args: str) -> tuple[subprocess.Popen, subprocess.Popen]:
    """The hub, waiting at step 1 (its task registered), and a follower."""
    url, hub = _hub(tmp_path, script)
    assert hub.stdout.readline() == "step 1\n"
    return hub, _follow(url, *args)


FLOOD = """
step(1)
# Between two polls, far more than the 100-byte tail keeps, errors in it.
noise = b"".join(b"compiling unit %04d\\n" % n for n in range(500))
out.append(noise + b"error: undefined reference to 'main'\\n" + noise)
out.append(b"FAILED tests/test_io.py::test_read\\n" + noise)
journal.checkpoint()
step(2)
journal.fail("live", "exit status 2", {"exit_code": 2})
journal.close()
"""


def test_the_highlights_of_what_outran_the_polls_are_shown(tmp_path):
    hub, follower = _started(tmp_path, FLOOD, "--interval", "0.05")
    time.sleep(0.5)  # the follower has read "starting"
    (tmp_path / "go-1").touch()
    time.sleep(0.5)  # ...and the flood
    _go(tmp_path, hub, 2)
    stdout, stderr = follower.communicate(timeout=30)
    assert hub.wait(timeout=30) == 0
    assert follower.returncode == 2, stderr  # the task's own exit code
    assert stdout.startswith(b"starting\n")
    for error in ERRORS:
        assert b"] " + error + b"\n" in stdout, stdout[:2000]
    assert b"bytes not kept; 2 highlighted lines follow ...]\n" in stdout, stdout[:2000]
    assert stdout.endswith(b"compiling unit 0499\n")  # the tail, whole
    assert stderr == b"--- task live failed, exit code 2: exit status 2\n"


def test_json_lines_carry_the_highlights_and_the_end(tmp_path):
    hub, follower = _started(tmp_path, FLOOD, "--interval", "0.05", "--json")
    time.sleep(0.5)
    (tmp_path / "go-1").touch()
    time.sleep(0.5)
    _go(tmp_path, hub, 2)
    stdout, stderr = follower.communicate(timeout=30)
    assert hub.wait(timeout=30) == 0 and follower.returncode == 2 and stderr == b""
    events = [json.loads(line) for line in stdout.splitlines()]
    highlights = [e for e in events if e["event"] == "highlight"]
    assert [h["text"].encode() for h in highlights if not h["context"]] == ERRORS
    assert all(h["line"] > 1 and h["offset"] > 0 for h in highlights)
    assert any(e["event"] == "data" and e["skipped"] > 0 for e in events)
    assert events[-1] == {"event": "end", "status": "failed", "exit_code": 2,
                          "error": "exit status 2"}


QUIET = """
step(1)
# Quiet for a while (a hub that stopped checkpointing looks the same),
# then more output, then the end.
out.append(b"back\\n")
journal.checkpoint()
step(2)
journal.complete("live", {"exit_code": 0})
journal.close()
"""


@pytest.mark.parametrize("as_json", [False, True])
def test_a_quiet_task_is_reported_and_its_return_too(tmp_path, as_json):
    hub, follower = _started(tmp_path, QUIET, "--interval", "0.05", "--stall-after", "0.5",
                             *(["--json"] if as_json else []))
    time.sleep(1.5)  # three times --stall-after: one notice, not three
    (tmp_path / "go-1").touch()
    time.sleep(0.2)  # less than --stall-after: no second notice
    _go(tmp_path, hub, 2)
    stdout, stderr = follower.communicate(timeout=30)
    assert hub.wait(timeout=30) == 0 and follower.returncode == 0, stderr
    if as_json:
        kinds = [json.loads(line)["event"] for line in stdout.splitlines()]
        assert kinds == ["data", "stalled", "resumed", "data", "end"]
        return
    assert stdout == b"starting\nback\n"
    lines = stderr.decode().splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("no new checkpoint of task live (running) for ")
    assert "its hub may have stopped checkpointing" in lines[0]
    assert lines[1].startswith("checkpoints again after ")
    assert lines[2] == "--- task live completed, exit code 0"


def test_a_dead_hub_is_said_and_ctrl_c_ends_the_follow(tmp_path):
    url, hub = _hub(tmp_path, "step(1)\n")
    assert hub.stdout.readline() == "step 1\n"
    hub.kill()  # SIGKILL: the task stays RUNNING in the store forever
    hub.wait(timeout=10)
    follower = _follow(url, "--interval", "0.05", "--stall-after", "0.3")
    line = follower.stderr.readline()
    assert line.startswith(b"no new checkpoint of task live (running) for "), line
    follower.send_signal(2)  # SIGINT, as Ctrl-C
    stdout, stderr = follower.communicate(timeout=30)
    assert follower.returncode == 130 and stdout == b"starting\n"
    assert stderr == b"taskjournal: interrupted\n"


@pytest.mark.parametrize(("end", "code"), [
    ("complete('t', {'exit_code': 0})", 0),
    ("fail('t', 'exit status 7', {'exit_code': 7})", 7),
    ("fail('t', 'killed', {'exit_code': 137})", 1),  # a signal's code: not passed on
    ("fail('t', 'no code')", 1),
    ("cancel('t', 'by the operator')", 1),
])
def test_the_exit_status_follows_the_task(tmp_path, end, code):
    url = f"sqlite:///{tmp_path / 'j.db'}"
    with TaskJournal(config=JournalConfig(store_url=url, sweep_interval=0)) as journal:
        journal.register("t", "n")
        journal.stream("t").append(b"output\n")
        eval(f"journal.{end}")  # noqa: S307 - the parameters above
        status = journal.get("t").status.value
    done = run("tail", "-f", "t", "--store", url, check=False)
    assert done.returncode == code and done.stdout == "output\n"
    assert done.stderr.startswith(f"--- task t {status}")
    # Without -f, tail prints the stream and succeeds, as it always did.
    assert run("tail", "t", "--store", url).returncode == 0


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_stall_after_must_be_seconds(tmp_path, value):
    done = run("tail", "-f", "x", "--stall-after", value, "--store",
               f"sqlite:///{tmp_path / 'none.db'}", check=False)
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1
    assert "--stall-after must be seconds > 0" in done.stderr


@pytest.mark.redis
def test_a_store_outage_is_said_and_the_follow_goes_on(tmp_path):
    """Redis restarted under a follower: it says the store is unreachable
    (once), and carries on to the task's end when the store is back."""
    from redis_server import RedisServer

    server = RedisServer(tmp_path, persistent=True)
    server.start()
    url = f"{server.url}?prefix=follow&replica=hub-1"
    journal = TaskJournal(url, config=JournalConfig(sweep_interval=0, lease_timeout=600))
    try:
        journal.register("live", "node-1")
        journal.start("live")
        journal.stream("live").append(b"before\n")
        journal.checkpoint()
        # A short store timeout: the follower's reads give up on the dead server.
        follower = _follow(url + "&timeout=0.2", "--interval", "0.05")
        assert follower.stdout.readline() == b"before\n"  # it follows: now the outage
        server.stop()
        time.sleep(2)  # polls meet no server for far longer than the timeout
        server.start()  # the same port and data
        journal.stream("live").append(b"after\n")
        journal.complete("live", {"exit_code": 0})
        stdout, stderr = follower.communicate(timeout=60)
    finally:
        journal.close()
        server.stop()
    lines = stderr.decode().splitlines()
    assert follower.returncode == 0, stderr
    assert stdout == b"after\n"
    assert len([line for line in lines if line.startswith("store unreachable, retrying: ")]) == 1
    assert lines[-1] == "--- task live completed, exit code 0"
