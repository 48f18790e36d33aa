"""The simulated mesh behind ``taskjournal simulate``.

Nodes are threads.  Each runs its share of the tasks one after the other
through the real journal, as a hub would on the node's behalf: register,
start, stream ~4 KB chunks of output into the stream handle, then complete
or fail with an exit code.  A node keeps what it sent of its current task,
as a real node agent keeps output until the hub has it: after a hub restart
it re-attaches and sends again whatever the restored checkpoint lacks, so
at the end every stream must hold exactly what its node printed.

``restart_at`` drops the journal the way a crash would (``abandon``: no
close, no final checkpoint) when that percentage of tasks has finished, and
opens a new one on the same store.  ``silent`` nodes stop in the middle of
their last task without a word, so the lease sweep must find them LOST.  A
node whose task the hub ended (its stream is sealed, and no restart is under
way) says so and goes on with its next task, as a real node agent would.

The simulator's own memory stays flat however many tasks it runs: a task's
plan is drawn when its node starts it (from the seed and its number), what
is checked at the end is kept in arrays, and append latencies are sampled
into a fixed reservoir per node.
"""

from __future__ import annotations

import math
import random
import sys
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

from journal.buffer import HeadTailBuffer
from journal.config import MAX_SECONDS, JournalConfig
from journal.errors import (
    DuplicateTask,
    InvalidTransition,
    JournalClosed,
    JournalError,
    StoreError,
    StreamSealed,
)
from journal.journal import TaskJournal
from journal.lifecycle import TaskStatus
from journal.cli.workload import Plan, chunk_pool, plan_task

try:
    import resource
except ImportError:  # Windows
    _HAVE_RESOURCE = False
else:
    _HAVE_RESOURCE = True

# One append in this many is timed, to keep the timer out of the throughput.
_TIMED_EVERY = 16
# While the hub is down, errors from the old journal are expected.
_HUB_DOWN_ERRORS = (JournalClosed, StoreError)
# How long a node waits for a restarting hub before it gives up.
_HUB_DOWN_PATIENCE = 30.0
#: Each simulated node is a thread.
MAX_NODES = 10_000
#: Append latencies kept per node (a uniform sample of all those timed).
_LATENCY_SAMPLES = 512
#: The journal's own default budget, which ``simulate`` keeps unless told.
DEFAULT_BUDGET: Optional[int] = JournalConfig().memory_budget


def fitting_lease(nodes: int) -> float:
    """A lease that fits a mesh of ``nodes`` threads on one interpreter.

    The nodes share one GIL with the hub: with thousands of them, one can
    wait seconds for its turn, and a starved thread is not a dead node.  So
    the lease grows with the mesh: 10 s, and 20 ms more per node past 500
    (40 s for 2,000 nodes)."""
    return max(10.0, nodes * 0.02)


class _EndedByHub(Exception):
    """The hub ended the node's current task (its stream is sealed)."""


@dataclass
class Settings:
    nodes: int = 100
    tasks: int = 1000
    store_url: str = "sqlite:///journal.db"
    restart_at: Optional[float] = None  # percent of tasks finished
    silent: int = 0  # nodes that go quiet in their last task
    rate_kbps: float = 0.0  # per node; 0 for as fast as possible
    seed: int = 1
    #: None: one that fits the load (fitting_lease).
    lease_timeout: Optional[float] = None
    reattach_grace: float = 10.0
    #: The journal's memory_budget (None: no bound).
    memory_budget: Optional[int] = field(default=DEFAULT_BUDGET)
    #: Prefix of this run's task ids, so runs can share a store.
    run_id: str = "sim"

    @property
    def lease(self) -> float:
        return fitting_lease(self.nodes) if self.lease_timeout is None else self.lease_timeout

    def check(self) -> None:
        if self.nodes < 1 or self.tasks < 1:
            raise ValueError("--nodes and --tasks must be at least 1")
        if self.silent < 0 or self.silent > self.nodes:
            raise ValueError(f"--silent must be between 0 and --nodes ({self.nodes})")
        if self.restart_at is not None and not 0 < self.restart_at < 100:
            raise ValueError("--restart-at is a percentage between 0 and 100")
        if self.restart_at is not None and self.store_url.startswith("memory://"):
            raise ValueError("--restart-at needs a durable --store: memory:// forgets "
                             "everything when the hub restarts")
        if not (math.isfinite(self.rate_kbps) and self.rate_kbps >= 0):
            raise ValueError(f"--rate must be a finite number of KB/s >= 0 (0: as fast as the "
                             f"journal takes it), got {self.rate_kbps!r}")
        if self.lease_timeout is not None and not (
            math.isfinite(self.lease_timeout) and 0 < self.lease_timeout <= MAX_SECONDS
        ):
            raise ValueError(f"--lease must be seconds > 0 and at most {MAX_SECONDS:,}, "
                             f"got {self.lease_timeout!r}")
        if self.memory_budget is not None and not 0 <= self.memory_budget <= sys.maxsize:
            raise ValueError(f"--memory-budget must be bytes >= 0 (or 'none'), "
                             f"got {self.memory_budget!r}")
        if self.nodes > MAX_NODES:
            raise ValueError(f"--nodes must be at most {MAX_NODES:,} (each node is a thread), "
                             f"got {self.nodes}")


@dataclass
class Restart:
    at_finished: int = 0
    in_flight: int = 0  # tasks the new journal recovered
    reopen_seconds: float = 0.0
    reattached: int = 0
    recovered_seconds: float = 0.0  # crash to the last re-attachment


class Hub:
    """The journal of the simulated hub, and its restarts."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config = JournalConfig(
            store_url=settings.store_url, lease_timeout=settings.lease,
            reattach_grace=settings.reattach_grace, sweep_interval=0.25,
            memory_budget=settings.memory_budget,
        )
        self.journal = TaskJournal(config=self.config)
        self.generation = 0
        self._up = threading.Event()
        self._up.set()
        self.restart: Optional[Restart] = None
        self._lock = threading.Lock()

    def current(self) -> tuple[int, TaskJournal]:
        if not self._up.wait(_HUB_DOWN_PATIENCE):
            raise RuntimeError("the simulated hub did not come back")
        return self.generation, self.journal

    def crash_and_reopen(self, finished: int) -> None:
        self._up.clear()
        started = self._crashed_at = time.perf_counter()
        self.journal.abandon()
        self.journal = TaskJournal(config=self.config)  # may raise: then nodes give up
        self.restart = Restart(
            at_finished=finished, in_flight=self.journal.recovered,
            reopen_seconds=time.perf_counter() - started,
        )
        self.generation += 1
        self._up.set()

    def reattached(self) -> None:
        with self._lock:
            assert self.restart is not None
            self.restart.reattached += 1
            self.restart.recovered_seconds = time.perf_counter() - self._crashed_at


class Node:
    """One simulated node, run by a thread of its own.  (Not a Thread
    subclass: its private names would collide with Thread's, as ``_handle``
    does on Python 3.13.)"""

    def __init__(self, sim: Simulation, number: int, tasks: list[int], silent: bool) -> None:
        self.thread = threading.Thread(target=self.run, name=f"node-{number:03d}", daemon=True)
        self.sim = sim
        self.node_id = f"node-{number:03d}"
        self.tasks = tasks
        self.silent = silent
        self.failure: Optional[BaseException] = None
        #: Set when the node goes silent: its agent stops heartbeating too.
        self.went_silent: Optional[str] = None
        self.finished = 0
        #: Tasks the hub ended while this node ran them (LOST, TIMED_OUT).
        self.ended_by_hub: list[str] = []
        self.appends = 0
        self.bytes = 0
        self.latencies_ns = array("q")
        self._timed = 0
        self._draw = number or 1  # a xorshift state: a Random each costs 2.5 KB a node
        self._generation = -1  # of the journal the current task is attached to
        self._journal: Optional[TaskJournal] = None  # that journal

    def run(self) -> None:
        try:
            for position, number in enumerate(self.tasks):
                last = position == len(self.tasks) - 1
                if not self._run_task(number, quit_midway=self.silent and last):
                    return
        except BaseException as exc:  # reported by the simulation
            self.failure = exc

    def _run_task(self, number: int, quit_midway: bool) -> bool:
        sim = self.sim
        plan = sim.plan(number)
        task_id = self.sim.task_id(number)
        self._task_id = task_id
        self._sent: list[bytes] = []
        self._sent_total = 0
        self._register(task_id, {"kind": plan.kind.name})
        self._call(lambda j: j.start(task_id), done_if=InvalidTransition)
        pause = len(sim.pool[0]) / (sim.settings.rate_kbps * 1024) if sim.settings.rate_kbps else 0
        try:
            for index, chunk in enumerate(plan.chunks):
                if quit_midway and index == len(plan.chunks) // 2:
                    self.went_silent = task_id
                    return False  # no more appends, heartbeats or results
                if index == plan.error_index:
                    self._send(plan.error_line)
                self._send(sim.pool[chunk])
                if pause:
                    time.sleep(pause)
        except _EndedByHub:
            # Reported in the summary; the node goes on with its next task.
            self.ended_by_hub.append(task_id)
            self.finished += 1
            sim.maybe_restart()
            return True
        result = {"exit_code": plan.kind.exit_code}
        if plan.kind.exit_code == 0:
            self._call(lambda j: j.complete(task_id, result), done_if=InvalidTransition)
        else:
            error = f"exit status {plan.kind.exit_code}"
            self._call(lambda j: j.fail(task_id, error, result=result), done_if=InvalidTransition)
        sim.expected_totals[number] = self._sent_total
        self.finished += 1
        sim.maybe_restart()
        return True

    def _send(self, piece: bytes) -> None:
        while True:
            handle = self._handle()
            try:
                if self.appends % _TIMED_EVERY == 0:
                    started = time.perf_counter_ns()
                    handle.append(piece)
                    self._sample(time.perf_counter_ns() - started)
                else:
                    handle.append(piece)
                break
            except StreamSealed as exc:
                if self._ended_by_hub():
                    raise _EndedByHub(self._task_id) from None
                # The hub went down: its journal sealed every handle.  Once
                # the new one is up, _handle() re-attaches and resends.
                self._wait_for_new_hub(self._journal, exc)
        self.appends += 1
        self.bytes += len(piece)
        self._sent.append(piece)
        self._sent_total += len(piece)

    def _sample(self, nanoseconds: int) -> None:
        """Keep a uniform sample of the timed appends (reservoir sampling)."""
        self._timed += 1
        if len(self.latencies_ns) < _LATENCY_SAMPLES:
            self.latencies_ns.append(nanoseconds)
        else:
            x = self._draw
            x ^= (x << 13) & 0xFFFFFFFFFFFFFFFF
            x ^= x >> 7
            x ^= (x << 17) & 0xFFFFFFFFFFFFFFFF
            self._draw = x
            slot = x % self._timed
            if slot < _LATENCY_SAMPLES:
                self.latencies_ns[slot] = nanoseconds

    def _ended_by_hub(self) -> bool:
        """Whether the sealed stream is the hub's verdict on the task (no
        restart under way, and the journal has it ended)."""
        journal = self._journal
        if journal is None or self.sim.hub.journal is not journal:
            return False
        try:
            return journal.get(self._task_id).terminal
        except JournalError:
            return False  # closed under us: a restart is under way

    def _handle(self) -> HeadTailBuffer:
        generation, journal = self.sim.hub.current()
        if generation != self._generation:
            self._reattach(generation, journal)
        return self._stream

    def _register(self, task_id: str, meta: dict[str, str]) -> None:
        while True:
            generation, journal = self.sim.hub.current()
            try:
                journal.register(task_id, self.node_id, meta=meta)
                # Inside the try: the hub may go down between the two calls,
                # and the next round then finds the task registered.
                stream = journal.stream(task_id)
            except DuplicateTask:
                # The old hub committed it before it went down, and the new
                # one recovered it detached.
                self._reattach(generation, journal)
                return
            except _HUB_DOWN_ERRORS as exc:
                self._wait_for_new_hub(journal, exc)
                continue
            self._generation = generation
            self._journal, self._stream = journal, stream
            return

    def _reattach(self, generation: int, journal: TaskJournal) -> None:
        """After a hub restart: re-attach, then send what the checkpoint lacks."""
        try:
            journal.reattach(self._task_id, self.node_id)
        except InvalidTransition:
            pass  # it had already finished before the hub went down
        else:
            self.sim.hub.reattached()
        self._generation = generation
        self._journal = journal
        self._stream = handle = journal.stream(self._task_id)
        if handle.sealed:
            return
        have, offset = handle.total, 0
        for piece in self._sent:
            if offset + len(piece) > have:
                handle.append(piece[max(0, have - offset):])
            offset += len(piece)

    def _call(self, operation: Callable[[TaskJournal], Any], done_if: type[JournalError]) -> None:
        """Run a journal operation, riding out a hub restart: retried on the
        new journal, and taken as done if the old one had committed it."""
        while True:
            generation, journal = self.sim.hub.current()
            try:
                if generation != self._generation:
                    self._reattach(generation, journal)
                operation(journal)
                return
            except done_if:
                return
            except _HUB_DOWN_ERRORS as exc:
                self._wait_for_new_hub(journal, exc)

    def _wait_for_new_hub(self, failed: Optional[TaskJournal], error: Exception) -> None:
        """A crash is under way: the old journal fails until a new one is up.
        An error with no restart behind it is a real one."""
        give_up = time.monotonic() + _HUB_DOWN_PATIENCE
        while self.sim.hub.journal is failed:
            if self.sim.hub.restart is not None or time.monotonic() > give_up:
                raise error
            time.sleep(0.001)


class Simulation:
    def __init__(self, settings: Settings,
                 progress: Optional[Callable[[int, int, str], None]] = None) -> None:
        settings.check()
        self.settings = settings
        self.progress = progress or (lambda done, total, note: None)
        rng = random.Random(settings.seed)
        self.pool = chunk_pool(settings.seed)
        self._plan_seed = rng.getrandbits(32)
        #: Bytes each finished task's node sent (-1: not finished by its node).
        self.expected_totals = array("q", [-1]) * settings.tasks
        self.hub: Hub
        self.nodes: list[Node] = []
        self._restart_lock = threading.Lock()

    def plan(self, number: int) -> Plan:
        """Task ``number``'s output, the same every time it is asked for."""
        rng = random.Random(self._plan_seed * 1_000_003 + number)
        return plan_task(rng, number, len(self.pool))

    def task_id(self, number: int) -> str:
        return f"{self.settings.run_id}-t{number:05d}"

    def finished(self) -> int:
        return sum(node.finished for node in self.nodes)

    def maybe_restart(self) -> None:
        """Crash and reopen the hub once ``restart_at`` percent have finished.

        Called by the node that finishes a task, not polled, so that even a
        run shorter than a poll restarts while other tasks are in flight."""
        restart_at = self.settings.restart_at
        if restart_at is None or self.hub.restart is not None:
            return
        with self._restart_lock:
            done = self.finished()
            if self.hub.restart is None and done >= self.settings.tasks * restart_at / 100:
                self.hub.crash_and_reopen(done)

    def run(self) -> dict[str, Any]:
        settings = self.settings
        self.hub = Hub(settings)
        shares: list[list[int]] = [[] for _ in range(settings.nodes)]
        for number in range(settings.tasks):
            shares[number % settings.nodes].append(number)
        silent = set(range(settings.nodes - settings.silent, settings.nodes))
        nodes = [Node(self, n, shares[n], n in silent) for n in range(settings.nodes) if shares[n]]
        self.nodes = nodes
        started = time.perf_counter()
        beating = threading.Event()
        heart = threading.Thread(target=self._heartbeats, args=(beating,), name="node-agents",
                                 daemon=True)
        heart.start()
        for node in nodes:
            node.thread.start()
        note = ""
        while any(node.thread.is_alive() for node in nodes):
            time.sleep(0.05)
            done = self.finished()
            restart = self.hub.restart
            if restart is not None:
                note = (f"hub restarted in {restart.reopen_seconds:.2f} s; "
                        f"{restart.reattached} of {restart.in_flight} tasks in flight re-attached")
            self.progress(done, settings.tasks, note)
        streaming_seconds = time.perf_counter() - started
        beating.set()
        heart.join()
        failures = [node.failure for node in nodes if node.failure is not None]
        if failures:
            raise failures[0]
        silent_tasks = [node.went_silent for node in nodes if node.went_silent]
        self._wait_for_verdicts(silent_tasks)
        summary = self._summary(silent_tasks, streaming_seconds, time.perf_counter() - started)
        self.hub.journal.close()
        return summary

    def _heartbeats(self, stop: threading.Event) -> None:
        """What a real node's agent does beside its work: renew the lease of
        every node that is alive and has not gone silent, four times a lease.

        All nodes here share one GIL: a node thread can wait seconds for its
        turn, and a real node is not starved by its neighbours' work."""
        while not stop.wait(self.settings.lease / 4):
            journal = self.hub.journal
            for node in self.nodes:
                if node.went_silent is None and node.thread.is_alive():
                    try:
                        journal.heartbeat(node.node_id)
                    except JournalError:
                        break  # the hub is restarting: the next round goes to the new one

    def _wait_for_verdicts(self, task_ids: list[str]) -> None:
        """Let the lease sweep find the silent nodes' tasks LOST."""
        deadline = time.monotonic() + self.settings.lease + self.settings.reattach_grace + 5
        pending = set(task_ids)
        while pending and time.monotonic() < deadline:
            self.progress(self.finished(), self.settings.tasks,
                          f"waiting for {len(pending)} silent node(s) to be found LOST")
            pending = {t for t in pending if not self.hub.journal.get(t).terminal}
            time.sleep(0.2)

    def _summary(self, silent_tasks: list[str], streaming: float, total: float) -> dict[str, Any]:
        journal = self.hub.journal
        by_status = {status.value: 0 for status in TaskStatus}
        kept = dropped = written = missing = released = 0
        errors_shown = errors_total = errors_released = 0
        ended_by_hub = {task_id for node in self.nodes for task_id in node.ended_by_hub}
        for number in range(self.settings.tasks):
            plan = self.plan(number)
            task_id = self.task_id(number)
            try:
                record = journal.get(task_id)
            except JournalError:
                continue  # a silent node's task never registered
            by_status[record.status.value] += 1
            view = record.streams.get("stdout")
            if view is None:
                continue
            kept += view.held
            dropped += view.dropped - view.released
            released += view.released
            written += view.total
            expected = self.expected_totals[number]
            if expected >= 0 and view.total < expected:
                missing += expected - view.total
            if plan.error_line and task_id not in silent_tasks and task_id not in ended_by_hub:
                if view.released:
                    errors_released += 1  # memory:// let go of its output
                    continue
                errors_total += 1
                errors_shown += plan.error_line.rstrip(b"\n") in view.render()
        latencies = sorted(x for node in self.nodes for x in node.latencies_ns)
        finished = sum(node.finished for node in self.nodes)
        appends = sum(node.appends for node in self.nodes)
        appended = sum(node.bytes for node in self.nodes)
        restart = self.hub.restart
        lost = by_status[TaskStatus.LOST.value]
        return {
            "store": journal.store_url,
            "nodes": self.settings.nodes,
            "tasks": self.settings.tasks,
            "by_status": by_status,
            "lost": lost,
            "lost_expected": len(silent_tasks),
            "ended_by_hub": len(ended_by_hub),
            "lease_seconds": self.settings.lease,
            "memory_budget": self.settings.memory_budget,
            "tasks_per_second": finished / streaming,
            "appends": appends,
            "appends_per_second": appends / streaming,
            "megabytes_per_second": appended / streaming / 1e6,
            "bytes_written": written,
            "bytes_kept": kept,
            "bytes_dropped": dropped,
            "bytes_released": released,
            "bytes_missing": missing,
            "error_lines_shown": errors_shown,
            "error_lines": errors_total,
            "error_lines_released": errors_released,
            "append_p50_ns": _percentile(latencies, 0.50),
            "append_p99_ns": _percentile(latencies, 0.99),
            "peak_rss_bytes": _peak_rss(),
            "seconds": total,
            "restart": None if restart is None else {
                "at_finished": restart.at_finished,
                "in_flight": restart.in_flight,
                "reattached": restart.reattached,
                "reopen_seconds": restart.reopen_seconds,
                "recovered_seconds": restart.recovered_seconds,
            },
        }


def _percentile(sorted_values: list[int], fraction: float) -> int:
    if not sorted_values:
        return 0
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))]


def _peak_rss() -> Optional[int]:
    if not _HAVE_RESOURCE:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KB on Linux
