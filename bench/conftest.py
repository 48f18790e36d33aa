"""Benchmark helpers: the implementations under test, side by side.

Run with ``python -m pytest bench`` (see the README); ``bench/report.py``
turns the JSON that pytest-benchmark saves into the ratio table.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading

import pytest

sys.path.insert(0, os.path.dirname(__file__))


def buffer_class(name):
    module = {"c": "journal._buffer", "python": "journal._buffer_py"}[name]
    return importlib.import_module(module).HeadTailBuffer


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


@pytest.fixture
def per_op(benchmark):
    """Record how many operations one round performs, for per-op figures."""

    def record(count):
        benchmark.extra_info["ops_per_round"] = count

    return record
