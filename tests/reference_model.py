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
    ``(kept, skipped, dropped_lines)``, derived by scanning the whole stream
    line by line rather than as bytes leave the tail."""
    from journal._highlights import Highlight, kept_text

    total = len(data)
    head_len = min(head, total)
    evicted_end = total - min(tail, total - head_len)  # where the held tail starts
    if evicted_end <= head_len:
        return [], 0, 0
    matching = []
    line_start = 0
    line_number = 1
    for position, byte in enumerate(data[:evicted_end]):
        if byte != 0x0A:
            continue
        if position >= head_len:
            line = data[line_start:position]
            if any(pattern in line.lower() for pattern in rules.patterns):
                text = kept_text(line[: rules.line_limit], len(line))
                matching.append(Highlight(line_number, line_start, text))
        line_start = position + 1
        line_number += 1
    first, first_bytes = [], 0
    for item in matching:
        if first_bytes + len(item.text) > rules.budget // 2:
            break
        first.append(item)
        first_bytes += len(item.text)
    rest = matching[len(first):]
    recent, recent_bytes = [], 0
    for item in reversed(rest):
        if first_bytes + recent_bytes + len(item.text) > rules.budget:
            break
        recent.insert(0, item)
        recent_bytes += len(item.text)
    skipped = len(rest) - len(recent)
    return first + recent, skipped, data[head_len:evicted_end].count(b"\n")
