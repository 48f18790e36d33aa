"""Highlight lines: the rules, the kept lines, and the cold half of the scanner.

A head+tail cut drops the middle of a stream.  With highlight rules, every
complete line that ends in the dropped middle and contains one of the rules'
patterns (ASCII case-insensitive) is kept, within a byte budget, with its line
number and byte offset.  The scanning itself is hot and lives in each buffer
twin (``_buffer.pyx`` and ``_scanner_py.py``); what they share, and what must
be written once so they cannot drift apart, is here: validating the rules,
cutting a kept line, the order the reservoir keeps lines in, the snapshot
section and rendering.
"""

from __future__ import annotations

import struct
from typing import Iterable, NamedTuple, Optional, Union, cast

from journal.errors import CorruptSnapshot

__all__ = ["DEFAULT_PATTERNS", "Highlight", "HighlightRules"]

#: Patterns a journal looks for unless told otherwise.  ``warning`` is left
#: out on purpose: compilers print so many that they would crowd out errors.
DEFAULT_PATTERNS = ("error", "fatal", "exception", "traceback", "failed", "panic")
DEFAULT_BUDGET = 4096
DEFAULT_LINE_LIMIT = 512
MAX_PATTERNS = 32
MAX_PATTERN_LENGTH = 64
MAX_BUDGET = 1 << 30

# One kept line is stored as a single bytes object: a 16-byte header
# (line number, byte offset) and the line's text.  Bytes are not tracked by
# the garbage collector, which keeps the compiled append free of GC work.
ENTRY_HEADER = struct.Struct("<QQ")
_U32 = struct.Struct("<I")


class Highlight(NamedTuple):
    """A line kept from the dropped middle of a stream."""

    #: 1-based line number in the whole stream.
    line: int
    #: Stream offset of the line's first byte.
    offset: int
    #: The line without its line ending, cut to ``line_limit`` bytes at a
    #: UTF-8 character boundary.
    text: bytes


class HighlightRules:
    """What a buffer keeps from its dropped middle.

    ``patterns`` are matched ASCII case-insensitively anywhere in a line
    (str patterns are UTF-8 encoded); ``budget`` bounds the bytes of kept line
    text, and ``line_limit`` the bytes kept of any one line.  When more
    matching lines arrive than the budget holds, the earliest ones (up to
    half the budget) and the most recent ones are kept, and the others are
    counted.
    """

    __slots__ = ("patterns", "budget", "line_limit")

    # Set once in __init__ (through object.__setattr__: the class is immutable).
    patterns: tuple[bytes, ...]
    budget: int
    line_limit: int

    def __init__(
        self,
        patterns: Iterable[Union[str, bytes]] = DEFAULT_PATTERNS,
        budget: int = DEFAULT_BUDGET,
        line_limit: int = DEFAULT_LINE_LIMIT,
    ) -> None:
        folded = tuple(_pattern(item) for item in _sequence(patterns))
        if not folded:
            raise ValueError("highlight rules need at least one pattern")
        if len(folded) > MAX_PATTERNS:
            raise ValueError(f"at most {MAX_PATTERNS} highlight patterns, got {len(folded)}")
        budget = _size(budget, "budget", 2, MAX_BUDGET)
        line_limit = _size(line_limit, "line_limit", 1, budget // 2)
        # Duplicates would only cost time; keep the first of each.
        object.__setattr__(self, "patterns", tuple(dict.fromkeys(folded)))
        object.__setattr__(self, "budget", budget)
        object.__setattr__(self, "line_limit", line_limit)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("HighlightRules is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HighlightRules):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple[tuple[bytes, ...], int, int]:
        return (self.patterns, self.budget, self.line_limit)

    def __repr__(self) -> str:
        names = ", ".join(p.decode("utf-8", "replace") for p in self.patterns)
        return f"HighlightRules([{names}], budget={self.budget}, line_limit={self.line_limit})"

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (HighlightRules, self._key())


def _sequence(patterns: object) -> tuple[object, ...]:
    if isinstance(patterns, (str, bytes, bytearray)):
        raise TypeError("highlight patterns must be a list of patterns, not a single one")
    try:
        # A non-iterable raises the TypeError turned into the message below.
        return tuple(cast(Iterable[object], patterns))
    except TypeError:
        raise TypeError(
            f"highlight patterns must be a list of str or bytes, not {type(patterns).__name__}"
        ) from None


def _pattern(item: object) -> bytes:
    if isinstance(item, str):
        raw = item.encode("utf-8")
    elif isinstance(item, (bytes, bytearray)):
        raw = bytes(item)
    else:
        raise TypeError(f"a highlight pattern is str or bytes, not {type(item).__name__}")
    if not 1 <= len(raw) <= MAX_PATTERN_LENGTH:
        raise ValueError(
            f"a highlight pattern is 1 to {MAX_PATTERN_LENGTH} bytes, got {len(raw)}: {item!r}"
        )
    if b"\n" in raw:
        raise ValueError(f"a highlight pattern cannot contain a newline: {item!r}")
    return raw.lower()  # ASCII-only folding, like the scanners


def _size(value: object, name: str, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"highlight {name} must be an int, not {type(value).__name__}")
    if not minimum <= value <= maximum:
        raise ValueError(f"highlight {name} must be between {minimum} and {maximum}, got {value}")
    return value


def kept_text(prefix: bytes, line_length: int) -> bytes:
    """What is kept of a line: ``prefix`` is its first bytes (``line_limit`` at
    most) and ``line_length`` its full length without the newline."""
    if line_length > len(prefix):
        return prefix[: complete_prefix_len(prefix)]  # cut: never half a character
    if prefix.endswith(b"\r"):
        return prefix[:-1]
    return prefix


def complete_prefix_len(data: bytes) -> int:
    """Length of ``data`` without a trailing, incomplete UTF-8 sequence."""
    end = len(data)
    start = end - 1
    # A sequence is at most 4 bytes: a lead byte and up to 3 continuations.
    while start >= 0 and end - start <= 3 and 0x80 <= data[start] < 0xC0:
        start -= 1
    if start < 0:
        return end
    lead = data[start]
    if 0xC0 <= lead < 0xE0:
        needed = 2
    elif 0xE0 <= lead < 0xF0:
        needed = 3
    elif 0xF0 <= lead < 0xF8:
        needed = 4
    else:
        return end
    return start if end - start < needed else end


def entry(line: int, offset: int, text: bytes) -> bytes:
    return ENTRY_HEADER.pack(line, offset) + text


def split_entries(blob: bytes) -> list[bytes]:
    """The entries of a compiled scanner's ``kept_blob``: each after its u32 length."""
    entries = []
    position = 0
    while position < len(blob):
        (length,) = _U32.unpack_from(blob, position)
        entries.append(blob[position + 4 : position + 4 + length])
        position += 4 + length
    return entries


def decode_entry(raw: bytes) -> Highlight:
    line, offset = ENTRY_HEADER.unpack_from(raw)
    return Highlight(line, offset, raw[ENTRY_HEADER.size :])


class ScannerState(NamedTuple):
    """Everything a scanner knows, as a snapshot carries it."""

    rules: HighlightRules
    fed: int  # stream bytes scanned so far: the head, then the dropped middle
    head_done: bool  # the whole head has been scanned (eviction has begun)
    head_lines: int  # newlines in the head, once head_done
    lines: int  # newlines in the scanned bytes
    line_start: int  # stream offset of the line being scanned
    line_length: int  # its bytes scanned so far
    matched: bool  # it contains a pattern
    carry: bytes  # its first bytes, up to line_limit
    window: bytes  # its last bytes, shorter than the longest pattern
    first: tuple[bytes, ...]  # entries: the earliest kept lines
    first_closed: bool  # a line did not fit in ``first``: it takes no more
    recent: tuple[bytes, ...]  # entries: the most recent kept lines
    skipped: int  # matching lines not kept


# Snapshot section (format version 2, after the tail bytes, when flag bit 1
# is set), little-endian: budget u32, line limit u32, pattern count u8,
# matched u8, head_done u8, first_closed u8, fed, head_lines, lines,
# line_start, line_length, skipped (u64 each), first count u32, recent count
# u32, carry length u32, window length u8; then the patterns (u8 length +
# bytes each), carry, window, and the entries (u32 length + bytes each).
_SECTION = struct.Struct("<IIBBBBQQQQQQIIIB")
_U8 = struct.Struct("<B")


def encode_section(state: ScannerState) -> bytes:
    rules = state.rules
    out = [
        _SECTION.pack(
            rules.budget, rules.line_limit, len(rules.patterns), state.matched,
            state.head_done, state.first_closed, state.fed, state.head_lines,
            state.lines, state.line_start, state.line_length, state.skipped,
            len(state.first), len(state.recent), len(state.carry), len(state.window),
        )
    ]
    for pattern in rules.patterns:
        out += (_U8.pack(len(pattern)), pattern)
    out += (state.carry, state.window)
    for raw in state.first + state.recent:
        out += (_U32.pack(len(raw)), raw)
    return b"".join(out)


def decode_section(raw: bytes, start: int, total: int) -> tuple[ScannerState, int]:
    """Parse a section at ``raw[start:]``; return it and where it ended."""
    reader = _Reader(raw, start)
    (budget, line_limit, count, matched, head_done, first_closed, fed, head_lines, lines,
     line_start, line_length, skipped, n_first, n_recent, carry_len, window_len) = (
        reader.unpack(_SECTION))
    patterns = [reader.take(reader.unpack(_U8)[0]) for _ in range(count)]
    try:
        rules = HighlightRules(patterns, budget, line_limit)
    except (TypeError, ValueError) as exc:
        raise CorruptSnapshot(f"snapshot has bad highlight rules: {exc}") from None
    carry = reader.take(carry_len)
    window = reader.take(window_len)
    entries = [reader.take(reader.unpack(_U32)[0]) for _ in range(n_first + n_recent)]
    state = ScannerState(
        rules, fed, bool(head_done), head_lines, lines, line_start, line_length, bool(matched),
        carry, window, tuple(entries[:n_first]), bool(first_closed), tuple(entries[n_first:]),
        skipped,
    )
    _check_state(state, total, max(matched, head_done, first_closed))
    return state, reader.position


class _Reader:
    def __init__(self, raw: bytes, position: int) -> None:
        self.raw = raw
        self.position = position

    def take(self, size: int) -> bytes:
        end = self.position + size
        if end > len(self.raw):
            raise CorruptSnapshot("snapshot is truncated inside its highlight section")
        data = self.raw[self.position : end]
        self.position = end
        return data

    def unpack(self, layout: struct.Struct) -> tuple[int, ...]:
        return layout.unpack(self.take(layout.size))


def _check_state(state: ScannerState, total: int, biggest_flag: int) -> None:
    rules = state.rules
    longest = max(len(p) for p in rules.patterns)
    problems = []
    if biggest_flag > 1:
        problems.append("a flag is neither 0 nor 1")
    if state.fed > total or state.line_start > state.fed:
        problems.append("it scanned past the end of the stream")
    if state.line_start + state.line_length != state.fed:
        problems.append("the current line does not end where scanning stopped")
    if len(state.carry) != min(state.line_length, rules.line_limit):
        problems.append("the current line's kept bytes do not match its length")
    if len(state.window) != min(state.line_length, longest - 1):
        problems.append("the current line's window does not match its length")
    if state.head_lines > state.lines:
        problems.append("the head has more lines than the stream")
    held = 0
    for raw in state.first + state.recent:
        if len(raw) < ENTRY_HEADER.size or len(raw) - ENTRY_HEADER.size > rules.line_limit:
            problems.append("a kept line has a bad size")
            break
        held += len(raw) - ENTRY_HEADER.size
    if held > rules.budget:
        problems.append("the kept lines exceed their budget")
    if problems:
        raise CorruptSnapshot("snapshot highlight section is inconsistent: " + "; ".join(problems))


#: The marker of a buffer with highlight rules.  Fields: ``{dropped}``
#: bytes and ``{lines}`` newlines left out, ``{highlights}`` lines kept.
HIGHLIGHT_MARKER = (
    "\n[... {dropped} bytes, {lines} lines omitted; {highlights} highlighted lines follow ...]\n"
)
_LINE = "[line {line}] "
_SKIPPED = "[... {skipped} more highlighted lines not kept ...]\n"
_END = "[... end of highlights; the last {tail} bytes follow ...]\n"


def render_highlights(
    marker: object, dropped: int, lines: int, kept: list[Highlight], skipped: int,
    first_count: int, tail_length: int,
) -> bytes:
    """The marker, then each kept line, then a line that says the tail follows."""
    out = [_format(marker, dropped=dropped, lines=lines, highlights=len(kept)).encode("utf-8")]
    for index, item in enumerate(kept):
        if index == first_count and skipped:
            out.append(_SKIPPED.format(skipped=skipped).encode("ascii"))
        out += (_LINE.format(line=item.line).encode("ascii"), item.text, b"\n")
    if skipped and first_count == len(kept):
        out.append(_SKIPPED.format(skipped=skipped).encode("ascii"))
    if kept or skipped:
        out.append(_END.format(tail=tail_length).encode("ascii"))
    return b"".join(out)


def _format(marker: object, **fields: int) -> str:
    if not isinstance(marker, str):
        raise TypeError(f"marker must be a str template, not {type(marker).__name__}")
    try:
        return marker.format(**fields)
    except (KeyError, IndexError, ValueError) as exc:
        names = ", ".join("{" + name + "}" for name in fields)
        raise ValueError(f"bad marker template {marker!r}: its fields are {names} ({exc})") from None


def rules_or_none(value: Optional[HighlightRules]) -> Optional[HighlightRules]:
    if value is None or isinstance(value, HighlightRules):
        return value
    raise TypeError(f"highlights must be HighlightRules or None, not {type(value).__name__}")
