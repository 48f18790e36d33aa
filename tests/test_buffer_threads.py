"""Many threads appending to shared buffers never tear an append.

Every chunk is 16 bytes (thread number, sequence number, a fill byte) and the
capacities are multiples of 16, so if appends are atomic the head and the
tail are sequences of whole chunks, each thread's in order.
"""

from __future__ import annotations

import struct
import sys
import threading

import pytest

CHUNK = struct.Struct("<IQ4s")  # 16 bytes
THREADS = 16
PER_THREAD = 3_000
BUFFERS = 8


def _chunk(thread, seq):
    return CHUNK.pack(thread, seq, bytes([65 + thread % 26]) * 4)


def _decode(data):
    assert len(data) % CHUNK.size == 0
    chunks = [CHUNK.unpack_from(data, at) for at in range(0, len(data), CHUNK.size)]
    for thread, _, fill in chunks:
        assert fill == bytes([65 + thread % 26]) * 4, "a torn append"
    return chunks


def _check_order(chunks):
    last = {}
    for thread, seq, _ in chunks:
        assert seq > last.get(thread, -1), "a thread's appends out of order"
        last[thread] = seq


@pytest.fixture
def frequent_thread_switches():
    # Switch threads every microsecond instead of every 5 ms, so that an
    # append that is not atomic gets interrupted in the middle.
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


@pytest.mark.usefixtures("frequent_thread_switches")
def test_sixteen_threads_append_consistently(buffer_cls):
    buffers = [buffer_cls(16 * 64, 16 * 256) for _ in range(BUFFERS)]
    start = threading.Barrier(THREADS + 2)  # writers, reader, this thread
    stop_reading = threading.Event()
    reader_errors = []

    def writer(thread):
        start.wait()
        for seq in range(PER_THREAD):
            buffers[(thread + seq) % BUFFERS].append(_chunk(thread, seq))

    def reader():
        start.wait()
        while not stop_reading.is_set():
            for buf in buffers:
                copy = buffer_cls.restore(buf.snapshot())
                try:
                    assert copy.total == len(copy) + copy.dropped
                    assert copy.total % CHUNK.size == 0
                    _decode(copy.head())
                    _decode(copy.tail())
                except AssertionError as exc:  # pragma: no cover - reported below
                    reader_errors.append(exc)
                    return

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(THREADS)]
    threads.append(threading.Thread(target=reader))
    for thread in threads:
        thread.start()
    start.wait()
    for thread in threads[:-1]:
        thread.join()
    stop_reading.set()
    threads[-1].join()

    assert not reader_errors, reader_errors[0]
    assert sum(buf.total for buf in buffers) == THREADS * PER_THREAD * CHUNK.size
    seen_per_buffer = THREADS * PER_THREAD // BUFFERS
    for buf in buffers:
        assert buf.total == seen_per_buffer * CHUNK.size
        head, tail = _decode(buf.head()), _decode(buf.tail())
        assert len(head) == 64 and len(tail) == 256
        assert buf.dropped == (seen_per_buffer - 64 - 256) * CHUNK.size
        _check_order(head)
        _check_order(tail)
        # Nothing is held twice: a chunk is in the head or the tail, not both.
        assert not {c[:2] for c in head} & {c[:2] for c in tail}
