"""Property tests: both buffers behave exactly like the reference model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference_model import ReferenceBuffer

# Small capacities make every wrap-around and border case likely; the larger
# ones cross the compiled buffer's first allocation (256 bytes) and its
# geometric growth.
capacities = st.one_of(st.integers(0, 40), st.integers(0, 2_000))
chunks = st.lists(st.binary(max_size=3_000) | st.binary(max_size=20), max_size=40)
containers = st.sampled_from([bytes, bytearray, memoryview])

MARKER = "<{dropped} cut>"


@settings(max_examples=300)
@given(head=capacities, tail=capacities, chunks=chunks, data=st.data())
def test_matches_reference_model(buffer_cls, head, tail, chunks, data):
    buf = buffer_cls(head, tail)
    model = ReferenceBuffer(head, tail)
    for chunk in chunks:
        wrap = data.draw(containers)
        buf.append(wrap(chunk))
        model.append(chunk)
        assert (buf.total, buf.dropped, len(buf)) == (model.total, model.dropped, len(model))
    assert buf.head() == model.head()
    assert buf.tail() == model.tail()
    assert buf.render(MARKER) == model.render(MARKER)
    assert buf.head_capacity == head and buf.tail_capacity == tail


@settings(max_examples=200)
@given(head=capacities, tail=capacities, chunks=chunks)
def test_twins_agree_byte_for_byte(both_buffer_classes, head, tail, chunks):
    compiled, pure = (cls(head, tail) for cls in both_buffer_classes)
    for chunk in chunks:
        compiled.append(chunk)
        pure.append(chunk)
    assert compiled.snapshot() == pure.snapshot()
    assert compiled.render() == pure.render()
    assert compiled.text() == pure.text()
    assert repr(compiled) == repr(pure)


def test_a_chunk_larger_than_everything(buffer_cls):
    buf = buffer_cls(3, 4)
    buf.append(b"0123456789abcdef")
    assert (buf.head(), buf.tail(), buf.dropped, len(buf)) == (b"012", b"cdef", 9, 7)
    assert buf.render() == b"012\n[... 9 bytes omitted ...]\ncdef"


def test_no_marker_while_nothing_is_dropped(buffer_cls):
    buf = buffer_cls(4, 4)
    buf.append(b"12345678")
    assert buf.dropped == 0
    assert buf.render() == b"12345678"
    buf.append(b"9")
    assert buf.render() == b"1234\n[... 1 bytes omitted ...]\n6789"


def test_zero_capacities_count_everything_as_dropped(buffer_cls):
    buf = buffer_cls(0, 0)
    for _ in range(3):
        buf.append(b"abc")
    assert (buf.total, buf.dropped, len(buf), buf.head(), buf.tail()) == (9, 9, 0, b"", b"")
    assert buf.render(MARKER) == b"<9 cut>"


def test_memory_grows_with_what_was_written(buffer_cls):
    import sys

    buf = buffer_cls(20_000, 20_000)
    empty = sys.getsizeof(buf)
    buf.append(b"x" * 100)
    # A task that printed 100 bytes must not cost the full 40 KB.
    assert sys.getsizeof(buf) - empty < 1_024
    for _ in range(1_000):
        buf.append(b"y" * 1_000)
    # Full, it holds head + tail and a bounded overhead, however much was written.
    assert 40_000 <= sys.getsizeof(buf) - empty < 40_000 * 1.5
    assert len(buf) == 40_000


def test_equality_and_pickle(buffer_cls):
    import pickle

    buf = buffer_cls(5, 5)
    buf.append(b"hello, world, hello")
    clone = pickle.loads(pickle.dumps(buf))
    assert clone == buf and type(clone) is buffer_cls
    clone.append(b"!")
    assert clone != buf
    assert buffer_cls(1, 2) != buffer_cls(2, 1)
    with pytest.raises(TypeError):
        hash(buf)  # mutable


@settings(max_examples=200)
@given(head=st.integers(0, 30), tail=st.integers(0, 30), chunks=chunks, data=st.data())
def test_read_from_delivers_everything_held_and_counts_the_rest(buffer_cls, head, tail, chunks, data):
    buf = buffer_cls(head, tail)
    model = ReferenceBuffer(head, tail)
    offset = 0
    delivered = bytearray()
    skipped = 0
    for chunk in chunks:
        buf.append(chunk)
        model.append(chunk)
        if data.draw(st.booleans()):
            # A follower catching up: every byte is either delivered, in
            # order and at its true position, or counted as skipped.
            while True:
                position, got = buf.read_from(offset)
                assert position >= offset
                assert got == bytes(model.data[position : position + len(got)])
                skipped += position - offset
                delivered += got
                offset = position + len(got)
                if not got and position == offset:
                    break
    assert offset <= buf.total
    assert len(delivered) + skipped == offset


def test_read_from_rejects_bad_offsets(buffer_cls):
    buf = buffer_cls(2, 2)
    buf.append(b"abc")
    with pytest.raises(ValueError, match="past the end"):
        buf.read_from(4)
    with pytest.raises(ValueError, match=">= 0"):
        buf.read_from(-1)
    assert buf.read_from(3) == (3, b"")
