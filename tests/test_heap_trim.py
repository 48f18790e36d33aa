"""The maintenance thread gives freed heap memory back (glibc's malloc_trim)."""

from __future__ import annotations

import sys
import threading
import time

import pytest

from journal import _background, _heap

glibc = pytest.mark.skipif(not _heap.HeapTrim().available,
                           reason="no malloc_trim here (not glibc)")


def _rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


@glibc
def test_a_trim_returns_what_many_threads_freed(buffer_cls):
    # 16 threads each fill and free buffers, keeping one in every 50 alive,
    # as finished tasks scattered among running ones: glibc keeps the freed
    # rest in its arenas until trimmed.
    kept, chunk = [], b"x" * 4096

    def churn():
        for n in range(400):
            buf = buffer_cls(20_000, 20_000)
            for _ in range(10):
                buf.append(chunk)
            if n % 50 == 0:
                kept.append(buf)

    threads = [threading.Thread(target=churn) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    trim = _heap.HeapTrim()
    trim._last -= _heap.TRIM_EVERY
    before = _rss()
    assert trim.maybe()
    assert _rss() < before
    assert not trim.maybe()  # not again within TRIM_EVERY
    assert len(kept) == 16 * 8


@pytest.mark.skipif(sys.platform != "linux", reason="glibc only")
def test_the_maintenance_thread_trims_after_its_passes(monkeypatch, make_journal):
    calls = []

    class Counting(_heap.HeapTrim):
        def maybe(self):
            calls.append(time.monotonic())
            return False

    monkeypatch.setattr(_background, "HeapTrim", Counting)
    journal = make_journal(sweep_interval=0.01)
    deadline = time.monotonic() + 5
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(calls) >= 3
    journal.close()
