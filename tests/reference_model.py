"""The simplest possible head+tail buffer: keep everything, derive the rest.

The property tests hold both HeadTailBuffer implementations to this model.
"""

from __future__ import annotations


class ReferenceBuffer:
    def __init__(self, head: int, tail: int) -> None:
        self.head_capacity = head
        self.tail_capacity = tail
        self.data = bytearray()

    def append(self, chunk) -> None:
        self.data += bytes(chunk)

    def head(self) -> bytes:
        return bytes(self.data[: self.head_capacity])

    def tail(self) -> bytes:
        after_head = self.data[self.head_capacity :]
        if self.tail_capacity == 0:
            return b""
        return bytes(after_head[-self.tail_capacity :])

    @property
    def total(self) -> int:
        return len(self.data)

    def __len__(self) -> int:
        return len(self.head()) + len(self.tail())

    @property
    def dropped(self) -> int:
        return self.total - len(self)

    def render(self, marker: str) -> bytes:
        if self.dropped == 0:
            return bytes(self.data)
        return self.head() + marker.format(dropped=self.dropped).encode() + self.tail()


def reference_highlights(data: bytes, head: int, tail: int, rules):
    """What a buffer with ``rules`` keeps of ``data``'s dropped middle:
    ``(kept, skipped, dropped_lines)``, derived by reading the whole stream
    line by line rather than as bytes leave the tail."""
    from journal._highlights import Highlight, kept_text

    total = len(data)
    head_len = min(head, total)
    evicted_end = total - min(tail, total - head_len)  # where the held tail starts
    if evicted_end <= head_len:
        return [], 0, 0
    kept = []  # in the order they are kept
    held = []  # the last lines not kept, for a later match's ``before``
    owed = 0  # context lines owed to the last match
    depth = max(rule.before for rule in rules.rules)
    line_start = 0
    line_number = 1
    for position, byte in enumerate(data[:evicted_end]):
        if byte != 0x0A:
            continue
        if position >= head_len:  # a line is in the middle when its newline is
            line = data[line_start:position]
            prefix = line[: rules.line_limit]
            text = kept_text(prefix, len(line))
            found = [rule for rule in rules.rules if _rule_matches(rule, prefix, len(line))]
            if found:
                before = max(rule.before for rule in found)
                kept += held[max(0, len(held) - before) :] if before else []
                held = []
                kept.append(Highlight(line_number, line_start, text))
                owed = max(owed - 1, max(rule.after for rule in found))
            elif owed:
                held = []
                kept.append(Highlight(line_number, line_start, text, True))
                owed -= 1
            elif depth:
                held = (held + [Highlight(line_number, line_start, text, True)])[-depth:]
        line_start = position + 1
        line_number += 1
    first, first_bytes, closed = [], 0, False
    recent, recent_bytes, skipped = [], 0, 0
    for item in kept:
        if not closed and first_bytes + len(item.text) <= rules.budget // 2:
            first.append(item)
            first_bytes += len(item.text)
            continue
        closed = True
        recent.append(item)
        recent_bytes += len(item.text)
        while first_bytes + recent_bytes > rules.budget:
            recent_bytes -= len(recent.pop(0).text)
            skipped += 1
    return first + recent, skipped, data[head_len:evicted_end].count(b"\n")


def _word(rule, line: bytes, at: int, size: int) -> bool:
    """Whether line[at:at + size] may match: any place for a rule without
    ``word``, else only a word of its own (a CamelCase step starts one)."""
    if not rule.word:
        return True
    import re

    before, after = line[at - 1 : at], line[at + size : at + size + 1]
    starts = not re.fullmatch(rb"\w", before, re.ASCII) or (
        before.islower() and line[at : at + 1].isupper())
    ends = not re.fullmatch(rb"[A-Z0-9_]", after)
    return starts and ends


def _rule_matches(rule, prefix: bytes, length: int) -> bool:
    """One rule against a line's first bytes, read straight from its texts."""
    match = rule.match.encode("utf-8", "surrogateescape")
    at_start = len(match) > 1 and match.startswith(b"^")
    match = match[1:] if at_start else match
    at_end = len(match) > 1 and match.endswith(b"$")
    match = (match[:-1] if at_end else match).lower()
    body = prefix.lstrip(b" \t")
    whole = length <= len(prefix)
    if at_end and not whole:
        return False
    trimmed = body.rstrip(b"\r \t").lower() if at_start else prefix.rstrip(b"\r \t").lower()
    indent = len(prefix) - len(body)
    if at_start and at_end:
        ok = trimmed == match and _word(rule, prefix, indent, len(match))
    elif at_start:
        ok = body.lower().startswith(match) and _word(rule, prefix, indent, len(match))
    elif at_end:
        ok = trimmed.endswith(match) and _word(rule, prefix, len(trimmed) - len(match), len(match))
    else:
        ok = any(prefix.lower().startswith(match, at) and _word(rule, prefix, at, len(match))
                 for at in range(len(prefix)))
    for item in rule.unless:
        raw = item.encode("utf-8", "surrogateescape")
        if len(raw) > 1 and raw.startswith(b"^"):
            ok = ok and not body.startswith(raw[1:])
        else:
            ok = ok and raw not in prefix
    return ok
