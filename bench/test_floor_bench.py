"""What an append through a journal handle costs against the floor.

The floor (``floor.py``) is a minimal compiled head+tail ring built here.
Three sides run in one process, one after the other, on the same work: 16
threads making 1,000 appends each of a 64-byte slice of a build log to
1,000 tasks' full 20,000 + 20,000-byte buffers, the tasks drawn in a fixed
random order.  The journal sides append through ``TaskJournal.stream()``
handles, with the default highlight rules (``on``) and with ``highlights``
off.  ``report.py`` prints the ratios to the floor; the target is at most
1.3x with highlights on.
"""

from __future__ import annotations

import random

import pytest

from conftest import buffer_class, run_in_threads, split
from floor import floor_class
from journal import JournalConfig, TaskJournal
from test_highlight_bench import LOG

HEAD = TAIL = 20_000
TASKS = 1_000
THREADS = 16
PER_THREAD = 12_500  # 200,000 appends a round: starting 16 threads (~3 ms) is buried
SIZE = 64


@pytest.fixture(scope="module")
def floor(tmp_path_factory):
    return floor_class(tmp_path_factory.mktemp("floor"))


def _chunks(count):
    starts = range(0, len(LOG) - SIZE, SIZE)
    pieces = [LOG[start : start + SIZE] for start in starts]
    return [pieces[n % len(pieces)] for n in range(count)]


@pytest.mark.parametrize("side", ["floor", "handle off", "handle on"])
def test_append_against_the_floor(benchmark, per_op, floor, side):
    benchmark.group = f"floor: {SIZE} B, {TASKS} tasks, {THREADS} threads x {PER_THREAD}"
    count = THREADS * PER_THREAD
    chunks = _chunks(count)
    order = random.Random(1234)
    journals = []

    def setup():
        if side == "floor":
            targets = [floor(HEAD, TAIL) for _ in range(TASKS)]
        else:
            config = JournalConfig(sweep_interval=0, memory_budget=None,
                                   highlight_budget=4096 if side == "handle on" else 0,
                                   head_bytes=HEAD, tail_bytes=TAIL)
            journal = TaskJournal(config=config, buffer_class=buffer_class("c"))
            journals.append(journal)
            for n in range(TASKS):
                journal.register(f"t{n}", "node")
            targets = [journal.stream(f"t{n}") for n in range(TASKS)]
        for target in targets:
            target.append(LOG[: HEAD + TAIL + 8192])  # full, and its window too
        pairs = [(targets[order.randrange(TASKS)], chunk) for chunk in chunks]
        return (split(pairs, THREADS),), {}

    def work(part):
        for target, chunk in part:
            target.append(chunk)

    def run(slices):
        run_in_threads(work, slices)

    per_op(count)
    benchmark.pedantic(run, setup=setup, rounds=7, iterations=1, warmup_rounds=1)
    for journal in journals:
        journal.close()
