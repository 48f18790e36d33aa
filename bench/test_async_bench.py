"""Durable registrations from asyncio: 64 coroutines on one event loop
calling ``register_async``, side by side with the hand-written baseline at
16 threads (``plain``: a sqlite3 connection per thread, one commit per
call; see test_store_bench.py), and ``to_thread``: the same 64 coroutines
wrapping the sync call in ``asyncio.to_thread``, what the example hub did.

While the coroutines run, a ticker on the same loop sleeps 1 ms at a time;
how late it wakes, at worst, is the loop's largest stall during the burst
(``extra_info["loop_stall_ms"]``, the worst over the rounds).  The same
ticker on an idle loop for as long (``idle_stall_ms``) is the machine's own
share: on a shared, loaded machine the OS alone deschedules a thread for
tens of milliseconds, and no journal can do better than that.  And the
same ticker beside 64 coroutines that keep the loop as busy without any
journal (``busy_stall_ms``, JSON round trips): what a busy loop alone sees.
And the longest garbage collection during each burst (``gc_ms_rounds``): a
full collection walks every object of the process, on the thread that
triggers it, the loop's most often, and is most of any stall over a few ms.
``async64_frozen`` is ``async64`` in a process that froze its heap
(``gc.freeze()``) before the burst, as the README advises a hub to do once
started: collections then walk only what was made since, the journal's
tasks among it, and what is left of a stall is the journal's own.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from contextlib import contextmanager
from typing import Iterator

import pytest

from conftest import run_in_threads
from test_store_bench import META, open_registrar

COROUTINES = 64


async def _ticker(stop: asyncio.Event, worst: list[float]) -> None:
    loop = asyncio.get_running_loop()
    last = loop.time()
    while not stop.is_set():
        await asyncio.sleep(0.001)
        now = loop.time()
        worst[0] = max(worst[0], now - last - 0.001)
        last = now


def _idle(seconds: float) -> float:
    """The ticker's largest lateness on a loop that does nothing else."""

    async def main():
        stop, worst = asyncio.Event(), [0.0]
        ticker = asyncio.ensure_future(_ticker(stop, worst))
        await asyncio.sleep(seconds)
        stop.set()
        await ticker
        return worst[0]

    return asyncio.run(main())


def _busy(seconds: float) -> float:
    """The ticker's largest lateness beside 64 coroutines busy with no journal."""

    async def main():
        stop, worst, done = asyncio.Event(), [0.0], [False]
        ticker = asyncio.ensure_future(_ticker(stop, worst))

        async def worker():
            while not done[0]:
                json.loads(json.dumps(META))
                await asyncio.sleep(0)

        workers = [asyncio.ensure_future(worker()) for _ in range(COROUTINES)]
        await asyncio.sleep(seconds)
        done[0] = True
        await asyncio.gather(*workers)
        stop.set()
        await ticker
        return worst[0]

    return asyncio.run(main())


@contextmanager
def _longest_collection(longest: list[float]) -> Iterator[None]:
    """Record in ``longest[0]`` the longest garbage collection meanwhile."""
    started = [0.0]

    def timing(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            longest[0] = max(longest[0], time.perf_counter() - started[0])

    gc.callbacks.append(timing)
    try:
        yield
    finally:
        gc.callbacks.remove(timing)


@contextmanager
def _frozen(freeze: bool) -> Iterator[None]:
    """With ``freeze``, keep every object made so far out of the collections
    meanwhile; afterwards they are back in the oldest generation, and later
    benchmarks see the usual heap."""
    if not freeze:
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _burst(journal, slices, via_thread: bool) -> float:
    """Register every id of ``slices`` (one coroutine each); return the
    loop's largest stall meanwhile, in seconds."""

    async def worker(ids):
        for task_id in ids:
            if via_thread:
                await asyncio.to_thread(journal.register, task_id, "node", META)
            else:
                await journal.register_async(task_id, "node", META)

    async def main():
        stop, worst = asyncio.Event(), [0.0]
        ticker = asyncio.ensure_future(_ticker(stop, worst))
        await asyncio.sleep(0.005)
        await asyncio.gather(*(worker(ids) for ids in slices))
        stop.set()
        await ticker
        return worst[0]

    return asyncio.run(main())


@pytest.mark.parametrize("synchronous", ["normal", "full"])
@pytest.mark.parametrize("impl", ["async64", "async64_frozen", "plain16", "to_thread64"])
def test_async_registrations(benchmark, per_op, impl, synchronous):
    benchmark.group = f"durable registrations, {synchronous}: asyncio 64 coroutines, plain 16 threads"
    total = 4_096 if synchronous == "normal" else 1_600
    opened = []
    stalls: list[float] = []
    collections: list[float] = []
    idle: list[float] = []
    busy: list[float] = []

    def setup():
        for old in opened:
            old.close()
        if impl != "plain16":
            idle.append(_idle(0.5))  # untimed: setup is not in the figure
            busy.append(_busy(0.5))
        registrar = open_registrar("plain" if impl == "plain16" else "taskjournal", synchronous)
        opened[:] = [registrar]
        parts = 16 if impl == "plain16" else COROUTINES
        slices = [[f"t{p}-{n}" for n in range(total // parts)] for p in range(parts)]
        return (registrar, slices), {}

    def round_(registrar, slices):
        if impl == "plain16":
            def work(ids):
                for task_id in ids:
                    registrar.register(task_id, "node", META)

            run_in_threads(work, slices)
        else:
            longest = [0.0]
            with _frozen(impl == "async64_frozen"), _longest_collection(longest):
                stalls.append(_burst(registrar, slices, via_thread=impl == "to_thread64"))
            collections.append(longest[0])

    per_op(total)
    benchmark.pedantic(round_, setup=setup, rounds=3, iterations=1)
    opened[0].close()
    if stalls:
        benchmark.extra_info["loop_stall_ms"] = round(max(stalls) * 1e3, 2)
        benchmark.extra_info["loop_stall_ms_rounds"] = [round(s * 1e3, 2) for s in stalls]
        benchmark.extra_info["gc_ms_rounds"] = [round(c * 1e3, 2) for c in collections]
        benchmark.extra_info["idle_stall_ms"] = round(max(idle) * 1e3, 2)
        benchmark.extra_info["busy_stall_ms"] = round(max(busy) * 1e3, 2)


def test_the_ticker_sees_a_blocked_loop():
    """The stall measurement itself: a sync commit-sized block on the loop
    shows up as a stall of at least its length."""

    async def main():
        stop, worst = asyncio.Event(), [0.0]
        ticker = asyncio.ensure_future(_ticker(stop, worst))
        await asyncio.sleep(0.005)
        time.sleep(0.03)  # what a sync durable call on the loop does
        await asyncio.sleep(0.005)
        stop.set()
        await ticker
        return worst[0]

    assert asyncio.run(main()) >= 0.025
