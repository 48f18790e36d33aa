"""The taskjournal command, driven as a user drives it: in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

TASKS = 60


def run(*args: str, check: bool = True, timeout: float = 120,
        env: dict[str, str] | None = None, command: list[str] | None = None,
        ) -> subprocess.CompletedProcess:
    done = subprocess.run([*(command or [sys.executable, "-m", "journal"]), *args],
                          capture_output=True, text=True, timeout=timeout, check=False, env=env)
    if check and done.returncode != 0:
        raise AssertionError(f"exit {done.returncode}: {done.stderr}{done.stdout}")
    return done


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """A journal file left by a simulation with a hub restart and a silent node."""
    path = tmp_path_factory.mktemp("sim") / "journal.db"
    url = f"sqlite:///{path}"
    # Paced, so the restart falls while tasks stream and their last second
    # of output is in no checkpoint: the nodes must send it again.
    done = run("simulate", "--nodes", "10", "--tasks", str(TASKS), "--silent", "1",
               "--lease", "1", "--restart-at", "50", "--rate", "2000", "--store", url, "--json")
    return url, path, json.loads(done.stdout)


def test_simulate_with_a_restart_loses_nothing(simulated):
    _, _, summary = simulated
    assert sum(summary["by_status"].values()) == TASKS
    assert summary["lost"] == summary["lost_expected"] == 1
    assert summary["bytes_missing"] == 0
    assert summary["error_lines_shown"] == summary["error_lines"] > 0
    restart = summary["restart"]
    assert TASKS * 0.5 <= restart["at_finished"] < TASKS * 0.8
    # A silent node's task may be in flight at the restart: it never re-attaches.
    assert restart["in_flight"] >= 5
    assert restart["in_flight"] - summary["lost_expected"] <= restart["reattached"] <= restart["in_flight"]
    assert summary["bytes_dropped"] > 0 and summary["append_p99_ns"] >= summary["append_p50_ns"] > 0


def test_simulate_prints_a_summary_table_in_a_pipe(tmp_path):
    done = run("simulate", "--nodes", "4", "--tasks", "12", "--restart-at", "50",
               "--store", f"sqlite:///{tmp_path / 'j.db'}")
    assert "simulate: 12/12 tasks finished" in done.stdout
    assert "\nbytes lost\t0\n" in done.stdout
    assert "\nlost tasks\t0 (silent nodes: 0)\n" in done.stdout  # by default none
    assert "\nhub restart\tafter " in done.stdout


def test_ls_filters_and_prints_plain_text(simulated):
    url, _, _ = simulated
    lines = run("ls", "--store", url, "--limit", "1000").stdout.splitlines()
    assert lines[0].split("\t") == ["task", "node", "status", "created", "finished", "result / error"]
    assert len(lines) == 1 + TASKS
    lost = json.loads(run("ls", "--store", url, "--status", "lost", "--json").stdout)
    # Found by the lease sweep, or, if it was in flight at the restart, by the
    # re-attach grace running out.
    assert len(lost) == 1
    assert "sent nothing" in lost[0]["error"] or "did not re-attach" in lost[0]["error"]
    mine = json.loads(run("ls", "--store", url, "--node", "node-003", "--json").stdout)
    assert mine and {task["node_id"] for task in mine} == {"node-003"}
    created = [task["created_at"] for task in mine]
    assert created == sorted(created, reverse=True)


def test_show_and_tail_render_head_highlights_and_tail(simulated):
    url, _, _ = simulated
    failed = json.loads(run("ls", "--store", url, "--status", "failed", "--json").stdout)
    assert failed
    task = json.loads(run("show", failed[0]["task_id"], "--store", url, "--json").stdout)
    assert task["result"]["exit_code"] != 0 and task["error"].startswith("exit status")
    stdout = task["streams"]["stdout"]
    assert "error: 'token_" in stdout["text"]
    text = run("show", failed[0]["task_id"], "--store", url).stdout
    assert "status\tfailed" in text and "--- stdout:" in text
    tail = run("tail", failed[0]["task_id"], "--store", url).stdout
    assert tail.strip() == stdout["text"].strip()
    tail_json = json.loads(run("tail", failed[0]["task_id"], "--store", url, "--json").stdout)
    assert tail_json["text"] == stdout["text"] and tail_json["total"] == stdout["total"]


def test_stats_in_flight_gc_and_check(simulated, tmp_path):
    url, path, _ = simulated
    stats = json.loads(run("stats", "--store", url, "--json").stdout)
    assert stats["tasks"] == TASKS and stats["by_status"]["lost"] == 1
    assert stats["nodes"] == 10 and stats["bytes_written"] > stats["bytes_held"] > 0
    assert json.loads(run("in-flight", "--store", url, "--json").stdout) == []
    assert json.loads(run("check", "--store", url, "--json").stdout) == {"ok": True, "problems": []}
    copy = tmp_path / "copy.db"
    shutil.copy(path, copy)
    time.sleep(0.05)
    gone = json.loads(run("gc", "--store", f"sqlite:///{copy}", "--result-ttl", "0.01",
                          "--json").stdout)
    assert gone["expired"] == TASKS
    done = run("show", "--store", f"sqlite:///{copy}", "sim-x", check=False)
    assert done.returncode == 1
    task_id = json.loads(run("ls", "--store", url, "--limit", "1", "--json").stdout)[0]["task_id"]
    expired = run("show", task_id, "--store", f"sqlite:///{copy}", check=False)
    assert expired.returncode == 1 and "expired" in expired.stderr


def test_check_repairs_what_is_safe(simulated, tmp_path):
    _, path, _ = simulated
    copy = tmp_path / "copy.db"
    shutil.copy(path, copy)
    with sqlite3.connect(copy) as conn:
        conn.execute("INSERT INTO streams (task_id, name, snapshot) VALUES ('no-such-task', 'stdout', x'00')")
    url = f"sqlite:///{copy}"
    found = run("check", "--store", url, check=False)
    assert found.returncode == 1 and "has no task row" in found.stdout
    # It says what it changed, then that the store is fine now.
    lines = run("check", "--repair", "--store", url).stdout.splitlines()
    assert lines[-1] == f"ok: {url}"
    assert lines[:-1] and all(line.startswith("repaired: ") for line in lines[:-1])
    assert any("'no-such-task' has no task row" in line for line in lines[:-1])
    assert run("check", "--store", url).returncode == 0
    assert json.loads(run("check", "--repair", "--json", "--store", url).stdout) == {
        "ok": True, "problems": [], "repaired": []}


def test_tail_follows_a_live_task_to_its_end(tmp_path):
    url = f"sqlite:///{tmp_path / 'live.db'}"
    hub = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from journal import JournalConfig, TaskJournal
        journal = TaskJournal(config=JournalConfig(store_url={url!r}, checkpoint_interval=0.05))
        journal.register("live", "node-1")
        print("ready", flush=True)
        out = journal.stream("live")
        for n in range(30):
            out.append(b"line %d\\n" % n)
            time.sleep(0.05)
        journal.complete("live", 0)
        journal.close()
    """)], stdout=subprocess.PIPE, text=True)
    assert hub.stdout.readline() == "ready\n"
    follower = run("tail", "live", "-f", "--interval", "0.05", "--store", url)
    assert hub.wait(timeout=30) == 0
    assert follower.stdout == "".join(f"line {n}\n" for n in range(30))
    assert follower.stderr == "--- task live completed\n"
    events = [json.loads(line) for line in
              run("tail", "live", "-f", "--json", "--store", url).stdout.splitlines()]
    assert "".join(e["text"] for e in events if e["event"] == "data") == follower.stdout
    assert events[-1] == {"event": "end", "status": "completed", "exit_code": None, "error": None}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "nope"], "no task 'nope'"),
        (["ls", "--store", "bogus"], "a store URL looks like"),
        (["ls", "--store", "memory://"], "memory:// keeps nothing"),
        (["ls", "--store", "sqlite:///does/not/exist.db"], "no such journal file"),
        (["ls", "--status", "weird"], "unknown status 'weird'"),
    ],
)
def test_errors_are_one_line_and_a_nonzero_exit(simulated, args, message):
    url, _, _ = simulated
    if "--store" not in args:
        args = [*args, "--store", url]
    done = run(*args, check=False)
    assert done.returncode == 1
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_a_corrupt_file_is_one_line_too(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a journal" * 100)
    done = run("stats", "--store", f"sqlite:///{bad}", check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert bad.read_bytes() == b"this is not a journal" * 100


def test_bad_simulate_options_are_usage_errors(tmp_path):
    done = run("simulate", "--silent", "5", "--nodes", "2", "--store",
               f"sqlite:///{tmp_path / 'j.db'}", check=False)
    assert done.returncode == 2 and "--silent" in done.stderr
    done = run("simulate", "--restart-at", "50", "--store", "memory://", check=False)
    assert done.returncode == 2 and "needs a durable --store" in done.stderr


def test_simulate_runs_on_memory_without_a_restart():
    summary = json.loads(run("simulate", "--nodes", "3", "--tasks", "9", "--store", "memory://",
                             "--json").stdout)
    assert summary["by_status"]["completed"] + summary["by_status"]["failed"] == 9
    assert summary["bytes_missing"] == 0


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (AttributeError, ValueError, OSError):
        return False


def _without_malloc_settings() -> dict[str, str]:
    return {key: value for key, value in os.environ.items()
            if key not in ("GLIBC_TUNABLES", "MALLOC_ARENA_MAX")}


def _console_script() -> list[str]:
    return [str(Path(sys.executable).parent / ("taskjournal.exe" if os.name == "nt" else "taskjournal"))]


@pytest.mark.skipif(not _glibc(), reason="glibc's malloc settings")
@pytest.mark.parametrize("command", [None, _console_script()], ids=["python -m journal", "taskjournal"])
def test_simulate_restarts_itself_without_glibcs_per_thread_caches(tmp_path, command):
    # Thousands of node threads: the command turns glibc's per-thread caches
    # off by starting itself again, whichever way it was started.
    done = run("simulate", "--nodes", "3", "--tasks", "6", "--store", f"sqlite:///{tmp_path / 'j.db'}",
               "--json", env=_without_malloc_settings(), command=command)
    summary = json.loads(done.stdout)
    assert summary["malloc"] == {"arenas_capped": True, "thread_caches_off": True,
                                 "arena_max": None, "tunables": "glibc.malloc.tcache_count=0"}
    assert sum(summary["by_status"].values()) == 6 and summary["bytes_missing"] == 0
    table = run("simulate", "--nodes", "3", "--tasks", "6", "--store", "memory://",
                env=_without_malloc_settings(), command=command).stdout
    assert table.count("simulate: 6/6 tasks finished") == 1  # nothing said twice
    assert "\nmalloc\t2 arenas, no per-thread caches\n" in table


@pytest.mark.skipif(not _glibc(), reason="glibc's malloc settings")
def test_simulate_leaves_the_operators_malloc_settings_alone(tmp_path):
    env = {**_without_malloc_settings(), "GLIBC_TUNABLES": "glibc.malloc.tcache_count=3",
           "MALLOC_ARENA_MAX": "4"}
    done = run("simulate", "--nodes", "3", "--tasks", "6", "--store", "memory://", env=env)
    assert ("\nmalloc\tMALLOC_ARENA_MAX=4, GLIBC_TUNABLES=glibc.malloc.tcache_count=3\n"
            in done.stdout)
    # Another tunable of the operator's is kept beside the one simulate adds.
    env = {**_without_malloc_settings(), "GLIBC_TUNABLES": "glibc.malloc.arena_max=3"}
    done = run("simulate", "--nodes", "3", "--tasks", "6", "--store", "memory://", "--json", env=env)
    assert json.loads(done.stdout)["malloc"] == {
        "arenas_capped": False, "thread_caches_off": True, "arena_max": None,
        "tunables": "glibc.malloc.arena_max=3:glibc.malloc.tcache_count=0"}


def test_without_the_cli_extra_the_command_names_it():
    code = ("import sys; sys.modules['click'] = None\n"
            "from journal.cli import main\nmain(['ls'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 2
    assert "pip install 'taskjournal[cli]'" in done.stderr and "Traceback" not in done.stderr


def test_the_console_script_is_installed():
    script = Path(sys.executable).parent / ("taskjournal.exe" if os.name == "nt" else "taskjournal")
    assert script.exists(), "pip install '.[cli]' should install the taskjournal command"
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("taskjournal ")


@pytest.mark.redis
def test_simulate_and_read_commands_on_redis(redis_url):
    """The same job and the same read commands on a shared Redis store."""
    done = run("simulate", "--nodes", "5", "--tasks", "20", "--restart-at", "50", "--lease", "1",
               "--rate", "2000", "--store", redis_url, "--json")
    summary = json.loads(done.stdout)
    assert summary["bytes_missing"] == 0 and summary["lost"] == summary["lost_expected"] == 0
    assert summary["restart"]["reattached"] == summary["restart"]["in_flight"] > 0
    stats = json.loads(run("stats", "--store", redis_url, "--json").stdout)
    assert stats["tasks"] == 20 and stats["by_status"]["lost"] == 0
    rows = json.loads(run("ls", "--store", redis_url, "--json").stdout)
    assert len(rows) == 20 and {row["status"] for row in rows} <= {"completed", "failed"}
    assert json.loads(run("in-flight", "--store", redis_url, "--json").stdout) == []
    assert json.loads(run("check", "--store", redis_url, "--json").stdout) == {"ok": True, "problems": []}
    time.sleep(0.05)
    gone = json.loads(run("gc", "--store", redis_url, "--result-ttl", "0.01", "--json").stdout)
    assert gone["expired"] == 20
    expired = run("show", rows[0]["task_id"], "--store", redis_url, check=False)
    assert expired.returncode == 1 and "expired" in expired.stderr



def test_a_run_that_ends_between_two_looks_still_says_where_it_ended(capsys):
    # The nodes all end between two looks at them: the last look saw 5 of 6,
    # and nothing looks again. The last line comes from finish(), once.
    from journal.cli.commands import _Progress
    from journal.cli.output import Output

    with _Progress(Output(False), 6) as progress:
        progress(5, 6, "")
        progress.finish(6)
    with _Progress(Output(False), 6) as progress:
        progress(6, 6, "")
        progress.finish(6)
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["simulate: 5/6 tasks finished", "simulate: 6/6 tasks finished",
                     "simulate: 6/6 tasks finished"]


def test_only_the_command_itself_restarts(tmp_path):
    from journal.cli import _started_as_the_command

    script = _console_script()[0]
    assert _started_as_the_command(["python", "-m", "journal", "simulate"])
    assert _started_as_the_command(["python", "-X", "dev", "-I", "-m", "journal", "simulate"])
    assert _started_as_the_command(["python", script, "simulate"])
    assert not _started_as_the_command(["python", "-m", "pdb", "-m", "journal", "simulate"])
    assert not _started_as_the_command(["python", "-c", "main()", "simulate"])
    assert not _started_as_the_command(["python", "-", "simulate"])
    assert not _started_as_the_command(["python", str(tmp_path / "wrap.py"), "simulate"])


@pytest.mark.skipif(not _glibc(), reason="glibc's malloc settings")
def test_a_wrapper_runs_once_and_a_restarted_command_never_restarts_again():
    # What ran before main() is not run twice: no restart from -c.
    code = "print('before main'); from journal.cli import main; main()"
    done = run("simulate", "--nodes", "3", "--tasks", "6", "--store", "memory://",
               env=_without_malloc_settings(), command=[sys.executable, "-c", code])
    assert done.stdout.count("before main") == 1
    assert "\nmalloc\t2 arenas\n" in done.stdout
    # The marker of a restart: whatever glibc did with the tunable, no second one.
    done = run("simulate", "--nodes", "3", "--tasks", "6", "--store", "memory://",
               env={**_without_malloc_settings(), "TASKJOURNAL_RESTARTED": "1"})
    assert "\nmalloc\t2 arenas\n" in done.stdout
