"""text(): UTF-8 decoding that never turns a cut character into mojibake."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

# One character of each UTF-8 length: 1, 2, 3 and 4 bytes.
ALPHABET = "a\u00e9\u20ac\U0001f600"


@settings(max_examples=400)
@given(
    text=st.text(alphabet=ALPHABET, max_size=60),
    head=st.integers(0, 40),
    tail=st.integers(0, 40),
    split=st.integers(1, 7),
)
def test_valid_utf8_never_decodes_to_replacement(buffer_cls, text, head, tail, split):
    data = text.encode()
    buf = buffer_cls(head, tail)
    for start in range(0, len(data), split):
        buf.append(data[start : start + split])
    shown = buf.text(marker="|{dropped}|")
    assert "\ufffd" not in shown
    if buf.dropped == 0:
        assert shown == text
        return
    before, counted, after = shown.split("|")
    # Whole characters only, from the right places, and every cut byte counted.
    assert text.startswith(before) and text.endswith(after)
    assert int(counted) == len(data) - len(before.encode()) - len(after.encode())


def test_cut_characters_are_dropped_and_counted(buffer_cls):
    buf = buffer_cls(4, 5)
    buf.append("ab\u20acxyz\u20ac\U0001f600".encode())  # 2+3+3+3+4 = 15 bytes
    assert buf.head() == b"ab\xe2\x82"  # the first euro sign, cut
    assert buf.tail() == b"\xac\xf0\x9f\x98\x80"  # the last byte of the second one
    assert buf.dropped == 6
    # The cut pieces are not decoded; the marker counts them with the middle.
    assert buf.text(marker="[{dropped}]") == "ab[9]\U0001f600"


def test_invalid_bytes_inside_the_kept_parts_are_replaced(buffer_cls):
    buf = buffer_cls(10, 10)
    buf.append(b"ok\xffok")
    assert buf.text() == "ok\ufffdok"
