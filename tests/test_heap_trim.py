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


# Threads that each allocate (malloc, not pymalloc: buffers of 40 KB), then
# the number of arenas glibc made, from malloc_info's XML (one <heap> each).
_ARENAS_SCRIPT = r"""
import ctypes, os, sys, tempfile, threading
from journal import _heap
capped = _heap.limit_arenas(int(sys.argv[1])) if sys.argv[1] != "none" else False
from journal._buffer_py import HeadTailBuffer
gate = threading.Barrier(8)
def work():
    gate.wait()
    keep = [HeadTailBuffer(20_000, 20_000) for _ in range(20)]
    for buf in keep:
        buf.append(b"x" * 30_000)
    gate.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
path = os.path.join(tempfile.mkdtemp(), "info.xml").encode()
out = libc.fopen(path, b"w")
libc.malloc_info(0, out)
libc.fclose(out)
print(capped, open(path).read().count("<heap nr="))
"""


def _arenas(cap, env=None):
    """(whether limit_arenas(cap) set the cap, arenas made); ``env`` is added
    to this environment without any MALLOC_ARENA_MAX of its own."""
    import os
    import subprocess

    base = {key: value for key, value in os.environ.items() if key != "MALLOC_ARENA_MAX"}
    run = subprocess.run([sys.executable, "-c", _ARENAS_SCRIPT, cap], capture_output=True,
                         text=True, check=True, env={**base, **(env or {})})
    capped, heaps = run.stdout.split()
    return capped == "True", int(heaps)


@glibc
def test_limit_arenas_caps_the_arenas_threads_get():
    assert _arenas("1") == (True, 1)
    capped, heaps = _arenas("none")
    assert not capped and heaps > 1  # eight threads at once: arenas of their own


@glibc
@pytest.mark.parametrize("setting", [{"MALLOC_ARENA_MAX": "3"},
                                     {"GLIBC_TUNABLES": "glibc.malloc.arena_max=3"}])
def test_limit_arenas_leaves_the_operators_setting_alone(setting):
    capped, heaps = _arenas("1", setting)
    assert not capped and heaps > 1


@pytest.mark.skipif(not _heap._glibc(), reason="glibc's tunables")
def test_the_thread_caches_go_off_in_the_environment_to_restart_in():
    off = _heap.NO_THREAD_CACHES
    environ = {"PATH": "/bin"}
    changed = _heap.environ_without_thread_caches(environ)
    assert changed == {"PATH": "/bin", "GLIBC_TUNABLES": off} and environ == {"PATH": "/bin"}
    assert _heap.thread_caches_off(changed) and not _heap.thread_caches_off(environ)
    # Other tunables are kept, in glibc's colon-separated list.
    changed = _heap.environ_without_thread_caches({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert changed == {"GLIBC_TUNABLES": f"glibc.malloc.arena_max=2:{off}"}
    assert _heap.thread_caches_off(changed)
    # A process restarted once, or an operator's own tcache setting: left alone.
    assert _heap.environ_without_thread_caches({"GLIBC_TUNABLES": off}) is None
    assert _heap.environ_without_thread_caches(
        {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=3"}) is None
    assert not _heap.thread_caches_off({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=3"})

