"""The journal's one background thread: sweeps, checkpoints, the memory budget."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any

from journal._heap import HeapTrim

__all__ = ["Maintenance"]

log = logging.getLogger("journal")


#: The longest the thread sleeps at once, whatever the intervals: a wait
#: longer than threading.TIMEOUT_MAX raises OverflowError.
_LONGEST_TICK = 60.0


class Maintenance:
    """Runs ``journal._background_pass("sweep")`` every ``sweep_every``
    seconds and ``journal._background_pass("checkpoint")`` every
    ``checkpoint_every`` (0: never).  A pass counts and logs its own
    failures; this loop also survives anything that escapes one.

    It holds the journal weakly, so a journal nobody closed can still be
    collected; the thread then ends by itself.
    """

    def __init__(self, journal: Any, sweep_every: float, checkpoint_every: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run,
            args=(weakref.ref(journal), sweep_every, checkpoint_every),
            name="journal-maintenance",
            daemon=True,
        )
        self._thread.start()

    def _run(self, journal_ref: Any, sweep_every: float, checkpoint_every: float) -> None:
        intervals = [every for every in (sweep_every, checkpoint_every) if every]
        tick = min(min(intervals), _LONGEST_TICK)
        heap = HeapTrim()
        next_sweep = next_checkpoint = time.monotonic()
        while not self._stop.wait(tick):
            journal = journal_ref()
            if journal is None:
                return
            now = time.monotonic()
            jobs = []
            if checkpoint_every and now >= next_checkpoint:
                jobs.append("checkpoint")
                next_checkpoint = now + checkpoint_every
            if sweep_every and now >= next_sweep:
                jobs.append("sweep")
                next_sweep = now + sweep_every
            for job in jobs:
                try:
                    journal._background_pass(job)
                except Exception:  # noqa: BLE001 - the thread must outlive one bad pass
                    log.exception("journal %s failed; retrying in %.1f s", job, tick)
            del journal, jobs
            try:
                heap.maybe()  # what the passes and the streams freed goes back
            except Exception:  # noqa: BLE001 - never worth the thread
                log.exception("returning freed heap memory failed")

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def stop(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()
