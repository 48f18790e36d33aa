"""Highlight lines: the rules, the kept lines, and the cold half of the scanner.

A head+tail cut drops the middle of a stream.  With highlight rules, every
complete line that ends in the dropped middle and matches a rule is kept,
with the context lines its rule asks for, within a byte budget, with its
line number and byte offset.  The rules themselves are data
(``_highlight_rules``).  The scanning itself is hot and lives in each buffer
twin (``_buffer.pyx`` and ``_scanner_py.py``); what they share, and what must
be written once so they cannot drift apart, is here: validating the rules,
deciding a line, cutting a kept line, the snapshot section and rendering.
"""

from __future__ import annotations

import struct
from typing import Iterable, NamedTuple, Optional, Union, cast

from journal._highlight_rules import DEFAULT_RULES, HighlightRule
from journal.errors import CorruptSnapshot

__all__ = ["DEFAULT_PATTERNS", "DEFAULT_RULES", "Highlight", "HighlightRule", "HighlightRules"]

#: The rules a journal uses unless told otherwise (``_highlight_rules``).
#: The name is the one config and older callers know.
DEFAULT_PATTERNS = DEFAULT_RULES
DEFAULT_BUDGET = 4096
DEFAULT_LINE_LIMIT = 512
MAX_PATTERNS = 32  # distinct texts the candidate filter looks for (32-bit masks)
MAX_RULES = 64
MAX_PATTERN_LENGTH = 64
MAX_UNLESS = 16
MAX_CONTEXT = 16
MAX_BUDGET = 1 << 30
# The scan window: a buffer holds up to this many bytes that left its tail
# before its scanner reads them in one pass (so an append does not pay for a
# scan of the few bytes it evicts).  A quarter of the tail, within bounds:
# "a little larger than the tail".
DEFAULT_WINDOW = 4096
MIN_WINDOW = 64


def window_for(tail: int) -> int:
    return max(MIN_WINDOW, min(DEFAULT_WINDOW, tail // 4))

# Anchors of a rule's match (bits).
ANCHOR_START = 1
ANCHOR_END = 2
ANCHOR_WORD = 4  # HighlightRule.word
_BLANKS = b" \t"

# One kept line is stored as a single bytes object: a 16-byte header
# (line number, byte offset) and the line's text.  Bytes are not tracked by
# the garbage collector, which keeps the compiled append free of GC work.
# Bit 63 of the line number marks a context line: no stream has 2**63 lines.
ENTRY_HEADER = struct.Struct("<QQ")
CONTEXT_BIT = 1 << 63
_U32 = struct.Struct("<I")

PatternLike = Union[str, bytes, bytearray, HighlightRule]


class Highlight(NamedTuple):
    """A line kept from the dropped middle of a stream."""

    #: 1-based line number in the whole stream.
    line: int
    #: Stream offset of the line's first byte.
    offset: int
    #: The line without its line ending, cut to ``line_limit`` bytes at a
    #: UTF-8 character boundary.
    text: bytes
    #: True for a line kept as context of a matching line, not for itself.
    context: bool = False


class Row(NamedTuple):
    """A rule as the scanners run it."""

    pattern: int  # index into HighlightRules.patterns
    anchor: int  # ANCHOR_START | ANCHOR_END | ANCHOR_WORD bits
    unless: tuple[tuple[bytes, bool], ...]  # (text, anchored at the start)
    before: int
    after: int


class HighlightRules:
    """What a buffer keeps from its dropped middle.

    ``patterns`` is a list of rules (``HighlightRule`` rows, see
    ``_highlight_rules``) or plain texts (str or bytes), each of which is a
    rule named after itself that matches lines containing it (ASCII
    case-insensitively; ``^`` and ``$`` anchor it).  ``budget`` bounds the
    bytes of kept line text, context lines included, and ``line_limit`` the
    bytes kept of any one line (rules look at those bytes only).  When more
    lines match than the budget holds, the earliest ones (up to half the
    budget) and the most recent ones are kept, and the others are counted:
    a line can only be pushed out by lines that came after it.
    """

    __slots__ = ("rules", "patterns", "rows", "max_before", "budget", "line_limit")

    # Set once in __init__ (through object.__setattr__: the class is immutable).
    rules: tuple[HighlightRule, ...]
    patterns: tuple[bytes, ...]  # the distinct folded texts the filter looks for
    rows: tuple[Row, ...]
    max_before: int
    budget: int
    line_limit: int

    def __init__(
        self,
        patterns: Iterable[PatternLike] = DEFAULT_RULES,
        budget: int = DEFAULT_BUDGET,
        line_limit: int = DEFAULT_LINE_LIMIT,
    ) -> None:
        # Duplicates would only cost time; keep the first of each.
        rules = tuple(dict.fromkeys(_rule(item) for item in _sequence(patterns)))
        if not rules:
            raise ValueError("highlight rules need at least one pattern")
        if len(rules) > MAX_RULES:
            raise ValueError(f"at most {MAX_RULES} highlight rules, got {len(rules)}")
        budget = _size(budget, "budget", 2, MAX_BUDGET)
        line_limit = _size(line_limit, "line_limit", 1, budget // 2)
        texts: dict[bytes, int] = {}
        rows = []
        for rule in rules:
            text, anchor = _anchored(rule.match)
            index = texts.setdefault(text.lower(), len(texts))
            unless = tuple(_exclusion(item) for item in rule.unless)
            anchor |= ANCHOR_WORD if rule.word else 0
            rows.append(Row(index, anchor, unless, rule.before, rule.after))
        if len(texts) > MAX_PATTERNS:
            raise ValueError(
                f"at most {MAX_PATTERNS} distinct highlight patterns, got {len(texts)}")
        object.__setattr__(self, "rules", rules)
        object.__setattr__(self, "patterns", tuple(texts))
        object.__setattr__(self, "rows", tuple(rows))
        object.__setattr__(self, "max_before", max(row.before for row in rows))
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

    def _key(self) -> tuple[tuple[HighlightRule, ...], int, int]:
        return (self.rules, self.budget, self.line_limit)

    def __repr__(self) -> str:
        names = ", ".join(rule.name for rule in self.rules)
        return f"HighlightRules([{names}], budget={self.budget}, line_limit={self.line_limit})"

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (HighlightRules, self._key())

    def verdict(self, text: bytes, complete: bool) -> Optional[tuple[int, int]]:
        """``(before, after)`` context lines if a line whose first bytes are
        ``text`` matches a rule (``complete``: ``text`` is the whole line,
        CR included), else None.  The compiled scanner has this in C."""
        folded = text.lower()
        start = len(text) - len(text.lstrip(_BLANKS))
        end = len(text.rstrip(b"\r \t")) if complete else -1
        found = False
        before = after = 0
        for row in self.rows:
            pattern = self.patterns[row.pattern]
            if not _row_matches(row, pattern, text, folded, start, end):
                continue
            if any(_contains(text, item, anchored, start) for item, anchored in row.unless):
                continue
            found = True
            before = max(before, row.before)
            after = max(after, row.after)
        return (before, after) if found else None


def _row_matches(
    row: Row, pattern: bytes, text: bytes, folded: bytes, start: int, end: int
) -> bool:
    word = row.anchor & ANCHOR_WORD
    if row.anchor & ANCHOR_END:
        if end < 0 or end - len(pattern) < (start if row.anchor & ANCHOR_START else 0):
            return False
        if row.anchor & ANCHOR_START and end - start != len(pattern):
            return False
        at = end - len(pattern)
        return folded.startswith(pattern, at) and (not word or _is_word(text, at, len(pattern)))
    if row.anchor & ANCHOR_START:
        return folded.startswith(pattern, start) and (
            not word or _is_word(text, start, len(pattern)))
    at = folded.find(pattern)
    while word and at >= 0 and not _is_word(text, at, len(pattern)):
        at = folded.find(pattern, at + 1)
    return at >= 0


def _is_word(text: bytes, at: int, size: int) -> bool:
    """text[at:at + size] is a word of its own (see HighlightRule.word)."""
    if at > 0 and _WORD[text[at - 1]] and not (
            _LOWER[text[at - 1]] and _UPPER[text[at]]):
        return False
    after = at + size
    return after >= len(text) or not (_WORD[text[after]] and not _LOWER[text[after]])


_UPPER = [65 <= byte <= 90 for byte in range(256)]
_LOWER = [97 <= byte <= 122 for byte in range(256)]
_WORD = [_UPPER[byte] or _LOWER[byte] or 48 <= byte <= 57 or byte == 95 for byte in range(256)]


def _contains(text: bytes, item: bytes, anchored: bool, start: int) -> bool:
    return text.startswith(item, start) if anchored else item in text


def _rule(item: object) -> HighlightRule:
    if isinstance(item, HighlightRule):
        return _checked_rule(item)
    if isinstance(item, str):
        raw = item.encode("utf-8", "surrogateescape")
    elif isinstance(item, (bytes, bytearray)):
        raw = bytes(item)
    else:
        raise TypeError(
            f"a highlight pattern is str, bytes or HighlightRule, not {type(item).__name__}")
    # A plain text folds like the scanners fold (ASCII only) and names itself.
    text = raw.lower().decode("utf-8", "surrogateescape")
    return _checked_rule(HighlightRule(text, text))


def _checked_rule(rule: HighlightRule) -> HighlightRule:
    name, match, unless, before, after, word = rule
    if not isinstance(name, str) or not 1 <= len(_raw(name)) <= MAX_PATTERN_LENGTH:
        raise ValueError(f"a highlight rule's name is a str of 1 to 64 bytes, got {name!r}")
    if not isinstance(match, str):
        raise TypeError(f"highlight rule {name!r}: match is a str, not {type(match).__name__}")
    _anchored(match)  # raises on a bad text
    if isinstance(unless, (str, bytes)) or not isinstance(unless, (tuple, list)):
        raise TypeError(f"highlight rule {name!r}: unless is a tuple of str, got {unless!r}")
    if len(unless) > MAX_UNLESS:
        raise ValueError(f"highlight rule {name!r}: at most {MAX_UNLESS} unless texts")
    for item in unless:
        if not isinstance(item, str):
            raise TypeError(f"highlight rule {name!r}: an unless text is a str, got {item!r}")
        _exclusion(item)
    for field, value in (("before", before), ("after", after)):
        _size(value, f"rule {name!r} {field}", 0, MAX_CONTEXT)
    if not isinstance(word, bool):
        raise TypeError(f"highlight rule {name!r}: word is a bool, not {type(word).__name__}")
    return HighlightRule(name, match, tuple(unless), before, after, word)


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _checked_text(raw: bytes, shown: str) -> bytes:
    if not 1 <= len(raw) <= MAX_PATTERN_LENGTH:
        raise ValueError(
            f"a highlight pattern is 1 to {MAX_PATTERN_LENGTH} bytes, got {len(raw)}: {shown!r}"
        )
    if b"\n" in raw:
        raise ValueError(f"a highlight pattern cannot contain a newline: {shown!r}")
    return raw


def _anchored(match: str) -> tuple[bytes, int]:
    raw = _raw(match)
    anchor = 0
    if raw.startswith(b"^") and len(raw) > 1:
        raw, anchor = raw[1:], anchor | ANCHOR_START
    if raw.endswith(b"$") and len(raw) > 1:
        raw, anchor = raw[:-1], anchor | ANCHOR_END
    return _checked_text(raw, match), anchor


def _exclusion(item: str) -> tuple[bytes, bool]:
    raw = _raw(item)
    if raw.startswith(b"^") and len(raw) > 1:
        return _checked_text(raw[1:], item), True
    return _checked_text(raw, item), False


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


def entry(line: int, offset: int, text: bytes, context: bool = False) -> bytes:
    return ENTRY_HEADER.pack(line | (CONTEXT_BIT if context else 0), offset) + text


def is_context(raw: bytes) -> bool:
    return bool(raw[7] & 0x80)  # the top byte of the little-endian line number


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
    return Highlight(line & ~CONTEXT_BIT, offset, raw[ENTRY_HEADER.size :], bool(line >> 63))


class ScannerState(NamedTuple):
    """Everything a scanner knows, as a snapshot carries it."""

    rules: HighlightRules
    fed: int  # stream bytes scanned so far: the head, then the dropped middle
    head_done: bool  # the whole head has been scanned (eviction has begun)
    head_lines: int  # newlines in the head, once head_done
    lines: int  # newlines in the scanned bytes
    line_start: int  # stream offset of the line being scanned
    line_length: int  # its bytes scanned so far
    matched: bool  # it contains a pattern: a candidate, decided at its end
    carry: bytes  # its first bytes, up to line_limit
    window: bytes  # its last bytes, shorter than the longest pattern
    first: tuple[bytes, ...]  # entries: the earliest kept lines
    first_closed: bool  # a line did not fit in ``first``: it takes no more
    recent: tuple[bytes, ...]  # entries: the most recent kept lines
    skipped: int  # matching lines not kept
    after_left: int = 0  # context lines still owed to the last matching line
    prev: tuple[bytes, ...] = ()  # context entries: the last lines not kept, for ``before``


# Snapshot section (after the tail bytes, when flag bit 1 is set),
# little-endian: budget u32, line limit u32, rule count u8, matched u8,
# head_done u8, first_closed u8, fed, head_lines, lines, line_start,
# line_length, skipped (u64 each), first count u32, recent count u32, carry
# length u32, window length u8; then the rules, carry, window, and the
# entries (u32 length + bytes each).  Format version 2 had plain patterns
# (u8 length + bytes each) for rules; version 3 has, for each rule, its name,
# match and unless texts (u8 length + bytes each, the unless texts after
# their u8 count) and before, after, word (u8 each), and after the entries
# after_left u8, prev count u8 and the prev entries.
_SECTION = struct.Struct("<IIBBBBQQQQQQIIIB")
_U8 = struct.Struct("<B")
_TRAILER = struct.Struct("<BB")


def encode_section(state: ScannerState) -> bytes:
    rules = state.rules
    out = [
        _SECTION.pack(
            rules.budget, rules.line_limit, len(rules.rules), state.matched,
            state.head_done, state.first_closed, state.fed, state.head_lines,
            state.lines, state.line_start, state.line_length, state.skipped,
            len(state.first), len(state.recent), len(state.carry), len(state.window),
        )
    ]
    for rule in rules.rules:
        out += _texts(rule.name, rule.match)
        out += (_U8.pack(rule.before), _U8.pack(rule.after), _U8.pack(rule.word),
                _U8.pack(len(rule.unless)))
        out += _texts(*rule.unless)
    out += (state.carry, state.window)
    for raw in state.first + state.recent:
        out += (_U32.pack(len(raw)), raw)
    out.append(_TRAILER.pack(state.after_left, len(state.prev)))
    for raw in state.prev:
        out += (_U32.pack(len(raw)), raw)
    return b"".join(out)


def _texts(*texts: str) -> list[bytes]:
    out: list[bytes] = []
    for text in texts:
        raw = _raw(text)
        out += (_U8.pack(len(raw)), raw)
    return out


def decode_section(raw: bytes, start: int, total: int, version: int) -> tuple[ScannerState, int]:
    """Parse a section at ``raw[start:]``; return it and where it ended."""
    reader = _Reader(raw, start)
    (budget, line_limit, count, matched, head_done, first_closed, fed, head_lines, lines,
     line_start, line_length, skipped, n_first, n_recent, carry_len, window_len) = (
        reader.unpack(_SECTION))
    patterns: list[PatternLike] = []
    for _ in range(count):
        if version < 3:
            patterns.append(reader.take(reader.unpack(_U8)[0]))
            continue
        name, match = (reader.text() for _ in range(2))
        before, after, word, n_unless = (reader.unpack(_U8)[0] for _ in range(4))
        unless = tuple(reader.text() for _ in range(n_unless))
        if word > 1:
            raise CorruptSnapshot("snapshot highlight section is inconsistent: a flag is neither 0 nor 1")
        patterns.append(HighlightRule(name, match, unless, before, after, bool(word)))
    try:
        rules = HighlightRules(patterns, budget, line_limit)
    except (TypeError, ValueError) as exc:
        raise CorruptSnapshot(f"snapshot has bad highlight rules: {exc}") from None
    carry = reader.take(carry_len)
    window = reader.take(window_len)
    entries = [reader.take(reader.unpack(_U32)[0]) for _ in range(n_first + n_recent)]
    after_left, n_prev = reader.unpack(_TRAILER) if version >= 3 else (0, 0)
    prev = tuple(reader.take(reader.unpack(_U32)[0]) for _ in range(n_prev))
    state = ScannerState(
        rules, fed, bool(head_done), head_lines, lines, line_start, line_length, bool(matched),
        carry, window, tuple(entries[:n_first]), bool(first_closed), tuple(entries[n_first:]),
        skipped, after_left, prev,
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

    def text(self) -> str:
        return self.take(self.unpack(_U8)[0]).decode("utf-8", "surrogateescape")


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
    if state.after_left > max(row.after for row in rules.rows):
        problems.append("more context lines are owed than any rule asks for")
    if len(state.prev) > rules.max_before:
        problems.append("more lines are held for context than any rule asks for")
    held = 0
    for raw in state.prev:
        if len(raw) < ENTRY_HEADER.size or len(raw) - ENTRY_HEADER.size > rules.line_limit:
            problems.append("a line held for context has a bad size")
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
_CONTEXT = "[line {line}] | "  # a context line, told from a match by the bar
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
        label = _CONTEXT if item.context else _LINE
        out += (label.format(line=item.line).encode("ascii"), item.text, b"\n")
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
