"""The cold half of HeadTailBuffer, shared by the compiled class and its twin.

Both implementations keep only the hot state (storage, counters, the seal
flag) and delegate everything that is neither hot nor speed-sensitive here:
argument checks, error messages, rendering, UTF-8 cut handling and the
snapshot format.  Writing these once is what keeps the two twins byte for
byte identical where it is hardest to keep them so.
"""

from __future__ import annotations

import operator
import struct
import zlib
from typing import TYPE_CHECKING, NamedTuple, NoReturn, Optional, SupportsIndex, cast

from journal._highlights import (
    HIGHLIGHT_MARKER,
    Highlight,
    ScannerState,
    complete_prefix_len,
    decode_entry,
    decode_section,
    encode_section,
    render_highlights,
)
from journal.errors import CorruptSnapshot, StreamSealed, StreamSpilled

if TYPE_CHECKING:
    from typing_extensions import Buffer

#: What ``HeadTailBuffer.view()`` returns: ``(head, tail, total, sealed,
#: highlights, highlights_first, highlights_skipped, dropped_lines)``, the
#: fields of ``journal.StreamView`` after its name.
View = tuple[bytes, bytes, int, bool, tuple[Highlight, ...], int, int, Optional[int]]

#: What ``render()`` and ``text()`` put between head and tail when bytes were
#: dropped.  ``{dropped}`` is replaced by the number of bytes left out.
DEFAULT_MARKER = "\n[... {dropped} bytes omitted ...]\n"

# A single stream may be large, but not absurd: this keeps every size
# arithmetic in the compiled class far away from Py_ssize_t overflow.
MAX_CAPACITY = 1 << 40


def capacity(value: object, name: str) -> int:
    """Validate one capacity argument and return it as an int."""
    try:
        # Anything without __index__ raises the TypeError explained below.
        size = operator.index(cast(SupportsIndex, value))
    except TypeError:
        raise TypeError(
            f"HeadTailBuffer {name} capacity must be an int, "
            f"not {type(value).__name__}"
        ) from None
    if size < 0:
        raise ValueError(f"HeadTailBuffer {name} capacity must be >= 0, got {size}")
    if size > MAX_CAPACITY:
        raise ValueError(
            f"HeadTailBuffer {name} capacity must be <= {MAX_CAPACITY}, got {size}"
        )
    return size


def reject_append(data: object) -> NoReturn:
    """Raise the error that explains why ``data`` cannot be appended."""
    if isinstance(data, str):
        raise TypeError(
            "HeadTailBuffer.append() takes bytes, not str: "
            "encode it first, e.g. append(text.encode('utf-8'))"
        ) from None
    try:
        view = memoryview(cast("Buffer", data))  # the TypeError below if it is not one
    except TypeError:
        raise TypeError(
            "HeadTailBuffer.append() takes a bytes-like object "
            f"(bytes, bytearray, memoryview), not {type(data).__name__}"
        ) from None
    with view:
        if not view.c_contiguous:
            raise BufferError(
                "HeadTailBuffer.append() needs a C-contiguous buffer; "
                "copy the view first, e.g. append(view.tobytes())"
            ) from None
    raise TypeError(  # pragma: no cover - every buffer is one of the above
        f"HeadTailBuffer.append() cannot read {type(data).__name__}"
    )


def sealed_error() -> StreamSealed:
    return StreamSealed(
        "this stream is sealed (its task has ended, or its journal was closed) and "
        "takes no more data; send all output before completing the task"
    )


def spilled_error() -> StreamSpilled:
    return StreamSpilled(
        "this buffer's older bytes were spilled to the store; read the stream "
        "through the journal (TaskJournal.get), which merges them back"
    )


def spill_base(snapshot: object, head_capacity: int, tail_capacity: int) -> SnapshotState:
    """Decode the snapshot ``unspill()`` was given and check it fits."""
    state = decode_snapshot(snapshot)
    if (state.head_capacity, state.tail_capacity) != (head_capacity, tail_capacity):
        raise CorruptSnapshot(
            f"cannot unspill a snapshot of a {state.head_capacity}+{state.tail_capacity} "
            f"buffer into a {head_capacity}+{tail_capacity} one"
        )
    return state


def format_marker(marker: object, dropped: int) -> str:
    if not isinstance(marker, str):
        raise TypeError(f"marker must be a str template, not {type(marker).__name__}")
    try:
        return marker.format(dropped=dropped)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"bad marker template {marker!r}: the only field is {{dropped}} ({exc})"
        ) from None


class Scan(NamedTuple):
    """What a buffer's highlight scanner has to show, read with its parts."""

    lines: int  # newlines in the dropped middle
    kept: list[Highlight]
    first_count: int  # how many of ``kept`` are the earliest ones
    skipped: int  # matching lines not kept


def scan_view(lines: int, first: list[bytes], recent: list[bytes], skipped: int) -> Scan:
    kept = [decode_entry(raw) for raw in first]
    kept += (decode_entry(raw) for raw in recent)
    return Scan(lines, kept, len(first), skipped)


def view_of(scan: Scan | None) -> tuple[tuple[Highlight, ...], int, int, int | None]:
    if scan is None:
        return ((), 0, 0, None)
    return (tuple(scan.kept), scan.first_count, scan.skipped, scan.lines)


def _middle(marker: object, dropped: int, scan: Scan | None, tail_length: int) -> bytes:
    if scan is None:
        return format_marker(DEFAULT_MARKER if marker is None else marker, dropped).encode("utf-8")
    return render_highlights(
        HIGHLIGHT_MARKER if marker is None else marker,
        dropped, scan.lines, scan.kept, scan.skipped, scan.first_count, tail_length,
    )


def render(head: bytes, tail: bytes, total: int, marker: object, scan: Scan | None = None) -> bytes:
    dropped = total - len(head) - len(tail)
    if dropped == 0:
        return head + tail
    return head + _middle(marker, dropped, scan, len(tail)) + tail


def text(head: bytes, tail: bytes, total: int, marker: object, scan: Scan | None = None) -> str:
    dropped = total - len(head) - len(tail)
    if dropped == 0:
        return (head + tail).decode("utf-8", "replace")
    # A cut may fall inside a multi-byte character.  Its pieces are dropped
    # and counted with the middle rather than decoded into U+FFFD.
    keep = complete_prefix_len(head)
    skip = _leading_continuations(tail)
    dropped += len(head) - keep + skip
    middle = _middle(marker, dropped, scan, len(tail) - skip)
    return (head[:keep] + middle + tail[skip:]).decode("utf-8", "replace")


def _leading_continuations(data: bytes) -> int:
    """How many bytes at the start of ``data`` continue a cut character."""
    count = 0
    while count < min(3, len(data)) and 0x80 <= data[count] < 0xC0:
        count += 1
    return count


def read_offset(value: object) -> int:
    offset = operator.index(cast(SupportsIndex, value))  # TypeError if it is no int
    if offset < 0:
        raise ValueError(f"read_from() offset must be >= 0, got {offset}")
    return offset


def read_from(head: bytes, tail: bytes, total: int, offset: int) -> tuple[int, bytes]:
    if offset > total:
        raise ValueError(f"read_from() offset {offset} is past the end of the stream ({total})")
    tail_start = total - len(tail)
    if offset < len(head):
        # The head and the tail are one run only when nothing lies between.
        joined = tail if tail_start == len(head) else b""
        return offset, head[offset:] + joined
    start = max(offset, tail_start)
    return start, tail[start - tail_start :]


# Snapshot format, little-endian:
#   magic "TJHB", version u8, flags u8 (bit 0: sealed, bit 1: highlights),
#   reserved u16, head capacity u64, tail capacity u64, total u64, head length
#   u64, tail length u64, head bytes, tail bytes (oldest first), since version
#   2 the highlight section when flag bit 1 is set (``_highlights``), and
#   CRC-32 u32 of everything before it.  Version 1 had no highlights, version
#   2 plain patterns without context; both are still read, version 3 is
#   written.
_MAGIC = b"TJHB"
_VERSION = 3
_READABLE_VERSIONS = (1, 2, 3)
_FLAG_SEALED = 1
_FLAG_HIGHLIGHTS = 2
_HEADER = struct.Struct("<4sBBHQQQQQ")
_CRC = struct.Struct("<I")


class SnapshotState(NamedTuple):
    head_capacity: int
    tail_capacity: int
    total: int
    sealed: bool
    head: bytes
    tail: bytes
    scanner: ScannerState | None = None


def encode_snapshot(state: SnapshotState) -> bytes:
    flags = (_FLAG_SEALED if state.sealed else 0) | (_FLAG_HIGHLIGHTS if state.scanner else 0)
    header = _HEADER.pack(
        _MAGIC,
        _VERSION,
        flags,
        0,
        state.head_capacity,
        state.tail_capacity,
        state.total,
        len(state.head),
        len(state.tail),
    )
    section = encode_section(state.scanner) if state.scanner else b""
    body = b"".join((header, state.head, state.tail, section))
    return body + _CRC.pack(zlib.crc32(body))


def decode_snapshot(data: object) -> SnapshotState:
    """Parse and fully validate a snapshot; raise CorruptSnapshot if it is bad."""
    try:
        raw = bytes(memoryview(cast("Buffer", data)))  # the TypeError below if it is not one
    except TypeError:
        raise TypeError(
            f"a snapshot is bytes, not {type(data).__name__}"
        ) from None
    minimum = _HEADER.size + _CRC.size
    if len(raw) < minimum:
        raise CorruptSnapshot(
            f"snapshot is truncated: {len(raw)} bytes, a header alone needs {minimum}"
        )
    magic, version, flags, _, head_cap, tail_cap, total, head_len, tail_len = (
        _HEADER.unpack_from(raw)
    )
    if magic != _MAGIC:
        raise CorruptSnapshot(
            f"not a HeadTailBuffer snapshot (starts with {magic!r}, expected {_MAGIC!r})"
        )
    if version not in _READABLE_VERSIONS:
        raise CorruptSnapshot(
            f"snapshot format version {version} is not supported by this taskjournal "
            f"(it reads versions {_READABLE_VERSIONS}); upgrade taskjournal to read it"
        )
    least = minimum + head_len + tail_len
    if len(raw) < least or (version == 1 and len(raw) != least):
        raise CorruptSnapshot(
            f"snapshot is truncated or padded: {len(raw)} bytes, its header says {least}"
            + (" or more" if version > 1 else "")
        )
    # The highlight section's lengths are trusted only once the checksum holds.
    body = raw[: -_CRC.size]
    (crc,) = _CRC.unpack_from(raw, len(body))
    if zlib.crc32(body) != crc:
        raise CorruptSnapshot("snapshot is corrupt: its checksum does not match")
    known = _FLAG_SEALED | (_FLAG_HIGHLIGHTS if version >= 2 else 0)
    if flags & ~known:
        raise CorruptSnapshot(f"snapshot has unknown flags {flags:#x}")
    head_end = _HEADER.size + head_len
    tail_end = head_end + tail_len
    _check_invariants(head_cap, tail_cap, total, head_len, tail_len)
    scanner = None
    end = tail_end
    if flags & _FLAG_HIGHLIGHTS:
        scanner, end = decode_section(body, tail_end, total, version)
    if end != len(body):
        raise CorruptSnapshot(
            f"snapshot is truncated or padded: {len(raw)} bytes, its contents end at "
            f"{end + _CRC.size}"
        )
    return SnapshotState(
        head_cap,
        tail_cap,
        total,
        bool(flags & _FLAG_SEALED),
        raw[_HEADER.size : head_end],
        raw[head_end:tail_end],
        scanner,
    )


def snapshot_total(snapshot: bytes) -> int:
    """The stream total a snapshot records, read from its header alone."""
    total: int = _HEADER.unpack_from(snapshot)[6]
    return total


def _check_invariants(
    head_cap: int, tail_cap: int, total: int, head_len: int, tail_len: int
) -> None:
    # A checksum only proves the bytes arrived as written; these prove that
    # what was written describes a state a buffer can actually be in.
    problems = []
    if head_cap > MAX_CAPACITY or tail_cap > MAX_CAPACITY:
        problems.append("a capacity is out of range")
    if head_len > head_cap or tail_len > tail_cap:
        problems.append("holds more than its capacity")
    if total < head_len + tail_len:
        problems.append("total is smaller than what it holds")
    if head_len < min(head_cap, total):
        problems.append("head is short of what was written")
    if tail_len < min(tail_cap, total - head_len):
        problems.append("tail is short of what was written")
    if problems:
        raise CorruptSnapshot("snapshot is inconsistent: " + "; ".join(problems))
