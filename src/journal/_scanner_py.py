"""The highlight scanner of the pure buffer twin.

Fed, in stream order, the head once and then every byte that leaves the tail
into the dropped middle; keeps the matching lines and their context.  The compiled buffer has
the same scanner in C (``_Scanner`` in ``_buffer.pyx``) and the tests hold
the two to one reference model.  The caller serialises calls (the pure
buffer's lock).
"""

from __future__ import annotations

from typing import Optional, Union

from journal import _highlights as _hl

BytesLike = Union[bytes, bytearray, memoryview]


class Scanner:
    __slots__ = (
        "rules", "_patterns", "_window_size", "fed", "head_done", "head_lines", "lines",
        "_line_start", "_line_length", "_matched", "_carry", "_window", "_first",
        "_first_bytes", "_first_closed", "_recent", "_recent_bytes", "skipped",
        "_after_left", "_prev", "_max_before", "_pending", "window",
    )

    def __init__(self, rules: _hl.HighlightRules, state: Optional[_hl.ScannerState] = None):
        self.rules = rules
        self._patterns = rules.patterns
        self._window_size = max(len(p) for p in rules.patterns) - 1
        if state is None:
            state = _hl.ScannerState(rules, 0, False, 0, 0, 0, 0, False, b"", b"", (), False, (), 0)
        self.fed = state.fed
        self.head_done = state.head_done
        self.head_lines = state.head_lines
        self.lines = state.lines
        self._line_start = state.line_start
        self._line_length = state.line_length
        self._matched = state.matched
        self._carry = bytearray(state.carry)
        self._window = bytes(state.window)
        self._first = list(state.first)
        self._first_bytes = _text_bytes(self._first)
        self._first_closed = state.first_closed
        self._recent = list(state.recent)
        self._recent_bytes = _text_bytes(self._recent)
        self.skipped = state.skipped
        self._after_left = state.after_left
        self._prev = list(state.prev)
        self._max_before = rules.max_before
        # The scan window: bytes of the dropped middle not scanned yet.
        self._pending = bytearray()
        self.window = _hl.DEFAULT_WINDOW

    def defer(self, data: BytesLike) -> None:
        """Scan ``data`` (the next bytes of the dropped middle) later, with
        the bytes before and after it, in one pass: when the window fills, or
        when ``flush`` is called before anything reads this scanner."""
        if len(self._pending) + len(data) > self.window:
            self.flush()
            if len(data) > self.window:
                self.feed(data)
                return
        self._pending += data

    def flush(self) -> None:
        """Scan what ``defer`` holds; every reader of the scanner calls it first."""
        if self._pending:
            pending, self._pending = self._pending, bytearray()
            self.feed(pending)

    def finish_head(self, rest_of_head: BytesLike) -> None:
        """Scan the head bytes not scanned yet; eviction begins after them."""
        self.feed(rest_of_head, emit=False)
        self.head_done = True
        self.head_lines = self.lines

    def feed(self, data: BytesLike, emit: bool = True) -> None:
        """Scan the next bytes of the stream; keep matching lines when ``emit``.

        As in the compiled scanner, the next match is searched for and the
        lines before it are only counted."""
        data = bytes(data)
        # Patterns are folded already; bytes.lower() folds the text the same
        # way, and ``bytes.find`` is a fast search where a regex is not.
        folded = data.lower()
        size = len(data)
        if not self._matched and self._window:
            # A match may begin in the bytes the line had before these.
            reach = min(size, self._window_size)
            newline = data.find(b"\n", 0, reach)
            joined = (self._window + folded[: reach if newline < 0 else newline]).lower()
            self._matched = any(pattern in joined for pattern in self._patterns)
        position = 0
        while position < size:
            if self._matched or self._after_left:
                # A candidate line, or one owed as context: taken whole.
                newline = data.find(b"\n", position)
                end = size if newline < 0 else newline
                if not self._matched and self._find(folded, position, end) >= 0:
                    self._matched = True
                self._extend(data[position:end])
                if newline < 0:
                    break
                if emit:
                    self._end_line()
                self.lines += 1
                self._new_line(self.fed + newline + 1)
                position = newline + 1
                continue
            found = self._find(folded, position, size)
            if found < 0:
                self._pass_over(data, position, size, emit)
                break
            self._pass_over(data, position, found, emit)  # lines without a match
            self._matched = True
            position = found
        self.fed += size

    def _find(self, folded: bytes, start: int, end: int) -> int:
        hits = [at for at in (folded.find(p, start, end) for p in self._patterns) if at >= 0]
        return min(hits) if hits else -1

    def _extend(self, segment: bytes) -> None:
        """The current line goes on with ``segment``."""
        limit = self.rules.line_limit
        if len(self._carry) < limit:
            self._carry += segment[: limit - len(self._carry)]
        self._line_length += len(segment)
        if self._window_size:
            self._window = (self._window + segment)[-self._window_size :]

    def _new_line(self, start: int) -> None:
        self._line_start = start
        self._line_length = 0
        self._matched = False
        self._carry = bytearray()
        self._window = b""

    def _pass_over(self, data: bytes, start: int, end: int, emit: bool) -> None:
        """data[start:end] holds no match: count its lines, keep nothing but
        the last ones a rule may want as context before a later match."""
        last = data.rfind(b"\n", start, end)
        if last < 0:
            self._extend(data[start:end])
            return
        newlines = data.count(b"\n", start, end)
        if emit and self._max_before:
            self._hold_lines(data, start, last, newlines)
        self.lines += newlines
        self._new_line(self.fed + last + 1)
        self._extend(data[last + 1 : end])

    def _hold_lines(self, data: bytes, start: int, last: int, newlines: int) -> None:
        """Hold the last lines that end in data[start:last + 1]; ``newlines`` end there."""
        ends = [last]
        while len(ends) < min(newlines, self._max_before):
            ends.append(data.rfind(b"\n", start, ends[-1]))
        limit = self.rules.line_limit
        number = self.lines + newlines - len(ends) + 1
        for end in reversed(ends):
            begin = data.rfind(b"\n", start, end) + 1
            if begin == 0:
                # No newline before it here: it is the line the carry began.
                room = limit - len(self._carry)
                prefix = bytes(self._carry) + data[start : min(end, start + room)]
                length, line_start = self._line_length + end - start, self._line_start
            else:
                prefix = data[begin : min(end, begin + limit)]
                length, line_start = end - begin, self.fed + begin
            self._prev.append(_hl.entry(number, line_start, _hl.kept_text(prefix, length), True))
            number += 1
        del self._prev[: -self._max_before]

    def _end_line(self) -> None:
        """The current line of the dropped middle ended: keep it if a rule
        matches it (with its context) or if it is owed as context."""
        carry = bytes(self._carry)
        text = _hl.kept_text(carry, self._line_length)
        verdict = None
        if self._matched:
            verdict = self.rules.verdict(carry, self._line_length <= len(carry))
        if verdict is not None:
            before, after = verdict
            for raw in self._prev[-before:] if before else ():
                self._keep(raw)
            self._prev.clear()
            self._keep(_hl.entry(self.lines + 1, self._line_start, text))
            self._after_left = max(self._after_left - 1, after)
        elif self._after_left:
            self._prev.clear()
            self._keep(_hl.entry(self.lines + 1, self._line_start, text, True))
            self._after_left -= 1
        elif self._max_before:
            self._prev.append(_hl.entry(self.lines + 1, self._line_start, text, True))
            del self._prev[: -self._max_before]

    def _keep(self, raw: bytes) -> None:
        size = len(raw) - _hl.ENTRY_HEADER.size
        budget = self.rules.budget
        if not self._first_closed:
            if self._first_bytes + size <= budget // 2:
                self._first.append(raw)
                self._first_bytes += size
                return
            self._first_closed = True
        self._recent.append(raw)
        self._recent_bytes += size
        while self._first_bytes + self._recent_bytes > budget:
            oldest = self._recent.pop(0)
            self._recent_bytes -= len(oldest) - _hl.ENTRY_HEADER.size
            self.skipped += 1

    def kept(self) -> tuple[list[bytes], list[bytes]]:
        self.flush()
        return list(self._first), list(self._recent)

    def held(self) -> int:
        """Bytes this scanner holds, for ``__sizeof__``."""
        entries = len(self._first) + len(self._recent)
        return (len(self._pending) + self._first_bytes + self._recent_bytes + entries * _hl.ENTRY_HEADER.size
                + len(self._carry) + len(self._window) + sum(map(len, self._prev)))

    def state(self) -> _hl.ScannerState:
        self.flush()
        return _hl.ScannerState(
            self.rules, self.fed, self.head_done, self.head_lines, self.lines,
            self._line_start, self._line_length, self._matched, bytes(self._carry),
            self._window, tuple(self._first), self._first_closed, tuple(self._recent),
            self.skipped, self._after_left, tuple(self._prev),
        )


def _text_bytes(entries: list[bytes]) -> int:
    return sum(len(raw) - _hl.ENTRY_HEADER.size for raw in entries)
