"""SIGKILL a hub whose coroutines make their durable changes with the async
twins: every change acknowledged after its await returned is in the file."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from journal import JournalConfig, TaskJournal, TaskStatus, _selection

KILLS = 3

# 32 coroutines on one loop, each registering, starting and completing tasks;
# a line is printed only once the await of the change it names returned.
CHILD = textwrap.dedent("""
    import asyncio, sys
    from journal import JournalConfig, TaskJournal, _selection

    url, run, impl = sys.argv[1], sys.argv[2], sys.argv[3]
    journal = TaskJournal(url, config=JournalConfig(sweep_interval=0, checkpoint_interval=0.02),
                          buffer_class=_selection.load(impl))

    async def worker(w):
        for n in range(100_000):
            task_id = f"{run}-{w}-{n}"
            await journal.register_async(task_id, "node", {"w": w})
            print("R", task_id, flush=True)
            await journal.start_async(task_id)
            journal.stream(task_id).append(b"out %d" % n)
            if n % 2:
                await journal.complete_async(task_id, {"n": n})
                print("C", task_id, flush=True)
            else:
                await journal.fail_async(task_id, "boom", {"n": n})
                print("F", task_id, flush=True)

    async def main():
        await asyncio.gather(*(worker(w) for w in range(32)))

    asyncio.run(main())
""")


def _run_and_kill(url, run, impl, delay):
    child = subprocess.Popen([sys.executable, "-c", CHILD, url, run, impl],
                             stdout=subprocess.PIPE, text=True)
    acks = []
    reader = threading.Thread(target=lambda: acks.extend(child.stdout), daemon=True)
    reader.start()
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    reader.join(10)
    return [line.split() for line in acks if line.endswith("\n")]


@pytest.mark.parametrize("synchronous", ["full", "normal"])
def test_acknowledged_async_changes_survive_sigkill(tmp_path, buffer_cls, synchronous):
    impl = _selection.name_of(buffer_cls)
    url = f"sqlite:///{tmp_path / 'journal.db'}?synchronous={synchronous}"
    rng = random.Random(17)
    checked = 0
    for kill in range(KILLS):
        acks = _run_and_kill(url, f"k{kill}", impl, rng.uniform(0.8, 2.0))
        journal = TaskJournal(url, config=JournalConfig(sweep_interval=0), buffer_class=buffer_cls)
        try:
            for kind, task_id in acks:
                record = journal.get(task_id)  # UnknownTask if a registration was lost
                if kind == "C":
                    assert record.status is TaskStatus.COMPLETED and record.result["n"] % 2 == 1
                    assert record.streams["stdout"].head.startswith(b"out ")
                elif kind == "F":
                    assert record.status is TaskStatus.FAILED and record.error == "boom"
                checked += 1
        finally:
            journal.close()
        assert any(kind != "R" for kind, _ in acks), "the child acknowledged no end before the kill"
    assert checked > 0
