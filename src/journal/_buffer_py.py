"""HeadTailBuffer in pure Python: the twin of ``_buffer.pyx``.

It behaves byte for byte like the compiled class (the test suite runs every
buffer test against both) and is what platforms without a compiler, or
``JOURNAL_NO_EXTENSIONS=1``, get.  One difference is internal: a Python
method is not atomic under the GIL, so each buffer carries a lock here where
the compiled append needs none.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING, Callable, ClassVar, Optional, Union, cast

from journal import _buffer_shared as _shared
from journal import _highlights as _hl
from journal._scanner_py import Scanner
from journal.errors import CorruptSnapshot

if TYPE_CHECKING:
    from typing_extensions import Buffer, Self

__all__ = ["HeadTailBuffer"]

BytesLike = Union[bytes, bytearray, memoryview]

#: How many forks this process is from the one that imported the module: a
#: buffer made before a fork carries a lock that a thread of the parent may
#: have held at that moment, and that stays held for good in the child.
_forks = 0


def _count_a_fork() -> None:
    global _forks
    _forks += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_count_a_fork)

#: How long seal() waits, in a forked child, for the lock of a buffer made
#: before the fork, before it takes the lock as held for good.
_FORKED_LOCK_PATIENCE = 0.5


class HeadTailBuffer:
    """Keeps the first ``head`` and the last ``tail`` bytes of a byte stream.

    Bytes in between are dropped and counted.  Storage grows with what was
    written and never exceeds ``head + tail`` bytes.  Appends and reads are
    safe from any number of threads; every read sees a whole number of
    appends.
    """

    __slots__ = (
        "_head_limit", "_head_cap", "_tail_cap", "_head", "_tail", "_total", "_sealed",
        "_lock", "_spilled", "_spill_total", "_spill_head_len", "_spill_tail_len",
        "_scanner", "_spill_scanner", "_appends", "_forks",
    )

    def __init__(
        self, head: int, tail: int, highlights: Optional[_hl.HighlightRules] = None
    ) -> None:
        self._head_limit = self._head_cap = _shared.capacity(head, "head")
        self._tail_cap = _shared.capacity(tail, "tail")
        rules = _hl.rules_or_none(highlights)
        self._scanner = self._new_scanner(rules) if rules is not None else None
        self._head = bytearray()
        # bytearray deletes from its front in O(1), which makes it a fine ring.
        self._tail = bytearray()
        self._total = 0
        self._appends = 0
        self._sealed = False
        self._lock = threading.Lock()
        self._forks = _forks
        # See the compiled class: while spilled, storage holds only what came
        # after the spill, and _head_cap is the head room left for it.
        self._spilled = False
        self._spill_total = 0
        self._spill_head_len = 0
        self._spill_tail_len = 0
        # While spilled with highlight rules: the scanner as it will be once
        # the spilled tail has left the ring (see spill()).
        self._spill_scanner: Optional[Scanner] = None

    def append(self, data: BytesLike) -> None:
        """Add ``data`` to the stream; raise StreamSealed once sealed."""
        if self._sealed:
            # Before the lock too: a copy sealed in a forked child may have
            # a lock that is never free there (see seal()).
            raise _shared.sealed_error()
        with self._lock:
            if self._sealed:
                raise _shared.sealed_error()
            if type(data) is not bytes:
                data = _byte_view(data)
            size = len(data)
            self._total += size
            self._appends += 1
            room = self._head_cap - len(self._head)
            if room > 0:
                if size <= room:
                    self._head += data
                    return
                view = memoryview(data)
                self._head += view[:room]
                data = view[room:]
                size -= room
            cap = self._tail_cap
            tail = self._tail
            if self._scanner is not None:
                self._scan_evicted(data, size)
            if size >= cap:
                # Only the chunk's last ``cap`` bytes can survive: copy just those.
                tail[:] = memoryview(data)[size - cap :]
            else:
                tail += data
                excess = len(tail) - cap
                if excess > 0:
                    del tail[:excess]

    def _new_scanner(
        self, rules: _hl.HighlightRules, state: Optional[_hl.ScannerState] = None
    ) -> Scanner:
        scanner = Scanner(rules, state)
        scanner.window = _hl.window_for(self._tail_cap)
        return scanner

    def _scan_evicted(self, data: BytesLike, size: int) -> None:
        """Show the scanner, in stream order, the bytes this append pushes out
        of the tail: ``data`` is the part of the append that goes past the head."""
        excess = len(self._tail) + size - self._tail_cap
        if excess <= 0:
            return
        if self._spill_scanner is not None:
            # All of the spilled tail has now left the ring, before these bytes.
            self._scanner, self._spill_scanner = self._spill_scanner, None
        scanner = self._scanner
        assert scanner is not None  # append() calls this only with highlight rules
        if not scanner.head_done:
            base = self._spill_head_len if self._spilled else 0
            scanner.finish_head(self._head[scanner.fed - base :])
        # Into the scan window: scanned in one pass when it fills, or first
        # thing when anything reads the scanner.
        from_tail = min(excess, len(self._tail))
        if from_tail:
            scanner.defer(self._tail[:from_tail])
        if excess > from_tail:
            scanner.defer(data[: excess - from_tail])

    def seal(self) -> None:
        """Refuse further appends; reads keep working."""
        if self._forks != _forks:
            # A copy from before a fork (a journal's close() in the child):
            # a thread of the parent may have held the lock at the fork; it
            # did not come along, so the lock would never be free here.  An
            # append of the child's own threads holds it only briefly.
            if not self._lock.acquire(timeout=_FORKED_LOCK_PATIENCE):
                self._sealed = True
                return
        else:
            self._lock.acquire()
        try:
            self._sealed = True
        finally:
            self._lock.release()

    @property
    def sealed(self) -> bool:
        return self._sealed

    @property
    def head_capacity(self) -> int:
        return self._head_limit

    @property
    def spilled(self) -> bool:
        return self._spilled

    @property
    def tail_capacity(self) -> int:
        return self._tail_cap

    @property
    def total(self) -> int:
        """Bytes ever appended."""
        return self._total

    @property
    def appends(self) -> int:
        """Calls to ``append`` on this object (not carried by snapshots)."""
        return self._appends

    @property
    def dropped(self) -> int:
        """Bytes appended but no longer held, here or in a spilled part."""
        with self._lock:
            resident = len(self._head) + len(self._tail)
            if not self._spilled:
                return self._total - resident
            tail_len = len(self._tail)
            if self._total - self._spill_total == resident:
                tail_len = min(self._tail_cap, self._spill_tail_len + tail_len)
            return self._total - (self._spill_head_len + len(self._head) + tail_len)

    def __len__(self) -> int:
        """Bytes held in memory (while spilled, only what came after the spill)."""
        with self._lock:
            return len(self._head) + len(self._tail)

    def head(self) -> bytes:
        """The first bytes of the stream, up to the head capacity."""
        return self._parts()[0]

    def tail(self) -> bytes:
        """The last bytes after the head, oldest first, up to the tail capacity."""
        return self._parts()[1]

    def read_from(self, offset: int) -> tuple[int, bytes]:
        """Held bytes from stream position ``offset`` on: ``(position, data)``.

        ``position`` is where ``data`` starts in the stream; when it is past
        ``offset`` the bytes in between were dropped.  ``data`` is one
        contiguous run: if a dropped gap follows the head, the bytes after it
        come from the next call.  For live tails (``TaskJournal.follow``).
        """
        offset = _shared.read_offset(offset)
        return _shared.read_from(*self._parts(), offset)

    def view(self) -> _shared.View:
        """``parts()`` and the highlights, read at one instant: ``(head, tail,
        total, sealed, highlights, highlights_first, highlights_skipped,
        dropped_lines)`` (the fields of ``journal.StreamView`` after its name)."""
        with self._lock:
            self._check_resident()
            scan = self._scan()
            parts = (bytes(self._head), bytes(self._tail), self._total, self._sealed)
        return parts + _shared.view_of(scan)

    def parts(self) -> tuple[bytes, bytes, int, bool]:
        """``(head, tail, total, sealed)``, read at one instant."""
        with self._lock:
            self._check_resident()
            return bytes(self._head), bytes(self._tail), self._total, self._sealed

    def _parts(self) -> tuple[bytes, bytes, int]:
        with self._lock:
            self._check_resident()
            return bytes(self._head), bytes(self._tail), self._total

    def _check_resident(self) -> None:
        if self._spilled:
            raise _shared.spilled_error()

    def spill(self) -> bytes:
        """Release the storage and return a snapshot of what it held.

        The caller keeps the snapshot (in the store).  Appends go on into
        fresh storage; :meth:`unspill` with the same snapshot merges the two
        into exactly the buffer that never spilled.  Reads raise
        StreamSpilled until then.
        """
        with self._lock:
            if self._spilled:
                raise ValueError("this buffer is already spilled; unspill() it first")
            scanner = self._scanner
            if scanner is not None and not self._sealed:
                # The spilled tail leaves the ring while it is away if enough
                # new bytes arrive, and must be scanned first: scan it now,
                # into a copy that takes over only if that happens.
                if not scanner.head_done:
                    rest_of_head = self._head[scanner.fed :]
                    if self._tail:  # the head is full
                        scanner.finish_head(rest_of_head)
                    else:
                        scanner.feed(rest_of_head, emit=False)
                if self._tail:
                    ahead = self._new_scanner(scanner.rules, scanner.state())
                    ahead.feed(self._tail)
                    self._spill_scanner = ahead
            state = self._state()
            self._head = bytearray()
            self._tail = bytearray()
            self._spilled = True
            self._spill_total = self._total
            self._spill_head_len = len(state.head)
            self._spill_tail_len = len(state.tail)
            self._head_cap = self._head_limit - len(state.head)
        return _shared.encode_snapshot(state)

    def unspill(self, snapshot: BytesLike) -> None:
        """Merge back the snapshot :meth:`spill` returned; reads work again."""
        with self._lock:
            if not self._spilled:
                raise ValueError("this buffer is not spilled")
        base = _shared.spill_base(snapshot, self._head_limit, self._tail_cap)
        with self._lock:
            if (base.total, len(base.head), len(base.tail)) != (
                self._spill_total, self._spill_head_len, self._spill_tail_len
            ):
                raise CorruptSnapshot("this snapshot is not the one this buffer spilled")
            if self._total - self._spill_total > len(self._head) + len(self._tail):
                merged_tail = bytes(self._tail)  # the new part overflowed the ring by itself
            else:
                merged_tail = base.tail + self._tail
                evicted = len(merged_tail) - self._tail_cap
                if evicted > 0:
                    merged_tail = merged_tail[evicted:]
                    if self._spill_scanner is not None:
                        assert self._scanner is not None  # a spill scanner implies a scanner
                        self._scanner.flush()
                        self._scanner.feed(base.tail[:evicted])
            self._head = bytearray(base.head) + self._head
            self._tail = bytearray(merged_tail)
            self._spilled = False
            self._spill_scanner = None
            self._head_cap = self._head_limit

    @property
    def highlight_rules(self) -> Optional[_hl.HighlightRules]:
        """The rules this buffer keeps highlight lines by, or None."""
        return None if self._scanner is None else self._scanner.rules

    def highlights(self) -> list[_hl.Highlight]:
        """Lines kept from the dropped middle: the earliest, then the most recent."""
        with self._lock:
            if self._scanner is None:
                return []
            first, recent = self._scanner.kept()
        return _shared.scan_view(0, first, recent, 0).kept

    @property
    def highlights_skipped(self) -> int:
        """Matching lines of the dropped middle that the budget did not keep."""
        with self._lock:
            if self._scanner is None:
                return 0
            self._scanner.flush()
            return self._scanner.skipped

    @property
    def dropped_lines(self) -> Optional[int]:
        """Newlines in the dropped middle; None without highlight rules."""
        with self._lock:
            return None if self._scanner is None else _dropped_lines(self._scanner)

    def _scan(self) -> Optional[_shared.Scan]:
        scanner = self._scanner
        if scanner is None:
            return None
        first, recent = scanner.kept()
        return _shared.scan_view(_dropped_lines(scanner), first, recent, scanner.skipped)

    def _state(self) -> _shared.SnapshotState:
        return _shared.SnapshotState(
            self._head_limit, self._tail_cap, self._total, self._sealed,
            bytes(self._head), bytes(self._tail),
            None if self._scanner is None else self._scanner.state(),
        )

    def render(self, marker: Optional[str] = None) -> bytes:
        """Head, then a marker and any highlight lines if bytes were dropped, then tail."""
        head, tail, total, scan = self._parts_and_scan()
        return _shared.render(head, tail, total, marker, scan)

    def text(self, marker: Optional[str] = None) -> str:
        """``render()`` decoded as UTF-8, never splitting a character at a cut."""
        head, tail, total, scan = self._parts_and_scan()
        return _shared.text(head, tail, total, marker, scan)

    def _parts_and_scan(self) -> tuple[bytes, bytes, int, Optional[_shared.Scan]]:
        with self._lock:
            self._check_resident()
            return bytes(self._head), bytes(self._tail), self._total, self._scan()

    def snapshot(self) -> bytes:
        """A versioned, checksummed copy of the state, for ``restore()``."""
        with self._lock:
            self._check_resident()
            state = self._state()
        return _shared.encode_snapshot(state)

    @classmethod
    def restore(cls, snapshot: BytesLike) -> Self:
        """Rebuild the buffer a ``snapshot()`` was taken of; raise CorruptSnapshot."""
        state = _shared.decode_snapshot(snapshot)
        buf = cls(state.head_capacity, state.tail_capacity)
        buf._head += state.head
        buf._tail += state.tail
        buf._total = state.total
        buf._sealed = state.sealed
        if state.scanner is not None:
            buf._scanner = buf._new_scanner(state.scanner.rules, state.scanner)
        return buf

    def __reduce__(self) -> tuple[Callable[[bytes], Self], tuple[bytes]]:
        return (type(self).restore, (self.snapshot(),))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HeadTailBuffer):
            return NotImplemented
        return self.snapshot() == other.snapshot()

    __hash__: ClassVar[None] = None  # type: ignore[assignment]  # mutable: unhashable

    def __sizeof__(self) -> int:
        held = sum(scanner.held() for scanner in (self._scanner, self._spill_scanner) if scanner)
        return (object.__sizeof__(self) + sys.getsizeof(self._head) + sys.getsizeof(self._tail)
                + held)

    def __repr__(self) -> str:
        return (
            f"<HeadTailBuffer head={self._head_limit} tail={self._tail_cap} "
            f"total={self._total} held={len(self)}"
            f"{' sealed' if self._sealed else ''}{' spilled' if self._spilled else ''}>"
        )


def _dropped_lines(scanner: Scanner) -> int:
    scanner.flush()
    return scanner.lines - scanner.head_lines if scanner.head_done else 0


def _byte_view(data: object) -> memoryview:
    """A flat byte view of a bytes-like object, or the error that explains why not."""
    try:
        view = memoryview(cast("Buffer", data))  # TypeError if it is not one
    except TypeError:
        _shared.reject_append(data)
    if not view.c_contiguous:
        view.release()
        _shared.reject_append(data)
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view
