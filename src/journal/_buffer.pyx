# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""HeadTailBuffer compiled: the hot path of every task stream.

Thread safety comes from the GIL and from what ``append`` does not do: it
runs no Python code and never releases the GIL between reading its argument
and updating its counters, so each append is atomic without a lock and a
reader never sees half of one.  Everything cold (argument checks, rendering,
snapshots) lives in ``_buffer_shared`` and is shared with the pure twin.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_CheckExact,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from libc.string cimport memcpy

from journal import _buffer_shared as _shared

__all__ = ["HeadTailBuffer"]

# Small streams are the common case: start at this size and double.
cdef Py_ssize_t _FIRST_ALLOCATION = 256


cdef inline Py_ssize_t _grown(Py_ssize_t allocated, Py_ssize_t needed,
                              Py_ssize_t capacity) noexcept:
    cdef Py_ssize_t size = allocated * 2
    if size < _FIRST_ALLOCATION:
        size = _FIRST_ALLOCATION
    if size < needed:
        size = needed
    if size > capacity:
        size = capacity
    return size


cdef class HeadTailBuffer:
    """Keeps the first ``head`` and the last ``tail`` bytes of a byte stream.

    Bytes in between are dropped and counted.  Storage grows with what was
    written and never exceeds ``head + tail`` bytes.  Appends and reads are
    safe from any number of threads; every read sees a whole number of
    appends.
    """

    # The head is a plain array filled once.  The tail is a ring, but only
    # once it has grown to its full capacity: until then it is linear
    # (``_ring_start == 0``), so it can be reallocated as it grows.
    cdef unsigned char *_head
    cdef unsigned char *_ring
    cdef Py_ssize_t _head_limit  # the head capacity the buffer was made with
    # Head bytes the current storage may still take: _head_limit, less what
    # a spill moved out.  The hot path only ever looks at this one.
    cdef Py_ssize_t _head_cap
    cdef Py_ssize_t _tail_cap
    cdef Py_ssize_t _head_len
    cdef Py_ssize_t _head_alloc
    cdef Py_ssize_t _ring_start
    cdef Py_ssize_t _ring_len
    cdef Py_ssize_t _ring_alloc
    cdef unsigned long long _total
    cdef bint _sealed
    # While spilled, the storage holds only what came after the spill; the
    # spilled part (in the store) had this total, head and tail length.
    cdef bint _spilled
    cdef unsigned long long _spill_total
    cdef Py_ssize_t _spill_head_len
    cdef Py_ssize_t _spill_tail_len

    def __init__(self, head, tail):
        cdef Py_ssize_t head_cap = _shared.capacity(head, "head")
        cdef Py_ssize_t tail_cap = _shared.capacity(tail, "tail")
        self._release_storage()
        self._head_limit = self._head_cap = head_cap
        self._tail_cap = tail_cap
        self._total = 0
        self._sealed = False
        self._spilled = False

    def __dealloc__(self):
        PyMem_Free(self._head)
        PyMem_Free(self._ring)

    cdef void _release_storage(self) noexcept:
        PyMem_Free(self._head)
        PyMem_Free(self._ring)
        self._head = NULL
        self._ring = NULL
        self._head_len = self._head_alloc = 0
        self._ring_start = self._ring_len = self._ring_alloc = 0

    cdef int _reserve(self, Py_ssize_t size) except -1:
        """Allocate now whatever appending ``size`` bytes will need.

        Every allocation happens before any byte is copied, so a MemoryError
        leaves the buffer exactly as it was.
        """
        cdef Py_ssize_t to_head = self._head_cap - self._head_len
        cdef Py_ssize_t needed
        cdef void *grown
        if to_head > size:
            to_head = size
        if self._head_len + to_head > self._head_alloc:
            needed = _grown(self._head_alloc, self._head_len + to_head, self._head_cap)
            grown = PyMem_Realloc(self._head, needed)
            if grown == NULL:
                raise MemoryError()
            self._head = <unsigned char *>grown
            self._head_alloc = needed
        size -= to_head
        if size > 0 and self._ring_alloc < self._tail_cap:
            needed = self._ring_len + size
            if needed > self._ring_alloc:
                needed = _grown(self._ring_alloc, needed, self._tail_cap)
                grown = PyMem_Realloc(self._ring, needed)
                if grown == NULL:
                    raise MemoryError()
                self._ring = <unsigned char *>grown
                self._ring_alloc = needed
        return 0

    cdef inline void _write(self, const unsigned char *data, Py_ssize_t size) noexcept:
        """Copy ``size`` bytes in; ``_reserve(size)`` must have succeeded."""
        cdef Py_ssize_t cap = self._tail_cap
        cdef Py_ssize_t to_head = self._head_cap - self._head_len
        cdef Py_ssize_t end, first
        self._total += <unsigned long long>size
        if to_head > 0:
            if to_head > size:
                to_head = size
            memcpy(self._head + self._head_len, data, to_head)
            self._head_len += to_head
            data += to_head
            size -= to_head
        if size == 0 or cap == 0:
            return
        if size >= cap:
            # Only the chunk's last ``cap`` bytes can survive: copy just those.
            # _reserve grew the ring to ``cap`` since ring_len + size >= cap.
            memcpy(self._ring, data + size - cap, cap)
            self._ring_start = 0
            self._ring_len = cap
            return
        if self._ring_alloc < cap:
            # Linear phase: _reserve made ``ring_len + size <= ring_alloc``.
            memcpy(self._ring + self._ring_len, data, size)
            self._ring_len += size
            return
        # Full ring of ``cap`` bytes; size < cap, so the write wraps at most
        # once and overwrites only the oldest bytes, which it evicts.
        end = self._ring_start + self._ring_len
        if end >= cap:
            end -= cap
        first = cap - end
        if first > size:
            first = size
        memcpy(self._ring + end, data, first)
        if size > first:
            memcpy(self._ring, data + first, size - first)
        self._ring_len += size
        if self._ring_len > cap:
            self._ring_start += self._ring_len - cap
            if self._ring_start >= cap:
                self._ring_start -= cap
            self._ring_len = cap

    cdef inline int _append_raw(self, const unsigned char *data, Py_ssize_t size) except -1:
        # Once both parts have their full storage nothing is ever allocated.
        if self._head_alloc < self._head_cap or self._ring_alloc < self._tail_cap:
            self._reserve(size)
        self._write(data, size)
        return 0

    def append(self, object data):
        """Add ``data`` to the stream; raise StreamSealed once sealed."""
        cdef Py_buffer view
        if self._sealed:
            raise _shared.sealed_error()
        if PyBytes_CheckExact(data):
            self._append_raw(<const unsigned char *>PyBytes_AS_STRING(data),
                             PyBytes_GET_SIZE(data))
            return
        try:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        except (TypeError, BufferError):
            _shared.reject_append(data)  # raises a clearer error
            raise
        try:
            self._append_raw(<const unsigned char *>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    def seal(self):
        """Refuse further appends; reads keep working."""
        self._sealed = True

    @property
    def sealed(self):
        return self._sealed

    @property
    def head_capacity(self):
        return self._head_limit

    @property
    def tail_capacity(self):
        return self._tail_cap

    @property
    def total(self):
        """Bytes ever appended."""
        return self._total

    @property
    def dropped(self):
        """Bytes appended but no longer held, here or in a spilled part."""
        cdef unsigned long long after, held
        cdef Py_ssize_t tail_len = self._ring_len
        if not self._spilled:
            return self._total - <unsigned long long>(self._head_len + self._ring_len)
        # What the merge in unspill() will keep, worked out from counters.
        after = self._total - self._spill_total
        if after == <unsigned long long>(self._head_len + self._ring_len):
            tail_len = self._spill_tail_len + self._ring_len
            if tail_len > self._tail_cap:
                tail_len = self._tail_cap
        held = self._spill_head_len + self._head_len + tail_len
        return self._total - held

    def __len__(self):
        """Bytes held in memory (while spilled, only what came after the spill)."""
        return self._head_len + self._ring_len

    @property
    def spilled(self):
        return self._spilled

    def head(self):
        """The first bytes of the stream, up to the head capacity."""
        if self._spilled:
            raise _shared.spilled_error()
        return PyBytes_FromStringAndSize(<char *>self._head, self._head_len)

    def tail(self):
        """The last bytes after the head, oldest first, up to the tail capacity."""
        if self._spilled:
            raise _shared.spilled_error()
        return self._ring_bytes()

    cdef bytes _ring_bytes(self):
        cdef bytes out = PyBytes_FromStringAndSize(NULL, self._ring_len)
        cdef char *dest = PyBytes_AS_STRING(out)
        # In the linear phase _ring_start is 0 and this is a single copy.
        cdef Py_ssize_t first = self._ring_alloc - self._ring_start
        if first > self._ring_len:
            first = self._ring_len
        if first > 0:
            memcpy(dest, self._ring + self._ring_start, first)
        if self._ring_len > first:
            memcpy(dest + first, self._ring, self._ring_len - first)
        return out

    def read_from(self, offset):
        """Held bytes from stream position ``offset`` on: ``(position, data)``.

        ``position`` is where ``data`` starts in the stream; when it is past
        ``offset`` the bytes in between were dropped.  ``data`` is one
        contiguous run: if a dropped gap follows the head, the bytes after it
        come from the next call.  For live tails (``TaskJournal.follow``).
        """
        offset = _shared.read_offset(offset)
        head, tail, total = self._parts()
        return _shared.read_from(head, tail, total, offset)

    def parts(self):
        """``(head, tail, total, sealed)``, read at one instant."""
        sealed = bool(self._sealed)
        head, tail, total = self._parts()
        return (head, tail, total, sealed)

    cdef tuple _parts(self):
        # Creating bytes and ints runs no Python code, so nothing can append
        # between these reads; the tuple that could trigger the GC comes last.
        if self._spilled:
            raise _shared.spilled_error()
        cdef bytes head = PyBytes_FromStringAndSize(<char *>self._head, self._head_len)
        cdef bytes tail = self._ring_bytes()
        total = self._total
        return (head, tail, total)

    def spill(self):
        """Release the storage and return a snapshot of what it held.

        The caller keeps the snapshot (in the store).  Appends go on into
        fresh storage; :meth:`unspill` with the same snapshot merges the two
        into exactly the buffer that never spilled.  Reads raise
        StreamSpilled until then.
        """
        if self._spilled:
            raise ValueError("this buffer is already spilled; unspill() it first")
        head, tail, total = self._parts()
        sealed = bool(self._sealed)
        # From here to the end of the state change no Python code runs, so
        # no append can fall between the read above and the release below.
        self._release_storage()
        self._spilled = True
        self._spill_total = self._total
        self._spill_head_len = len(head)
        self._spill_tail_len = len(tail)
        self._head_cap = self._head_limit - self._spill_head_len
        return _shared.encode_snapshot(_shared.SnapshotState(
            self._head_limit, self._tail_cap, total, sealed, head, tail))

    def unspill(self, snapshot):
        """Merge back the snapshot :meth:`spill` returned; reads work again."""
        if not self._spilled:
            raise ValueError("this buffer is not spilled")
        base = _shared.spill_base(snapshot, self._head_limit, self._tail_cap)
        if (base.total, len(base.head), len(base.tail)) != (
                self._spill_total, self._spill_head_len, self._spill_tail_len):
            raise _shared.CorruptSnapshot(
                "this snapshot is not the one this buffer spilled")
        cdef bytes base_head = base.head
        cdef bytes base_tail = base.tail
        cdef bytes head, tail, merged_tail
        cdef unsigned long long after
        # Atomic from here: only C-level bytes operations, no Python code.
        head = PyBytes_FromStringAndSize(<char *>self._head, self._head_len)
        tail = self._ring_bytes()
        after = self._total - self._spill_total
        if after > <unsigned long long>(len(head) + len(tail)):
            merged_tail = tail  # the new part overflowed the ring by itself
        else:
            merged_tail = base_tail + tail
            if len(merged_tail) > self._tail_cap:
                merged_tail = merged_tail[len(merged_tail) - self._tail_cap:]
        head = base_head + head
        total = self._total
        self._release_storage()
        self._spilled = False
        self._head_cap = self._head_limit
        self._append_raw(<const unsigned char *>PyBytes_AS_STRING(head), len(head))
        self._append_raw(<const unsigned char *>PyBytes_AS_STRING(merged_tail),
                         len(merged_tail))
        self._total = total

    def render(self, marker=_shared.DEFAULT_MARKER):
        """Head, then ``marker`` if bytes were dropped, then tail."""
        head, tail, total = self._parts()
        return _shared.render(head, tail, total, marker)

    def text(self, marker=_shared.DEFAULT_MARKER):
        """``render()`` decoded as UTF-8, never splitting a character at a cut."""
        head, tail, total = self._parts()
        return _shared.text(head, tail, total, marker)

    def snapshot(self):
        """A versioned, checksummed copy of the state, for ``restore()``."""
        sealed = bool(self._sealed)
        head, tail, total = self._parts()
        return _shared.encode_snapshot(_shared.SnapshotState(
            self._head_limit, self._tail_cap, total, sealed, head, tail))

    @classmethod
    def restore(cls, snapshot):
        """Rebuild the buffer a ``snapshot()`` was taken of; raise CorruptSnapshot."""
        state = _shared.decode_snapshot(snapshot)
        cdef HeadTailBuffer buf = cls(state.head_capacity, state.tail_capacity)
        cdef bytes head = state.head
        cdef bytes tail = state.tail
        buf._append_raw(<const unsigned char *>PyBytes_AS_STRING(head), len(head))
        buf._append_raw(<const unsigned char *>PyBytes_AS_STRING(tail), len(tail))
        buf._total = state.total
        buf._sealed = state.sealed
        return buf

    def __reduce__(self):
        return (type(self).restore, (self.snapshot(),))

    def __eq__(self, other):
        if not isinstance(other, HeadTailBuffer):
            return NotImplemented
        return self.snapshot() == other.snapshot()

    def __sizeof__(self):
        return object.__sizeof__(self) + self._head_alloc + self._ring_alloc

    def __repr__(self):
        return (
            f"<HeadTailBuffer head={self._head_limit} tail={self._tail_cap} "
            f"total={self._total} held={self._head_len + self._ring_len}"
            f"{' sealed' if self._sealed else ''}{' spilled' if self._spilled else ''}>"
        )
