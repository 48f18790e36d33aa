"""Benchmark helpers: the implementations under test, side by side.

Run with ``python -m pytest bench`` (see the README); ``bench/report.py``
turns the JSON that pytest-benchmark saves into the ratio table.
"""

from __future__ import annotations

import os
import random
import sys
import threading

import pytest

from journal import _selection

sys.path.insert(0, os.path.dirname(__file__))


def buffer_class(name):
    """The HeadTailBuffer twin ``name`` (``"c"`` or ``"python"``), through the
    same selection module as the package and the tests.  In a pure run
    (``journal._selection.pure_reason()``) the compiled benchmarks skip;
    otherwise a missing extension fails them: the ratio must be measured."""
    if name == _selection.COMPILED:
        reason = _selection.pure_reason()
        if reason is not None:
            pytest.skip(f"compiled buffer not benchmarked: {reason}")
    return _selection.load(name)


def run_in_threads(work, slices):
    """Run ``work(slice)`` for every slice, one thread each, all at once."""
    if len(slices) == 1:
        work(slices[0])
        return
    start = threading.Barrier(len(slices))

    def run(part):
        start.wait()
        work(part)

    threads = [threading.Thread(target=run, args=(part,)) for part in slices]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def split(items, parts):
    return [items[n::parts] for n in range(parts)]


def stream_1k_appends(benchmark, per_op, journals, appends, rounds):
    """Register 100 tasks over ``journals`` (round robin), then time 16
    threads making ``appends`` 1 KB appends to their stdout handles, the
    tasks drawn at random (the same draw every run)."""
    handles = []
    for n in range(100):
        journal = journals[n % len(journals)]
        journal.register(f"t{n}", "node")
        handles.append(journal.stream(f"t{n}"))
    rng = random.Random(7)
    sequence = [handles[rng.randrange(100)] for _ in range(appends)]
    chunk = b"x" * 1024

    def work(part):
        for handle in part:
            handle.append(chunk)

    per_op(len(sequence))
    benchmark.pedantic(run_in_threads, args=(work, split(sequence, 16)), rounds=rounds,
                       iterations=1, warmup_rounds=1)


@pytest.fixture
def per_op(benchmark):
    """Record how many operations one round performs, for per-op figures."""

    def record(count):
        benchmark.extra_info["ops_per_round"] = count

    return record
