"""End to end: the example gRPC hub, three node processes, real commands,
and a SIGKILL of the hub while they stream.

Every task must end with its command's exit code, and each stream's head and
tail must be exactly what the command printed: nothing lost across the
restart, nothing doubled by the resend.
"""

from __future__ import annotations

import os
import pathlib
import shlex
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the commands are POSIX shell")

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "grpc_hub"
sys.path.insert(0, str(EXAMPLE))

from redis_server import free_port  # noqa: E402

HELD_KINDS = 2  # of the six kinds below, how many wait half way for the gate


def _commands(gate):
    """Thirty commands, (shell command, exit code): five of each of six kinds.

    The first two kinds print half their output, then wait until `gate`
    exists before the rest: the test kills the hub while they wait, so the
    kill falls while ten tasks stream however slow the machine is. (Timed by
    a poll alone, the kill once fell after every task had ended, on a loaded
    CI run under CPython 3.14.)"""
    held = f"while [ ! -e {shlex.quote(str(gate))} ]; do sleep 0.05; done"
    slow_seq = (
        "for i in $(seq 1 20); do seq $((i*1000)) $((i*1000+999)); sleep 0.05; done; "
        f"{held}; "
        "for i in $(seq 21 40); do seq $((i*1000)) $((i*1000+999)); sleep 0.05; done"
    )
    error_in_the_middle = (
        "for i in $(seq 1 20); do seq 1 2000; sleep 0.05; done; "
        "echo 'error: undefined reference to main'; "
        f"{held}; "
        "for i in $(seq 1 20); do seq 1 2000; sleep 0.05; done; exit 2"
    )
    return [
        (slow_seq, 0),
        (error_in_the_middle, 2),
        ("yes | head -c 5000000", 0),
        ("seq 1 1000000", 0),
        ("seq 1 100000 >&2; echo 'fatal: out of disk' >&2; exit 1", 1),
        ("for i in $(seq 1 30); do head -c 200000 /dev/zero | tr '\\0' a; echo; sleep 0.05; done", 0),
    ] * 5


@pytest.fixture(scope="module")
def gate(tmp_path_factory):
    """The file whose creation lets the held commands finish."""
    return tmp_path_factory.mktemp("gate") / "open"


@pytest.fixture(scope="module")
def commands(gate):
    return _commands(gate)


def _spawn(script, *args):
    return subprocess.Popen([sys.executable, str(EXAMPLE / script), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def expected(gate, commands):
    """What each command prints, run here (with the gate open) before this
    process has a gRPC channel: gRPC's fork handlers can write into a forked
    child's stderr."""
    outputs = {}
    gate.touch()
    try:
        for command, _ in commands:
            if command not in outputs:
                done = subprocess.run(["sh", "-c", command], capture_output=True, timeout=60)
                outputs[command] = {"stdout": done.stdout, "stderr": done.stderr}
    finally:
        gate.unlink()
    return outputs


@pytest.fixture
def cluster(tmp_path):
    """Start the hub and three nodes; stop whatever is left at the end."""
    port = free_port()
    store = f"sqlite:///{tmp_path / 'hub.db'}"
    processes = []

    def start_hub():
        hub = _spawn("hub.py", "--port", str(port), "--store", store, "--grace", "60", "--lease", "60")
        assert "listening" in hub.stdout.readline()
        processes.append(hub)
        return hub

    hub = start_hub()
    for n in range(3):
        processes.append(_spawn("node.py", "--hub", f"127.0.0.1:{port}", "--node-id", f"node-{n}"))
    yield port, store, hub, start_hub
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def test_thirty_commands_survive_a_hub_killed_while_they_stream(expected, cluster, gate, commands):
    from client import HubClient

    from journal import JournalInspector, TaskStatus

    port, store, hub, start_hub = cluster
    client = HubClient(f"127.0.0.1:{port}", patience=60)
    deadline = time.monotonic() + 60
    while client.stats().nodes < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    submitted = [client.submit(["sh", "-c", command]).task_id for command, _ in commands]
    assert len({client.submit(["sh", "-c", commands[0][0]], task_id=submitted[0]).task_id}) == 1
    held = [task_id for n, task_id in enumerate(submitted) if n % 6 < HELD_KINDS]

    # Kill the hub once every command has started and each held one has a
    # checkpoint of its first half in the store: they cannot end before the
    # gate opens, so the kill falls while they stream.
    def ready(records):
        return (all(record.status is not TaskStatus.PENDING for record in records.values())
                and all(records[task_id].status is TaskStatus.RUNNING
                        and "stdout" in records[task_id].streams
                        and records[task_id].streams["stdout"].total > 0 for task_id in held))

    deadline = time.monotonic() + 120
    with JournalInspector(store) as inspector:
        while not ready(records := {task_id: inspector.get(task_id) for task_id in submitted}):
            if time.monotonic() > deadline:
                pytest.fail(f"the held tasks never all streamed: {records}")
            time.sleep(0.02)
    try:
        os.kill(hub.pid, signal.SIGKILL)
        hub.wait(timeout=10)
    finally:
        gate.touch()  # the nodes finish their commands while the hub is down
    time.sleep(0.5)
    start_hub()

    results = [client.wait(task_id, timeout=120) for task_id in submitted]
    stats = client.stats()
    assert stats.recovered >= len(held), "the kill did not fall while the held tasks streamed"
    assert stats.reattached == stats.recovered and stats.detached == 0

    for (command, code), result in zip(commands, results):
        assert (result.status, result.exit_code) == ("completed" if code == 0 else "failed", code), command
        streams = {stream.name: stream for stream in result.streams}
        for name, data in expected[command].items():
            if not data:
                assert name not in streams or streams[name].total == 0
                continue
            view = streams[name]
            assert view.total == len(data), (command, name)
            assert len(view.head) == min(len(data), 20_000)
            assert view.head == data[: len(view.head)], (command, name)
            assert view.dropped == view.total - len(view.head) - len(view.tail)
            if view.tail:
                assert view.tail == data[-len(view.tail):], (command, name)
        if "undefined reference" in command:
            # The error printed in the dropped middle is shown anyway.
            assert b"error: undefined reference to main" in streams["stdout"].text
    client.close()



def test_the_hub_keeps_resent_output_once_and_asks_again_after_a_gap():
    """What the hub does with Output offsets, without the network."""
    import asyncio

    from hub import Hub, NodeLink
    from protocol import pb

    from journal import TaskJournal

    journal = TaskJournal()
    journal.register("t", "n")
    hub, handles = Hub(journal, time.monotonic()), {}

    async def scenario():
        link = NodeLink("n")  # its queue belongs to this loop (Python 3.9)

        async def feed(offset, data):
            output = pb.Output(task_id="t", stream="stdout", offset=offset, data=data)
            await hub._ingest(link, output, handles)

        await feed(0, b"0123456789")
        await feed(5, b"56789abcde")  # half of it was sent before: kept once
        await feed(30, b"too far")  # a gap: nothing kept, the node is asked again
        return link.outbox.get_nowait()

    asked = asyncio.run(scenario())
    assert journal.get("t").streams["stdout"].render() == b"0123456789abcde"
    assert asked.resume.task_id == "t" and dict(asked.resume.offsets) == {"stdout": 15}
    journal.close()


# -- the operator's view: no hub, no node, Ctrl-C and SIGTERM -------------------


def _client(*args, timeout=60):
    return subprocess.run([sys.executable, str(EXAMPLE / "client.py"), *args],
                          capture_output=True, text=True, timeout=timeout)


def test_the_client_without_a_hub_gives_up_after_its_timeout():
    port = free_port()
    started = time.monotonic()
    done = _client("--hub", f"127.0.0.1:{port}", "--timeout", "2", "--", "true")
    took = time.monotonic() - started
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"client: cannot reach the hub at 127.0.0.1:{port} (")
    assert done.stderr.endswith("gave up after 2 s (--timeout)\n")
    assert len(done.stderr.splitlines()) == 1 and 1.5 < took < 10


def test_the_client_says_the_hub_has_no_node(tmp_path):
    port = free_port()
    hub = _spawn("hub.py", "--port", str(port), "--store", f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        assert "listening" in hub.stdout.readline()
        done = _client("--hub", f"127.0.0.1:{port}", "--timeout", "1", "--", "true")
        assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
        assert "has no node connected to run the command; gave up after 1 s" in done.stderr
        done = _client("--hub", f"127.0.0.1:{port}", "--timeout", "-1", "--", "true")
        assert done.returncode == 2 and "must be seconds > 0" in done.stderr
    finally:
        hub.send_signal(signal.SIGTERM)
        hub.wait(timeout=20)


def _spool_of(node) -> pathlib.Path:
    line = node.stdout.readline()
    assert ", spooling in " in line, line
    return pathlib.Path(line.rsplit(" ", 1)[1].strip())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_hub_and_node_stop_cleanly_and_the_task_survives_the_hub(tmp_path, sig):
    from client import HubClient

    port = free_port()
    store = f"sqlite:///{tmp_path / 'hub.db'}"
    hub = _spawn("hub.py", "--port", str(port), "--store", store, "--grace", "60")
    node = _spawn("node.py", "--hub", f"127.0.0.1:{port}", "--node-id", "node-1")
    try:
        assert "listening" in hub.stdout.readline()
        spool = _spool_of(node)
        assert spool.is_dir()
        client = HubClient(f"127.0.0.1:{port}", patience=30)
        deadline = time.monotonic() + 30
        while client.stats().nodes < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        command = "for i in $(seq 1 30); do echo step $i; sleep 0.1; done"
        task_id = client.submit(["sh", "-c", command]).task_id
        time.sleep(1)  # it runs; a Wait is open on the hub meanwhile
        waiter = subprocess.Popen([sys.executable, "-c", (
            f"import sys; sys.path.insert(0, {str(EXAMPLE)!r}); from client import HubClient; "
            f"r = HubClient('127.0.0.1:{port}', patience=60).wait({task_id!r}, 60); "
            "print(r.status, r.streams[0].text.count(b'step'))")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        hub.send_signal(sig)
        out, _ = hub.communicate(timeout=30)
        assert hub.returncode == 0, out
        assert "Traceback" not in out and "CancelledError" not in out, out
        assert out.strip().endswith("1 task(s) in flight left to re-attach"), out
        # The next hub on the store gets the task back from its node.
        hub = _spawn("hub.py", "--port", str(port), "--store", store, "--grace", "60")
        assert "1 task(s) in flight to re-attach" in hub.stdout.readline()
        printed, errors = waiter.communicate(timeout=60)
        assert printed == "completed 30\n", errors
        client.close()
    finally:
        node.send_signal(sig)
        out, _ = node.communicate(timeout=30)
        hub.send_signal(signal.SIGTERM)
        hub.wait(timeout=30)
    assert node.returncode == 0 and "Traceback" not in out, out
    assert "node node-1: stopped" in out
    assert not spool.exists(), "the node's spool folder is left behind"


def test_a_killed_nodes_spool_is_removed_by_the_next_node():
    port = free_port()  # no hub: the nodes retry, which is all this needs
    first = _spawn("node.py", "--hub", f"127.0.0.1:{port}", "--node-id", "node-1")
    spool = _spool_of(first)
    first.kill()
    first.wait(timeout=10)
    assert spool.is_dir()
    second = _spawn("node.py", "--hub", f"127.0.0.1:{port}", "--node-id", "node-1")
    try:
        own = _spool_of(second)
        assert not spool.exists() and own.is_dir()
    finally:
        second.send_signal(signal.SIGTERM)
        out, _ = second.communicate(timeout=30)
    assert second.returncode == 0 and not own.exists(), out
