"""The taskjournal command under hostile input: every problem is one line on
stderr and exit status 1, never a traceback, and nothing is changed.

Everything runs the real command in a subprocess, as a user would, so that
argv bytes that are not UTF-8 reach Python the way they do from a shell.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

import pytest

from journal import JournalConfig, TaskJournal

NOT_UTF8 = b"task-\xff\xfe"


def run(*args, env=None, timeout=60, cwd=None) -> subprocess.CompletedProcess:
    """The command with ``args`` (str or bytes), its output as text."""
    argv = [os.fsencode(sys.executable), b"-m", b"journal",
            *(arg if isinstance(arg, bytes) else os.fsencode(arg) for arg in args)]
    environ = dict(os.environ, **(env or {}))
    environ.pop("JOURNAL_STORE_URL", None)
    if env and "JOURNAL_STORE_URL" in env:
        environ["JOURNAL_STORE_URL"] = env["JOURNAL_STORE_URL"]
    done = subprocess.run(argv, capture_output=True, timeout=timeout, env=environ, check=False,
                          cwd=cwd)
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode("utf-8", "replace"),
        done.stderr.decode("utf-8", "replace"))


def assert_one_line(done: subprocess.CompletedProcess, *fragments: str) -> str:
    __tracebackhide__ = True
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{done.stderr}"
    assert done.returncode == 1, f"exit {done.returncode}: {done.stderr}"
    line = lines[0]
    assert line.startswith("taskjournal: "), line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


@pytest.fixture(scope="module")
def journal_file(tmp_path_factory):
    """A small journal file: two finished tasks with streams, one running."""
    path = tmp_path_factory.mktemp("cli-errors") / "journal.db"
    with TaskJournal(config=JournalConfig(store_url=f"sqlite:///{path}", sweep_interval=0)) as j:
        for task_id in ("done-1", "done-2"):
            j.register(task_id, "node-1", meta={"cmd": "make"})
            j.stream(task_id).append(b"building\n" * 50)
            j.complete(task_id, {"exit": 0})
        j.register("live", "node-2")
        j.stream("live").append(b"still going\n")
        j.checkpoint()
    return path


@pytest.fixture
def copy_of(journal_file, tmp_path):
    """A fresh copy of the journal file, to damage."""
    def make(name="copy.db"):
        target = tmp_path / name
        target.write_bytes(journal_file.read_bytes())
        return target
    return make


# -- store URLs ----------------------------------------------------------------


@pytest.mark.parametrize(("url", "fragment"), [
    ("bogus", "a store URL looks like"),
    ("", "store URL"),
    ("ftp://host/x", "unsupported store URL"),
    ("memory://", "memory://"),
    ("memory://x", "memory://"),
    ("sqlite://", "names no file"),
])
def test_bad_store_urls(url, fragment):
    assert_one_line(run("ls", "--store", url), fragment)


@pytest.mark.parametrize("command", [
    ["ls"], ["show", "done-1"], ["tail", "done-1"], ["tail", "-f", "done-1"], ["stats"],
    ["in-flight"], ["check"], ["gc", "--result-ttl", "1e8"], ["check", "--repair"],
])
def test_every_command_takes_the_store_from_the_option_then_the_environment(copy_of, command,
                                                                           tmp_path):
    url = f"sqlite:///{copy_of()}"
    done = run(*command, env={"JOURNAL_STORE_URL": url})
    assert done.returncode == 0 and done.stdout, done.stderr
    # --store wins over the environment: a wrong variable is not even opened.
    assert run(*command, "--store", url, env={"JOURNAL_STORE_URL": "bogus"}).returncode == 0
    # Neither: the default, sqlite:///journal.db in the working directory.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line(run(*command, cwd=empty), "journal.db")
    assert not list(empty.iterdir()), "a read must not create the default file"


def test_a_directory_as_the_store(tmp_path):
    for command in (["ls"], ["stats"], ["gc"], ["check"], ["show", "x"]):
        assert_one_line(run(*command, "--store", f"sqlite:///{tmp_path}"))
    assert not list(tmp_path.iterdir()), "a refused store must leave nothing behind"


def test_a_missing_directory_and_file(tmp_path):
    assert_one_line(run("ls", "--store", f"sqlite:///{tmp_path}/no/such/dir/j.db"))
    assert_one_line(run("stats", "--store", f"sqlite:///{tmp_path}/missing.db"))
    assert_one_line(run("gc", "--store", f"sqlite:///{tmp_path}/missing.db"))
    assert not (tmp_path / "missing.db").exists()


@pytest.mark.parametrize("suffix", ["#frag", "?bogus=1", "?synchronous=sometimes"])
def test_urls_with_fragments_and_unknown_options(journal_file, suffix):
    assert_one_line(run("ls", "--store", f"sqlite:///{journal_file}{suffix}"))


def test_an_unreadable_store_file(copy_of):
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    path = copy_of()
    path.chmod(0)
    try:
        assert_one_line(run("ls", "--store", f"sqlite:///{path}"))
    finally:
        path.chmod(0o600)


def test_a_store_url_from_the_environment_that_is_not_utf8(tmp_path):
    done = run("ls", env={"JOURNAL_STORE_URL": "sqlite:///" + os.fsdecode(
        os.fsencode(str(tmp_path)) + b"/\xff.db")})
    assert_one_line(done, "UTF-8")


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:1/0?bogus_option=1",
    "redis://127.0.0.1:1/0?timeout=inf",
    "redis://127.0.0.1:1/0?timeout=0.2",
])
def test_redis_urls_that_cannot_work(url):
    assert_one_line(run("ls", "--store", url, timeout=60))


# -- argv that is not UTF-8 ------------------------------------------------------------


@pytest.mark.parametrize("command", [
    ["show", NOT_UTF8], ["tail", NOT_UTF8], ["tail", "done-1", "--stream", NOT_UTF8],
    ["ls", "--node", NOT_UTF8], ["ls", "--status", NOT_UTF8],
    ["ls", "--store", b"sqlite:///" + NOT_UTF8 + b".db"],
])
def test_arguments_that_are_not_utf8(journal_file, command):
    args = list(command)
    if "--store" not in args:
        args += ["--store", f"sqlite:///{journal_file}"]
    assert_one_line(run(*args), "UTF-8")


@pytest.mark.parametrize("task_id", ["a\x01b", "x" * 300, "\x7f"])
def test_task_ids_the_journal_would_never_hold(journal_file, task_id):
    assert_one_line(run("show", task_id, "--store", f"sqlite:///{journal_file}"), "task id")


# -- numeric options ---------------------------------------------------------------------


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "-inf", "1e400"])
def test_tail_follow_interval_must_be_seconds(journal_file, value):
    done = run("tail", "-f", "live", "--interval", value, "--store", f"sqlite:///{journal_file}",
               timeout=20)
    assert_one_line(done, "--interval must be seconds > 0")


@pytest.mark.parametrize("value", ["-1", "-0.5", "nan", "inf", "1e400"])
def test_gc_result_ttl_must_be_seconds_and_changes_nothing(copy_of, value):
    path = copy_of()
    done = run("gc", "--result-ttl", value, "--store", f"sqlite:///{path}")
    assert_one_line(done, "--result-ttl must be")
    listed = run("ls", "--store", f"sqlite:///{path}", "--json")
    assert listed.returncode == 0 and listed.stdout.count('"task_id"') == 3


@pytest.mark.parametrize("value", ["-1", "-100"])
def test_ls_limit_must_not_be_negative(journal_file, value):
    assert_one_line(run("ls", "--limit", value, "--store", f"sqlite:///{journal_file}"),
                    "--limit must be")


def test_a_huge_limit_means_no_limit(journal_file):
    done = run("ls", "--limit", str(10**30), "--json", "--store", f"sqlite:///{journal_file}")
    assert done.returncode == 0 and done.stdout.count('"task_id"') == 3, done.stderr


@pytest.mark.parametrize("args", [
    ["--rate", "nan"], ["--rate", "inf"], ["--lease", "nan"], ["--lease", "-1"],
    ["--lease", "inf"], ["--lease", "0"],
])
def test_simulate_refuses_numbers_it_cannot_run_with(tmp_path, args):
    done = run("simulate", "--nodes", "1", "--tasks", "1", *args,
               "--store", f"sqlite:///{tmp_path / 'j.db'}", timeout=30)
    assert "Traceback" not in done.stderr and done.returncode in (1, 2)
    assert args[0] in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr


def test_status_filter_names_the_valid_ones(journal_file):
    assert_one_line(run("ls", "--status", "bogus", "--store", f"sqlite:///{journal_file}"),
                    "unknown status 'bogus'", "running")


# -- hostile database content -------------------------------------------------------------


def _commands(task_id="done-1"):
    return [["ls"], ["ls", "--status", "completed"], ["stats"], ["in-flight"],
            ["show", task_id], ["tail", task_id], ["show", "live"], ["check"]]


def _assert_clean(done):
    """One line and exit 1, or success; never a traceback.  ``check``
    exits 1 with its problems on stdout and nothing on stderr."""
    __tracebackhide__ = True
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert "this is a bug in taskjournal" not in done.stderr, done.stderr
    if done.returncode != 0:
        assert done.returncode == 1, done.stderr
        checked = b"check" in done.args and not done.stderr and done.stdout.startswith("problem:")
        assert checked or len(done.stderr.splitlines()) == 1, done.stderr


def _sql(path, *statements):
    conn = sqlite3.connect(path)
    try:
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


@pytest.mark.parametrize("damage", [
    "UPDATE tasks SET status = 'bogus' WHERE task_id = 'done-1'",
    "UPDATE tasks SET meta_json = '{not json' WHERE task_id = 'done-1'",
    "UPDATE tasks SET meta_json = x'ff00fe' WHERE task_id = 'done-1'",
    "UPDATE tasks SET result = '[[[[[[[[' WHERE task_id = 'done-1'",
    "UPDATE tasks SET created_at = 'yesterday' WHERE task_id = 'done-1'",
    "UPDATE tasks SET created_at = 1e308, finished_at = 1e308 WHERE task_id = 'done-1'",
    "UPDATE tasks SET finished_at = NULL WHERE task_id = 'done-1'",
    "UPDATE tasks SET node_id = '' WHERE task_id = 'done-1'",
    "UPDATE tasks SET task_id = x'ff' WHERE task_id = 'done-1'",
    "UPDATE streams SET snapshot = x'00' WHERE task_id = 'done-1'",
    "UPDATE streams SET snapshot = 'text, not bytes' WHERE task_id = 'done-1'",
    "UPDATE streams SET snapshot = zeroblob(0) WHERE task_id = 'done-1'",
    "UPDATE streams SET snapshot = substr(snapshot, 1, 20) WHERE task_id = 'live'",
    "INSERT INTO streams (task_id, name, snapshot) VALUES ('done-1', x'ff', x'00')",
])
def test_hostile_rows_are_one_line_or_skipped(copy_of, damage):
    path = copy_of()
    try:
        _sql(path, damage)
    except sqlite3.Error as exc:
        pytest.skip(f"the schema refuses this damage: {exc}")
    url = f"sqlite:///{path}"
    for command in _commands():
        _assert_clean(run(*command, "--store", url))
    _assert_clean(run("check", "--repair", "--store", url))
    _assert_clean(run("gc", "--result-ttl", "0", "--store", url))


@pytest.mark.parametrize("where", [0, 100, 1000, 2000, 4096, -4096, -100, -1])
def test_byte_flips_anywhere_in_the_file(copy_of, where):
    path = copy_of()
    data = bytearray(path.read_bytes())
    index = where % len(data)
    for offset in range(index, min(index + 16, len(data))):
        data[offset] ^= 0xA5
    path.write_bytes(bytes(data))
    url = f"sqlite:///{path}"
    for command in _commands():
        _assert_clean(run(*command, "--store", url))


def test_a_truncated_file_and_a_foreign_one(copy_of, tmp_path):
    path = copy_of()
    path.write_bytes(path.read_bytes()[:1500])
    foreign = tmp_path / "foreign.db"
    _sql(foreign, "CREATE TABLE tasks (x)", "INSERT INTO tasks VALUES (1)")
    for target in (path, foreign):
        for command in _commands():
            _assert_clean(run(*command, "--store", f"sqlite:///{target}"))


# -- the one-line rule holds for what the library raises ------------------------------------


def test_an_unknown_task_and_an_expired_one(copy_of):
    path = copy_of()
    url = f"sqlite:///{path}"
    assert_one_line(run("show", "nope", "--store", url), "no task 'nope'")
    time.sleep(0.05)
    gone = run("gc", "--result-ttl", "0.01", "--store", url)
    assert gone.returncode == 0, gone.stderr
    assert_one_line(run("show", "done-1", "--store", url), "expired")
    assert_one_line(run("tail", "done-1", "--store", url), "expired")


def test_tail_of_a_stream_the_task_does_not_have(journal_file):
    assert_one_line(run("tail", "done-1", "--stream", "nosuch", "--store",
                        f"sqlite:///{journal_file}"), "no stream 'nosuch'")
