"""snapshot()/restore(): a faithful round trip, and clear errors on bad input."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from journal.errors import CorruptSnapshot, JournalError


def _filled(buffer_cls, head=8, tail=8, data=b"the quick brown fox jumps over"):
    buf = buffer_cls(head, tail)
    buf.append(data)
    return buf


@settings(max_examples=150)
@given(
    head=st.integers(0, 50),
    tail=st.integers(0, 50),
    chunks=st.lists(st.binary(max_size=120), max_size=12),
    sealed=st.booleans(),
)
def test_round_trip_restores_an_equal_buffer(buffer_cls, head, tail, chunks, sealed):
    buf = buffer_cls(head, tail)
    for chunk in chunks:
        buf.append(chunk)
    if sealed:
        buf.seal()
    copy = buffer_cls.restore(buf.snapshot())
    assert copy == buf
    assert (copy.head(), copy.tail(), copy.total, copy.dropped, copy.sealed) == (
        buf.head(), buf.tail(), buf.total, buf.dropped, buf.sealed
    )
    if not sealed:
        # A restored buffer carries on exactly as the original would.
        buf.append(b"0123456789" * 7)
        copy.append(b"0123456789" * 7)
        assert copy == buf


def test_snapshots_cross_between_the_twins(both_buffer_classes):
    compiled, pure = both_buffer_classes
    buf = _filled(compiled)
    assert pure.restore(buf.snapshot()).snapshot() == buf.snapshot()
    assert compiled.restore(_filled(pure).snapshot()) == buf


def test_restore_accepts_bytes_like(buffer_cls):
    snap = _filled(buffer_cls).snapshot()
    assert buffer_cls.restore(bytearray(snap)) == buffer_cls.restore(memoryview(snap))


@pytest.mark.parametrize("cut", [0, 1, 10, 47, 52, -1, -4])
def test_truncated_snapshot_is_rejected(buffer_cls, cut):
    snap = _filled(buffer_cls).snapshot()
    with pytest.raises(CorruptSnapshot, match="truncated"):
        buffer_cls.restore(snap[:cut])


def test_every_flipped_bit_is_detected(buffer_cls):
    snap = _filled(buffer_cls).snapshot()
    for position in range(len(snap)):
        for bit in (0x01, 0x80):
            bad = bytearray(snap)
            bad[position] ^= bit
            with pytest.raises(CorruptSnapshot):
                buffer_cls.restore(bytes(bad))


def test_foreign_data_and_newer_versions_are_named(buffer_cls):
    with pytest.raises(CorruptSnapshot, match="not a HeadTailBuffer snapshot"):
        buffer_cls.restore(b"SQLite format 3\x00" + bytes(80))
    snap = bytearray(_filled(buffer_cls).snapshot())
    snap[4] = 99
    with pytest.raises(CorruptSnapshot, match="version 99"):
        buffer_cls.restore(bytes(snap))


def test_checksummed_but_impossible_state_is_rejected(buffer_cls):
    # A snapshot that claims a tail while its head is not full: the checksum
    # is right, the state is not one a buffer can be in.
    header = struct.pack("<4sBBHQQQQQ", b"TJHB", 1, 0, 0, 8, 8, 6, 2, 4)
    body = header + b"ab" + b"cdef"
    with pytest.raises(CorruptSnapshot, match="inconsistent"):
        buffer_cls.restore(body + struct.pack("<I", zlib.crc32(body)))


def test_errors_belong_to_the_hierarchy(buffer_cls):
    with pytest.raises(JournalError):
        buffer_cls.restore(b"garbage")
    with pytest.raises(ValueError):  # CorruptSnapshot is a ValueError too
        buffer_cls.restore(b"garbage")
    with pytest.raises(TypeError, match="bytes, not str"):
        buffer_cls.restore("a string")
