"""A hub process for the crash tests: it works a journal until it is killed.

    python crash_child.py URL RUN IMPL [BUDGET STREAM_BYTES]

IMPL names the HeadTailBuffer twin (``"c"`` or ``"python"``, as
``journal._selection.name_of`` gives it); the child loads exactly that one.

With BUDGET (bytes, 0: none) the journal spills under a memory budget, and
each task streams about STREAM_BYTES of output.  Each acknowledgement line ("R id", "S id", "C id total") is printed only after
the journal call it acknowledges has returned.
"""

from __future__ import annotations

import random
import sys

from journal import JournalConfig, TaskJournal, _selection


def line(task_id: str, number: int) -> bytes:
    return f"{task_id} line {number:05d}\n".encode()


def main() -> None:
    url, run, impl = sys.argv[1], sys.argv[2], sys.argv[3]
    budget = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    stream_bytes = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    buffer_class = _selection.load(impl)  # no fallback: the twin the test asked for
    config = JournalConfig(
        head_bytes=300, tail_bytes=300, checkpoint_interval=0.02, sweep_interval=0,
        memory_budget=budget or None,
    )
    journal = TaskJournal(url, config=config, buffer_class=buffer_class)
    rng = random.Random(run)
    for n in range(10_000):
        task_id = f"{run}-{n}"
        journal.register(task_id, f"node-{n % 3}")
        print("R", task_id, flush=True)
        journal.start(task_id)
        print("S", task_id, flush=True)
        out = journal.stream(task_id)
        # A line is 22-26 bytes: about STREAM_BYTES each, or up to 5 KB.
        lines = rng.randrange(stream_bytes // 30, stream_bytes // 20) if stream_bytes else rng.randrange(1, 200)
        for number in range(lines):
            out.append(line(task_id, number))
        if rng.random() < 0.8:
            journal.complete(task_id, {"n": n, "lines": lines})
            print("C", task_id, out.total, flush=True)


if __name__ == "__main__":
    main()
