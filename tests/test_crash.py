"""SIGKILL the hub at random points: nothing acknowledged is ever lost.

A child process works a journal and acknowledges each call after it returns;
the test kills it at a random moment, reopens the file, and checks every
acknowledged registration, state change and result, and that every stream
holds a consistent state (a prefix-true head and tail of what was written).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

from crash_child import line
from journal import JournalConfig, TaskJournal, TaskStatus, _selection

#: Kills per buffer implementation and campaign (48 in the suite); more for
#: a longer campaign by hand.
KILLS = int(os.environ.get("JOURNAL_CRASH_KILLS", "12"))
CHILD = os.path.join(os.path.dirname(__file__), "crash_child.py")


def _expected(task_id, total):
    data = bytearray()
    number = 0
    while len(data) < total:
        data += line(task_id, number)
        number += 1
    return bytes(data[:total])


def _run_and_kill(url, run, impl, delay, budget=0, stream_bytes=0):
    child = subprocess.Popen(
        [sys.executable, CHILD, url, run, impl, str(budget), str(stream_bytes)],
        stdout=subprocess.PIPE, text=True,
    )
    acks = []
    first_done = threading.Event()

    def read():
        for ack in child.stdout:
            acks.append(ack)
            if ack.startswith("C"):
                first_done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    # The kill falls at a random point after the child got going, however
    # long its start took on a loaded machine.
    first_done.wait(timeout=60)
    time.sleep(delay)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    reader.join(timeout=30)
    assert child.returncode == -signal.SIGKILL, "the child ended before it was killed"
    return [ack.split() for ack in acks if ack.endswith("\n")]


#: (memory budget, bytes each task streams): as it was, and spilling 200 KB
#: streams under a budget far smaller than one task's buffers.
CAMPAIGNS = {"plain": (0, 0), "budget": (256, 200_000)}


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is a POSIX signal")
@pytest.mark.parametrize("campaign", sorted(CAMPAIGNS))
def test_sigkill_loses_nothing_acknowledged(tmp_path, buffer_cls, campaign):
    url = f"sqlite:///{tmp_path / 'journal.db'}"
    # The child gets the twin by name and loads it through journal._selection.
    impl = _selection.name_of(buffer_cls)
    budget, stream_bytes = CAMPAIGNS[campaign]
    rng = random.Random(impl + campaign)
    checked = bytes_checked = 0
    for kill in range(KILLS):
        run = f"{impl}{kill}"
        acks = _run_and_kill(url, run, impl, delay=rng.uniform(0.0, 0.8),
                             budget=budget, stream_bytes=stream_bytes)
        assert any(ack[0] == "C" for ack in acks), "the child got nothing done before the kill"
        with TaskJournal(url, config=JournalConfig(sweep_interval=0),
                         buffer_class=buffer_cls) as journal:
            for ack in acks:
                record = journal.get(ack[1])
                if ack[0] == "S":
                    assert record.status is not TaskStatus.PENDING
                if ack[0] == "C":
                    assert record.status is TaskStatus.COMPLETED
                    assert record.result["n"] == int(ack[1].split("-")[1])
                    assert record.streams["stdout"].total == int(ack[2])
                    bytes_checked += int(ack[2])
                checked += 1
            for record in journal.in_flight() + [journal.get(a[1]) for a in acks if a[0] == "C"]:
                view = record.streams.get("stdout")
                if view is None:
                    continue
                expected = _expected(record.task_id, view.total)
                assert view.head == expected[: len(view.head)]
                assert view.tail == expected[len(expected) - len(view.tail) :]
            # Tasks cut short by the kill come back in flight, detached.
            assert all(r.detached for r in journal.in_flight())
            for record in journal.in_flight():
                journal.cancel(record.task_id, "its hub was killed")
    assert checked > KILLS * 10
    print(f"\n{campaign}/{impl}: {KILLS} kills, {checked} acknowledgements and "
          f"{bytes_checked:,} acknowledged stream bytes checked")
