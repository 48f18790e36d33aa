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
