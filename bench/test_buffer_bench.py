"""Append throughput: compiled buffer, pure twin and the reviewed design.

Each round performs APPENDS[impl] appends of one chunk size, to one hot task
or to 1,000 tasks in a fixed random order, from one thread or from 16.  The
count differs by implementation so that every round lasts long enough to
bury the ~3 ms it takes to start 16 threads; figures are per append.  Every
buffer is full before timing starts, so the steady state is measured: the
reviewed design copies its whole 40 KB on every append once a task has
printed that much.
"""

from __future__ import annotations

import random

import pytest

from conftest import buffer_class, run_in_threads, split
from reviewed import HEAD, TAIL, ReviewedJournal

APPENDS = {"c": 200_000, "python": 40_000, "reviewed": 10_000}
# bytearray grows without bound: keep it to 80 MB a round.
HOT_BYTES = 80 * 1024 * 1024
HOT_MAX_APPENDS = 200_000
ROUNDS = 5
CHUNKS = [64, 1024, 4096]
IMPLEMENTATIONS = ["c", "python", "reviewed"]


def _order(tasks, count):
    rng = random.Random(1234)
    return [rng.randrange(tasks) for _ in range(count)]


def _ours(name, tasks, chunk):
    cls = buffer_class(name)
    handles = [cls(HEAD, TAIL) for _ in range(tasks)]
    for handle in handles:
        handle.append(b"\0" * (HEAD + TAIL))
    sequence = [handles[n] for n in _order(tasks, APPENDS[name])]

    def work(part):
        for handle in part:
            handle.append(chunk)

    return sequence, work


def _reviewed(tasks, chunk):
    journal = ReviewedJournal()
    ids = [f"task-{n}" for n in range(tasks)]
    for task_id in ids:
        journal.register(task_id)
        journal.append(task_id, b"\0" * (HEAD + TAIL))
    sequence = [ids[n] for n in _order(tasks, APPENDS["reviewed"])]
    append = journal.append

    def work(part):
        for task_id in part:
            append(task_id, chunk)

    return sequence, work


@pytest.mark.parametrize("threads", [1, 16])
@pytest.mark.parametrize("tasks", [1, 1000])
@pytest.mark.parametrize("size", CHUNKS)
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_append(benchmark, per_op, impl, size, tasks, threads):
    benchmark.group = f"append {size} B, {tasks} task(s), {threads} thread(s)"
    chunk = b"x" * size
    if impl == "reviewed":
        sequence, work = _reviewed(tasks, chunk)
    else:
        sequence, work = _ours(impl, tasks, chunk)
    slices = split(sequence, threads)
    per_op(len(sequence))
    benchmark.pedantic(run_in_threads, args=(work, slices), rounds=ROUNDS, iterations=1,
                       warmup_rounds=1)


@pytest.mark.parametrize("size", CHUNKS)
@pytest.mark.parametrize("impl", ["c", "python", "bytearray"])
def test_hot_buffer(benchmark, per_op, impl, size):
    """One hot buffer against the floor: ``bytearray.extend`` of the same chunks."""
    benchmark.group = f"hot buffer {size} B"
    chunk = b"x" * size
    appends = min(HOT_MAX_APPENDS, HOT_BYTES // size)
    per_op(appends)

    if impl == "bytearray":
        def setup():
            target = bytearray()
            return ([target] * appends,), {}

        def work(sequence):
            for target in sequence:
                target.extend(chunk)
    else:
        cls = buffer_class(impl)

        def setup():
            target = cls(HEAD, TAIL)
            target.append(b"\0" * (HEAD + TAIL))
            return ([target] * appends,), {}

        def work(sequence):
            for target in sequence:
                target.append(chunk)

    benchmark.pedantic(work, setup=setup, rounds=ROUNDS * 3, iterations=1, warmup_rounds=1)
