"""spill()/unspill(): storage released and merged back, nothing lost."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from journal.errors import CorruptSnapshot, StreamSpilled

steps = st.lists(
    st.one_of(st.binary(max_size=120), st.sampled_from(["spill", "unspill"])), max_size=40
)


@settings(max_examples=300)
@given(head=st.integers(0, 40), tail=st.integers(0, 40), steps=steps)
def test_spilling_changes_nothing_a_reader_can_see(buffer_cls, head, tail, steps):
    buf = buffer_cls(head, tail)
    plain = buffer_cls(head, tail)  # the same appends, never spilled
    spilled = None
    for step in steps:
        if step == "spill":
            if spilled is None:
                spilled = buf.spill()
                assert buf.spilled and len(buf) == 0
        elif step == "unspill":
            if spilled is not None:
                buf.unspill(spilled)
                spilled = None
                assert buf == plain
        else:
            buf.append(step)
            plain.append(step)
        assert buf.total == plain.total
        assert buf.dropped == plain.dropped  # exact even while spilled
    if spilled is not None:
        buf.unspill(spilled)
    assert buf == plain
    assert buf.render() == plain.render()


def test_spilled_buffers_release_memory_and_refuse_reads(buffer_cls):
    import sys

    buf = buffer_cls(20_000, 20_000)
    buf.append(b"x" * 100_000)
    full = sys.getsizeof(buf)
    snapshot = buf.spill()
    assert full - sys.getsizeof(buf) >= 40_000
    for read in (buf.head, buf.tail, buf.render, buf.text, buf.snapshot, buf.parts):
        with pytest.raises(StreamSpilled, match="read the stream through the journal"):
            read()
    buf.append(b"more")  # appends keep working
    with pytest.raises(ValueError, match="already spilled"):
        buf.spill()
    buf.unspill(snapshot)
    assert buf.tail().endswith(b"more") and buf.total == 100_004
    with pytest.raises(ValueError, match="not spilled"):
        buf.unspill(snapshot)


def test_unspill_checks_the_snapshot(buffer_cls):
    buf = buffer_cls(4, 4)
    buf.append(b"abcdefgh")
    other = buffer_cls(4, 4)
    other.append(b"zz")
    buf.spill()
    with pytest.raises(CorruptSnapshot, match="not the one this buffer spilled"):
        buf.unspill(other.snapshot())
    with pytest.raises(CorruptSnapshot, match="4\\+4"):
        buf.unspill(buffer_cls(5, 4).snapshot())
    assert buf.spilled


def test_sealed_spilled_buffer_stays_sealed(buffer_cls):
    from journal.errors import StreamSealed

    buf = buffer_cls(2, 2)
    buf.append(b"abcdef")
    buf.seal()
    snapshot = buf.spill()
    with pytest.raises(StreamSealed):
        buf.append(b"x")
    buf.unspill(snapshot)
    assert buf.sealed and buf.render(marker="|") == b"ab|ef"
