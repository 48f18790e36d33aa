"""Measure the example hub: how fast it ingests output from three nodes, and
how long after a restart every task in flight is re-attached.

    python examples/grpc_hub/measure.py [--commands 30] [--mb 20]

Starts a hub and three nodes on loopback, submits ``--commands`` commands that
each print ``--mb`` MB, and reports the hub's chunks/s and MB/s while they
run.  Then it submits slow commands, SIGKILLs the hub while they stream,
starts it again on the same journal file, and reports the time from that
start to the last re-attach.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

from client import HubClient

HERE = os.path.dirname(os.path.abspath(__file__))


def _spawn(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, os.path.join(HERE, script), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=30)
    parser.add_argument("--mb", type=int, default=20)
    args = parser.parse_args()
    port = _free_port()
    store = f"sqlite:///{tempfile.mkdtemp()}/hub.db"
    processes = []

    def start_hub() -> subprocess.Popen:
        hub = _spawn("hub.py", "--port", str(port), "--store", store)
        hub.stdout.readline()
        processes.append(hub)
        return hub

    hub = start_hub()
    processes += [_spawn("node.py", "--hub", f"127.0.0.1:{port}", "--node-id", f"node-{n}")
                  for n in range(3)]
    client = HubClient(f"127.0.0.1:{port}")
    try:
        while client.stats().nodes < 3:
            time.sleep(0.05)
        command = ["sh", "-c", f"yes 'a line of build output' | head -c {args.mb * 1_000_000}"]
        before = client.stats()
        ids = [client.submit(command).task_id for _ in range(args.commands)]
        for task_id in ids:
            client.wait(task_id)
        after = client.stats()
        seconds = after.seconds - before.seconds
        chunks, data = after.chunks - before.chunks, after.bytes - before.bytes
        print(f"ingest: {args.commands} commands x {args.mb} MB from 3 nodes: "
              f"{chunks:,} chunks, {data / 1e6:,.0f} MB in {seconds:.2f} s = "
              f"{chunks / seconds:,.0f} chunks/s, {data / 1e6 / seconds:,.0f} MB/s")

        slow = ["sh", "-c", "for i in $(seq 1 100); do seq 1 1000; sleep 0.05; done"]
        ids = [client.submit(slow).task_id for _ in range(args.commands)]
        time.sleep(1.5)
        os.kill(hub.pid, signal.SIGKILL)
        hub.wait()
        hub = start_hub()
        while True:
            stats = client.stats()
            if stats.recovered and stats.detached == 0:
                break
            time.sleep(0.05)
        print(f"restart: {stats.recovered} tasks in flight, all re-attached "
              f"{stats.reattached_after:.2f} s after the new hub started")
        for task_id in ids:
            result = client.wait(task_id)
            assert result.status == "completed", result
        print(f"all {len(ids)} finished after the restart, nothing lost")
    finally:
        client.close()
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in processes:
            process.wait(timeout=10)


if __name__ == "__main__":
    main()
