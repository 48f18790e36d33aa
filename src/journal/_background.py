"""The journal's one background thread: sweeps, checkpoints, the memory budget."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any

__all__ = ["Maintenance"]

log = logging.getLogger("journal")


class Maintenance:
    """Calls ``journal.sweep()`` every ``sweep_every`` seconds and
    ``journal.checkpoint()`` every ``checkpoint_every`` (0: never).

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
        tick = min(intervals)
        next_sweep = next_checkpoint = time.monotonic()
        while not self._stop.wait(tick):
            journal = journal_ref()
            if journal is None:
                return
            now = time.monotonic()
            jobs = []
            if checkpoint_every and now >= next_checkpoint:
                jobs.append(journal.checkpoint)
                next_checkpoint = now + checkpoint_every
            if sweep_every and now >= next_sweep:
                jobs.append(journal.sweep)
                next_sweep = now + sweep_every
            for job in jobs:
                try:
                    job()
                except Exception:  # noqa: BLE001 - the thread must outlive one bad pass
                    log.exception("journal %s failed; retrying in %.1f s", job.__name__, tick)
            del journal, jobs

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def stop(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()
