"""Bad input gets a clear exception, and leaves the buffer as it was."""

from __future__ import annotations

import array

import pytest

from journal.errors import JournalError, StreamSealed


def _state(buf):
    return buf.snapshot()


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        ("text", TypeError, r"not str: encode it first"),
        (42, TypeError, r"not int"),
        (None, TypeError, r"not NoneType"),
        ([1, 2], TypeError, r"not list"),
        (memoryview(b"abcdef")[::2], BufferError, r"C-contiguous"),
    ],
)
def test_rejected_appends_change_nothing(buffer_cls, bad, error, message):
    buf = buffer_cls(4, 4)
    buf.append(b"0123456789")
    before = _state(buf)
    with pytest.raises(error, match=message):
        buf.append(bad)
    assert _state(buf) == before


def test_other_contiguous_buffers_are_appended_as_raw_bytes(buffer_cls):
    buf = buffer_cls(100, 0)
    numbers = array.array("i", [1, 2, 3])
    buf.append(numbers)
    buf.append(memoryview(b"abcdef").cast("B", (2, 3)))
    buf.append(bytearray(b"!"))
    assert buf.head() == numbers.tobytes() + b"abcdef!"


def test_the_appended_object_is_copied(buffer_cls):
    buf = buffer_cls(4, 4)
    source = bytearray(b"abcdefghijkl")
    buf.append(source)
    source[:] = b"X" * 12
    assert buf.render(marker="|") == b"abcd|ijkl"


@pytest.mark.parametrize(
    ("head", "tail", "error", "message"),
    [
        (-1, 4, ValueError, r"head capacity must be >= 0, got -1"),
        (4, -5, ValueError, r"tail capacity must be >= 0, got -5"),
        (1.5, 4, TypeError, r"head capacity must be an int, not float"),
        (4, "10", TypeError, r"tail capacity must be an int, not str"),
        (4, 1 << 41, ValueError, r"tail capacity must be <="),
    ],
)
def test_bad_capacities(buffer_cls, head, tail, error, message):
    with pytest.raises(error, match=message):
        buffer_cls(head, tail)


def test_sealed_stream_refuses_appends_but_keeps_reading(buffer_cls):
    buf = buffer_cls(4, 4)
    buf.append(b"0123456789")
    assert not buf.sealed
    buf.seal()
    before = _state(buf)
    assert buf.sealed
    with pytest.raises(StreamSealed, match="sealed") as caught:
        buf.append(b"late")
    assert isinstance(caught.value, JournalError)
    assert _state(buf) == before
    assert buf.render(marker="|") == b"0123|6789"
    buf.seal()  # sealing twice is harmless
    assert buf.sealed


def test_bad_marker_templates(buffer_cls):
    buf = buffer_cls(1, 1)
    buf.append(b"abc")
    with pytest.raises(ValueError, match="only field is"):
        buf.render(marker="{lines} cut")
    with pytest.raises(TypeError, match="marker must be a str"):
        buf.render(marker=b"bytes")
    assert buf.render(marker="") == b"ac"
