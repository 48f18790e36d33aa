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
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.string cimport memchr, memcmp, memcpy, memmove

from journal import _buffer_shared as _shared
from journal import _highlights as _hl

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


# ASCII case folding, the only folding patterns get (as bytes.lower()).
cdef unsigned char _FOLD[256]
for _i in range(256):
    _FOLD[_i] = _i + 32 if 65 <= _i <= 90 else _i

cdef extern from "_scan.h":
    ctypedef struct tj_filter:
        pass
    void tj_filter_init(tj_filter *f) nogil
    void tj_filter_set(tj_filter *f, int k, const unsigned char *bytes, int length,
                       int bucket) nogil
    unsigned int tj_candidates_at(const tj_filter *f, const unsigned char *data,
                                  Py_ssize_t i, Py_ssize_t size) nogil
    Py_ssize_t tj_next_candidate(const tj_filter *f, const unsigned char *data,
                                 Py_ssize_t start, Py_ssize_t size, Py_ssize_t *newlines) nogil
    Py_ssize_t tj_last_newline(const unsigned char *data, Py_ssize_t size) nogil
    void tj_prefetch(const unsigned char *data, Py_ssize_t size) nogil
    int tj_use_path(int path) nogil


_SCAN_PATHS = ("tables", "sse2", "ssse3", "avx2")
tj_use_path(-1)


def _scan_path(name=None):
    """The way highlight candidates are found: ``"avx2"``, ``"ssse3"``,
    ``"sse2"`` or ``"tables"``.  With ``name``, switch to it if this CPU can
    (tests run every path); ``"best"`` goes back to the fastest.  Returns the
    path in use."""
    if name is not None:
        tj_use_path(-1 if name == "best" else _SCAN_PATHS.index(name))
    return _SCAN_PATHS[tj_use_path(-2)]


# Rough frequency (percent) of bytes in English text and logs, to pick for
# each pattern the byte pair the filter will see least often.
cdef dict _LETTER_FREQUENCY = dict(zip(
    b"etaoinshrdlcumwfgypbvkjxqz",
    [12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4, 2.2, 2.0,
     2.0, 1.9, 1.5, 1.0, 0.8, 0.15, 0.15, 0.1, 0.07]))
cdef frozenset _COMMON_PAIRS = frozenset(
    b"th he in er an re on at en nd ti es or te of ed is it al ar st to nt ng se ha as ou "
    b"io le ve co me de hi ri ro ic ne ea ra ce li ch ll be ma si om ur".split())


# Punctuation that logs are full of (paths, positions, options, numbers):
# a pair of these is no rarer than a pair of letters.
cdef dict _LOG_PUNCTUATION = {
    ord(":"): 5.0, ord("/"): 4.0, ord("."): 4.0, ord("-"): 3.0, ord("_"): 3.0,
    ord("="): 2.0, **{byte: 3.0 for byte in b"0123456789"}}


cdef double _frequency(int byte):
    if byte == 32:
        return 15.0
    if byte in _LOG_PUNCTUATION:
        return _LOG_PUNCTUATION[byte]
    return _LETTER_FREQUENCY.get(_FOLD[byte], 1.0 if byte < 128 else 0.5)


cdef int _TEDDY_BYTES = 3  # _scan.h: TJ_TEDDY_BYTES


cdef Py_ssize_t _rarest_run(bytes pattern):
    """Where in ``pattern`` the filter looks: the start of the run of
    _TEDDY_BYTES bytes (fewer in a shorter pattern) that logs have least
    often, judged by its first pair and then by the whole run."""
    cdef Py_ssize_t best = 0, at, width = min(_TEDDY_BYTES, len(pattern))
    cdef double score, best_score = -1.0
    if width < 2:
        return 0  # one byte: nothing to choose
    for at in range(len(pattern) - width + 1):
        score = _frequency(pattern[at]) * _frequency(pattern[at + 1])
        if pattern[at:at + 2] in _COMMON_PAIRS:
            score *= 10.0
        if width > 2:
            score *= _frequency(pattern[at + 2]) / 10.0
        if best_score < 0 or score < best_score:
            best, best_score = at, score
    return best


cdef list _accepted(list bytes_at):
    """The bytes a Teddy bucket lets through at one of its positions, when
    its patterns have ``bytes_at`` there (both cases): every mix of their
    low and high nibbles."""
    variants = set()
    for byte in bytes_at:
        variants |= {byte, byte - 32} if 97 <= byte <= 122 else {byte, byte & ~0x20}
    low = {v & 15 for v in variants}
    high = {v >> 4 for v in variants}
    return [x for x in range(256) if x & 15 in low and x >> 4 in high]


cdef list _buckets(list runs):
    """A Teddy bucket (0 to 7) for each run of folded bytes (1 to
    _TEDDY_BYTES of them), so that the buckets let through as few log bytes
    as can be: each run goes where it adds least to the chance that a bucket
    passes a position at random, bytes weighted by how often logs have them.
    Putting pattern k in bucket k % 8 made 30 patterns pass about one
    position in six."""
    cdef list weight = [(_frequency(x) if x >= 32 or x in (9, 10) else 0.01) for x in range(256)]
    cdef double total = sum(weight)

    def chance(members):
        if not members:
            return 0.0
        result = 1.0
        for j in range(_TEDDY_BYTES):
            at_j = [run[j] for run in members if j < len(run)]
            if len(at_j) < len(members):
                break  # a shorter run: its bucket takes any byte from here on
            result *= sum(weight[x] for x in _accepted(at_j)) / total
        return result

    groups = [[] for _ in range(8)]
    chosen = []
    for run in runs:
        costs = [chance(group + [run]) - chance(group) for group in groups]
        best = costs.index(min(costs))
        groups[best].append(run)
        chosen.append(best)
    return chosen


cdef class _Filter:
    """The patterns of one HighlightRules, ready for the scan: shared by
    every scanner with those rules, since the tables are a few kilobytes."""

    cdef tj_filter table
    cdef tuple patterns  # keeps the bytes the pointers below point into alive
    cdef const unsigned char *pattern[32]
    cdef Py_ssize_t length[32]
    cdef Py_ssize_t offset[32]  # where in the pattern its filter pair starts
    cdef int count
    cdef Py_ssize_t window_size  # longest pattern - 1
    cdef Py_ssize_t max_offset
    # The rules, as HighlightRules.rows has them (see HighlightRules.verdict).
    cdef int rows, max_before
    cdef int row_pattern[64]
    cdef int row_anchor[64]
    cdef int row_before[64]
    cdef int row_after[64]
    cdef int unless_count[64]
    cdef const unsigned char *unless[64][16]
    cdef Py_ssize_t unless_length[64][16]
    cdef bint unless_anchored[64][16]
    cdef list _texts  # keeps the unless bytes alive

    def __cinit__(self, rules):
        cdef int k
        cdef bytes pattern
        tj_filter_init(&self.table)
        self.patterns = rules.patterns
        self.count = len(self.patterns)
        self.window_size = 0
        self.max_offset = 0
        for k in range(self.count):
            pattern = self.patterns[k]
            self.pattern[k] = <const unsigned char *>PyBytes_AS_STRING(pattern)
            self.length[k] = len(pattern)
            self.window_size = max(self.window_size, len(pattern) - 1)
            self.offset[k] = _rarest_run(pattern)
            self.max_offset = max(self.max_offset, self.offset[k])
        runs = [bytes(byte | 0x20 for byte in p[self.offset[k]:self.offset[k] + _TEDDY_BYTES])
                for k, p in enumerate(self.patterns)]
        buckets = _buckets(runs)
        for k in range(self.count):
            pattern = self.patterns[k]
            tj_filter_set(&self.table, k,
                          <const unsigned char *>PyBytes_AS_STRING(pattern) + self.offset[k],
                          min(_TEDDY_BYTES, len(pattern) - self.offset[k]), buckets[k])
        cdef int r, u
        cdef bytes text
        self._texts = []
        self.rows = len(rules.rows)
        self.max_before = rules.max_before
        for r in range(self.rows):
            row = rules.rows[r]
            self.row_pattern[r] = row.pattern
            self.row_anchor[r] = row.anchor
            self.row_before[r] = row.before
            self.row_after[r] = row.after
            self.unless_count[r] = len(row.unless)
            for u in range(len(row.unless)):
                text, anchored = row.unless[u]
                self._texts.append(text)
                self.unless[r][u] = <const unsigned char *>PyBytes_AS_STRING(text)
                self.unless_length[r][u] = len(text)
                self.unless_anchored[r][u] = anchored

    cdef bint verdict(self, const unsigned char *text, Py_ssize_t size, bint complete,
                      int *before, int *after) noexcept:
        """``HighlightRules.verdict`` in C: whether a line whose first bytes
        are ``text`` matches a rule, and the context its rules ask for."""
        cdef Py_ssize_t start = 0, end = -1, length, low
        cdef const unsigned char *pattern
        cdef int r, u, anchor
        cdef unsigned int present
        cdef bint found = False, vetoed, word
        while start < size and (text[start] == 32 or text[start] == 9):
            start += 1
        if complete:
            end = size
            while end > 0 and (text[end - 1] == 13 or text[end - 1] == 32
                               or text[end - 1] == 9):
                end -= 1
        before[0] = after[0] = 0
        # A row can only match where its pattern occurs: which ones do is one
        # pass of the filter, where trying each of thirty rows on the line
        # was thirty passes.
        present = self.present(text, size)
        for r in range(self.rows):
            if not present & (1u << self.row_pattern[r]):
                continue
            pattern = self.pattern[self.row_pattern[r]]
            length = self.length[self.row_pattern[r]]
            anchor = self.row_anchor[r]
            word = anchor & 4
            if anchor & 2:  # at the end
                low = start if anchor & 1 else 0
                if end < 0 or end - length < low or (anchor & 1 and end - start != length):
                    continue
                if not _equal_folded(text + end - length, pattern, length):
                    continue
                if word and not _is_word(text, size, end - length, length):
                    continue
            elif anchor & 1:  # at the start
                if size - start < length or not _equal_folded(text + start, pattern, length):
                    continue
                if word and not _is_word(text, size, start, length):
                    continue
            elif not _contains_folded(text, size, pattern, length, word):
                continue
            vetoed = False
            for u in range(self.unless_count[r]):
                if self.unless_anchored[r][u]:
                    vetoed = (size - start >= self.unless_length[r][u] and memcmp(
                        text + start, self.unless[r][u], self.unless_length[r][u]) == 0)
                else:
                    vetoed = _contains(text, size, self.unless[r][u], self.unless_length[r][u])
                if vetoed:
                    break
            if vetoed:
                continue
            found = True
            if self.row_before[r] > before[0]:
                before[0] = self.row_before[r]
            if self.row_after[r] > after[0]:
                after[0] = self.row_after[r]
        return found

    cdef unsigned int present(self, const unsigned char *data, Py_ssize_t size) noexcept:
        """Bit k: pattern k occurs (ASCII case-insensitively) in data[0:size]."""
        cdef Py_ssize_t i = 0, at, newlines = 0
        cdef unsigned int mask, found = 0
        cdef int k
        while True:
            i = tj_next_candidate(&self.table, data, i, size, &newlines)
            if i < 0:
                return found
            mask = tj_candidates_at(&self.table, data, i, size) & ~found
            for k in range(self.count):
                if mask & (1u << k):
                    at = i - self.offset[k]
                    if (at >= 0 and at + self.length[k] <= size
                            and _equal_folded(data + at, self.pattern[k], self.length[k])):
                        found |= 1u << k
            i += 1

    cdef Py_ssize_t find(self, const unsigned char *data, Py_ssize_t start,
                         Py_ssize_t size, Py_ssize_t *newlines) noexcept:
        """Where the first pattern match lying in data[start:size] begins, or
        -1; adds to ``newlines`` the '\n' bytes before it (or in all of it)."""
        cdef Py_ssize_t i = start, best = -1, at, seen = 0, seen_at_best = 0
        cdef unsigned int mask
        cdef int k
        while True:
            i = tj_next_candidate(&self.table, data, i, size, &seen)
            # A candidate further on than this cannot begin before ``best``.
            if i < 0 or (best >= 0 and i >= best + self.max_offset):
                # Between a match's start and its pair there are only its
                # own bytes, never a newline: the count at the pair holds.
                newlines[0] += seen_at_best if best >= 0 else seen
                return best
            mask = tj_candidates_at(&self.table, data, i, size)
            for k in range(self.count):
                if mask & (1u << k):
                    at = i - self.offset[k]
                    if (at >= start and at + self.length[k] <= size
                            and (best < 0 or at < best)
                            and _equal_folded(data + at, self.pattern[k], self.length[k])):
                        best = at
                        seen_at_best = seen
            seen += data[i] == 10
            i += 1


cdef dict _FILTERS = {}


cdef _Filter _filter_for(rules):
    cdef _Filter found = _FILTERS.get(rules)
    if found is None:
        if len(_FILTERS) >= 256:  # rules made on the fly: do not hoard them
            _FILTERS.clear()
        found = _FILTERS[rules] = _Filter(rules)
    return found


cdef inline bint _equal_folded(const unsigned char *data, const unsigned char *pattern,
                               Py_ssize_t size) noexcept:
    cdef Py_ssize_t i
    for i in range(size):
        if _FOLD[data[i]] != pattern[i]:
            return False
    return True


cdef bint _contains_folded(const unsigned char *data, Py_ssize_t size,
                           const unsigned char *pattern, Py_ssize_t length,
                           bint word) noexcept:
    # Only candidate lines get here, and rules look at line_limit bytes of
    # them: a plain loop is enough.
    cdef Py_ssize_t i
    for i in range(size - length + 1):
        if _FOLD[data[i]] == pattern[0] and _equal_folded(data + i, pattern, length):
            if not word or _is_word(data, size, i, length):
                return True
    return False


cdef inline bint _is_lower(unsigned char c) noexcept:
    return 97 <= c <= 122


cdef inline bint _is_word_byte(unsigned char c) noexcept:
    return _is_lower(c) or 65 <= c <= 90 or 48 <= c <= 57 or c == 95


cdef bint _is_word(const unsigned char *data, Py_ssize_t size, Py_ssize_t at,
                   Py_ssize_t length) noexcept:
    """data[at:at + length] is a word of its own (see HighlightRule.word)."""
    cdef unsigned char c
    if at > 0:
        c = data[at - 1]
        if _is_word_byte(c) and not (_is_lower(c) and 65 <= data[at] <= 90):
            return False  # inside a word, unless at a CamelCase step
    if at + length < size:
        c = data[at + length]
        if _is_word_byte(c) and not _is_lower(c):
            return False
    return True


cdef bint _contains(const unsigned char *data, Py_ssize_t size, const unsigned char *text,
                    Py_ssize_t length) noexcept:
    cdef const unsigned char *at = data
    cdef const unsigned char *end = data + size - length
    while at <= end:
        at = <const unsigned char *>memchr(at, text[0], end - at + 1)
        if at == NULL:
            return False
        if memcmp(at, text, length) == 0:
            return True
        at += 1
    return False


cdef class _Scanner:
    """The highlight scanner of the compiled buffer; see ``_scanner_py.Scanner``,
    its twin, for what it does.  Called only from HeadTailBuffer methods that
    run no Python code, so it needs no lock of its own."""

    cdef readonly object rules
    cdef _Filter _filter
    cdef Py_ssize_t _limit, _budget
    cdef readonly unsigned long long fed, head_lines, lines, skipped
    cdef readonly bint head_done
    cdef unsigned long long _line_start, _line_length
    cdef bint _matched, _first_closed
    # The current line's first bytes (_limit at most), grown as needed:
    # most lines are short, and a hub holds many scanners.
    cdef unsigned char *_carry
    cdef Py_ssize_t _carry_len, _carry_alloc
    cdef unsigned char _window[64]  # its last bytes, _filter.window_size at most
    cdef Py_ssize_t _window_len
    cdef list _first, _recent
    cdef Py_ssize_t _first_bytes, _recent_bytes
    cdef int _after_left  # context lines owed to the last matching line
    cdef list _prev  # context entries: the last lines not kept, for ``before``

    def __cinit__(self, rules, state=None):
        self.rules = rules
        self._filter = _filter_for(rules)
        self._limit = rules.line_limit
        self._budget = rules.budget
        if state is None:
            state = _hl.ScannerState(rules, 0, False, 0, 0, 0, 0, False, b"", b"", (), False,
                                     (), 0)
        self.fed = state.fed
        self.head_done = state.head_done
        self.head_lines = state.head_lines
        self.lines = state.lines
        self._line_start = state.line_start
        self._line_length = state.line_length
        self._matched = state.matched
        self._carry_add(<const unsigned char *>PyBytes_AS_STRING(state.carry), len(state.carry))
        self._window_len = len(state.window)
        memcpy(self._window, PyBytes_AS_STRING(state.window), self._window_len)
        self._first = list(state.first)
        self._recent = list(state.recent)
        self._first_bytes = _text_bytes(self._first)
        self._recent_bytes = _text_bytes(self._recent)
        self._first_closed = state.first_closed
        self.skipped = state.skipped
        self._after_left = state.after_left
        self._prev = list(state.prev)

    def __dealloc__(self):
        PyMem_Free(self._carry)

    cdef void _carry_add(self, const unsigned char *data, Py_ssize_t size) noexcept:
        cdef Py_ssize_t room = self._limit - self._carry_len, wanted
        cdef void *grown
        if size > room:
            size = room
        if size <= 0:
            return
        if self._carry_len + size > self._carry_alloc:
            wanted = max(64, self._carry_alloc * 2, self._carry_len + size)
            wanted = min(wanted, self._limit)
            grown = PyMem_Realloc(self._carry, wanted)
            if grown == NULL:
                return  # the line is kept shorter, as if it were cut
            self._carry = <unsigned char *>grown
            self._carry_alloc = wanted
        memcpy(self._carry + self._carry_len, data, size)
        self._carry_len += size

    cdef void _slide_window(self, const unsigned char *data, Py_ssize_t size) noexcept:
        cdef Py_ssize_t keep, window_size = self._filter.window_size
        if size >= window_size:
            memcpy(self._window, data + size - window_size, window_size)
            self._window_len = window_size
            return
        keep = window_size - size
        if keep > self._window_len:
            keep = self._window_len
        memmove(self._window, self._window + self._window_len - keep, keep)
        memcpy(self._window + keep, data, size)
        self._window_len = keep + size

    cdef inline void _extend(self, const unsigned char *data, Py_ssize_t size) noexcept:
        """The current line goes on with ``size`` more bytes."""
        if self._carry_len < self._limit:
            self._carry_add(data, size)
        self._line_length += <unsigned long long>size
        self._slide_window(data, size)

    cdef inline void _new_line(self, unsigned long long start) noexcept:
        self._line_start = start
        self._line_length = 0
        self._matched = False
        self._carry_len = 0
        self._window_len = 0

    cdef void _pass_over(self, const unsigned char *data, Py_ssize_t start,
                         Py_ssize_t end, Py_ssize_t newlines, bint emit) noexcept:
        """data[start:end], with ``newlines`` '\n' bytes, holds no match:
        count its lines, keep nothing but the last ones a rule may want as
        context before a later match."""
        cdef Py_ssize_t last
        if newlines == 0:
            self._extend(data + start, end - start)
            return
        last = start + tj_last_newline(data + start, end - start)
        if emit and self._filter.max_before:
            self._hold_lines(data, start, last, newlines)
        self.lines += <unsigned long long>newlines
        self._new_line(self.fed + <unsigned long long>(last + 1))
        self._extend(data + last + 1, end - last - 1)

    cdef void _hold_lines(self, const unsigned char *data, Py_ssize_t start, Py_ssize_t last,
                          Py_ssize_t newlines) noexcept:
        """Hold the last lines that end in data[start:last + 1]; ``newlines`` end there."""
        cdef Py_ssize_t ends[16]
        cdef Py_ssize_t count = 1, wanted = self._filter.max_before, k, begin, end, size
        cdef unsigned long long number
        cdef bytes raw
        if wanted > newlines:
            wanted = newlines
        ends[0] = last
        while count < wanted:
            ends[count] = start + tj_last_newline(data + start, ends[count - 1] - start)
            count += 1
        number = self.lines + <unsigned long long>(newlines - count + 1)
        for k in range(count - 1, -1, -1):
            end = ends[k]
            begin = tj_last_newline(data + start, end - start)
            if begin < 0:
                # No newline before it here: it is the line the carry began
                # (which _pass_over resets right after).
                self._carry_add(data + start, end - start)
                raw = self._entry(number, self._line_start, self._carry, self._carry_len,
                                  self._line_length + <unsigned long long>(end - start), True)
            else:
                begin += start + 1
                size = end - begin
                if size > self._limit:
                    size = self._limit
                raw = self._entry(number, self.fed + <unsigned long long>begin, data + begin,
                                  size, <unsigned long long>(end - begin), True)
            if raw is not None:
                self._hold(raw)
            number += 1

    cdef void _hold(self, bytes raw) noexcept:
        try:
            self._prev.append(raw)
            if len(self._prev) > self._filter.max_before:
                del self._prev[0]
        except MemoryError:
            pass  # the line is only not offered as context

    cdef bytes _entry(self, unsigned long long number, unsigned long long start,
                      const unsigned char *text, Py_ssize_t size, unsigned long long length,
                      bint context):
        """An entry for a line, or None when it cannot be allocated.  Only
        C-level object operations: no Python code runs, so the append that got
        here stays atomic."""
        cdef bytes raw
        cdef unsigned char *out
        if length > <unsigned long long>size:
            size = _complete_prefix_len(text, size)  # cut: never half a character
        elif size > 0 and text[size - 1] == 13:
            size -= 1  # CRLF
        try:
            raw = PyBytes_FromStringAndSize(NULL, _ENTRY_HEADER_SIZE + size)
        except MemoryError:
            return None
        out = <unsigned char *>PyBytes_AS_STRING(raw)
        _put_u64(out, number | (_CONTEXT_BIT if context else 0))
        _put_u64(out + 8, start)
        memcpy(out + _ENTRY_HEADER_SIZE, text, size)
        return raw

    cdef void _end_line(self) noexcept:
        """The current line of the dropped middle ended: keep it if a rule
        matches it (with its context) or if it is owed as context."""
        cdef int before = 0, after = 0
        cdef Py_ssize_t k, held
        cdef bint found = False
        cdef bytes raw
        if self._matched:
            found = self._filter.verdict(
                self._carry, self._carry_len,
                self._line_length <= <unsigned long long>self._carry_len, &before, &after)
        if found:
            held = len(self._prev)
            k = held - before if before < held else 0
            while k < held:
                self._keep(self._prev[k])
                k += 1
            del self._prev[:]
            raw = self._entry(self.lines + 1, self._line_start, self._carry, self._carry_len,
                              self._line_length, False)
            if raw is None:
                self.skipped += 1
            else:
                self._keep(raw)
            self._after_left = after if after > self._after_left - 1 else self._after_left - 1
        elif self._after_left:
            del self._prev[:]
            raw = self._entry(self.lines + 1, self._line_start, self._carry, self._carry_len,
                              self._line_length, True)
            if raw is None:
                self.skipped += 1
            else:
                self._keep(raw)
            self._after_left -= 1
        elif self._filter.max_before:
            raw = self._entry(self.lines + 1, self._line_start, self._carry, self._carry_len,
                              self._line_length, True)
            if raw is not None:
                self._hold(raw)

    cdef void feed(self, const unsigned char *data, Py_ssize_t size, bint emit) noexcept:
        """Scan the next ``size`` bytes of the stream; keep matching lines when ``emit``.

        The filter finds the next match; everything before its line is only
        counted, so a stretch without matches costs a pass of the filter and
        one of the newline count."""
        cdef Py_ssize_t position = 0, end, found, reach, newlines = 0
        cdef const unsigned char *newline
        cdef unsigned char joined[128]
        if size <= 0:
            return
        if not self._matched and self._window_len > 0:
            # A match may begin in the bytes the line had before these.
            reach = min(size, self._filter.window_size)
            newline = <const unsigned char *>memchr(data, 10, reach)
            if newline != NULL:
                reach = newline - data
            memcpy(joined, self._window, self._window_len)
            memcpy(joined + self._window_len, data, reach)
            if self._filter.find(joined, 0, self._window_len + reach, &newlines) >= 0:
                self._matched = True
        while position < size:
            if self._matched or self._after_left:
                # A candidate line, or one owed as context: taken whole.
                newline = <const unsigned char *>memchr(data + position, 10, size - position)
                end = size if newline == NULL else newline - data
                if not self._matched:
                    newlines = 0
                    if self._filter.find(data, position, end, &newlines) >= 0:
                        self._matched = True
                self._extend(data + position, end - position)
                if newline == NULL:
                    break
                if emit:
                    self._end_line()
                self.lines += 1
                self._new_line(self.fed + <unsigned long long>(end + 1))
                position = end + 1
                continue
            newlines = 0
            found = self._filter.find(data, position, size, &newlines)
            if found < 0:
                self._pass_over(data, position, size, newlines, emit)
                break
            # Up to the match: lines without one, then the start of its line.
            self._pass_over(data, position, found, newlines, emit)
            self._matched = True
            position = found
        self.fed += <unsigned long long>size

    cdef void finish_head(self, const unsigned char *data, Py_ssize_t size) noexcept:
        self.feed(data, size, False)
        self.head_done = True
        self.head_lines = self.lines

    cdef void _keep(self, bytes raw) noexcept:
        # Only C-level object operations (see _entry).  A line that cannot be
        # kept is counted as not kept rather than failing the append.
        cdef Py_ssize_t size = PyBytes_GET_SIZE(raw) - _ENTRY_HEADER_SIZE
        try:
            if not self._first_closed:
                if self._first_bytes + size <= self._budget // 2:
                    self._first.append(raw)
                    self._first_bytes += size
                    return
                self._first_closed = True
            self._recent.append(raw)
        except MemoryError:
            self.skipped += 1
            return
        self._recent_bytes += size
        while self._first_bytes + self._recent_bytes > self._budget:
            raw = self._recent.pop(0)
            self._recent_bytes -= len(raw) - _ENTRY_HEADER_SIZE
            self.skipped += 1

    cdef bytes kept_blob(self):
        """The kept entries, earliest first, each after its u32 length.

        One bytes object, not lists: nothing the garbage collector tracks is
        allocated while a reader copies the buffer's state, so no collection
        (and no finalizer that could let another thread append) can run in
        the middle of that copy."""
        return _joined(self._first, self._recent)

    cdef object state(self):
        return _hl.ScannerState(
            self.rules, self.fed, self.head_done, self.head_lines, self.lines,
            self._line_start, self._line_length, self._matched,
            PyBytes_FromStringAndSize(<char *>self._carry, self._carry_len),
            PyBytes_FromStringAndSize(<char *>self._window, self._window_len),
            tuple(self._first), self._first_closed, tuple(self._recent), self.skipped,
            self._after_left, tuple(self._prev),
        )

    cdef Py_ssize_t held(self):
        return (self._first_bytes + self._recent_bytes
                + (len(self._first) + len(self._recent)) * _ENTRY_HEADER_SIZE
                + self._carry_alloc + sizeof(self._window) + _text_bytes(self._prev)
                + len(self._prev) * _ENTRY_HEADER_SIZE)


cdef bytes _joined(list first, list second):
    """Entries as one bytes object, each after its u32 length (see kept_blob)."""
    cdef Py_ssize_t size = 0, offset = 0, length
    cdef bytes blob
    cdef char *out
    for raw in first:
        size += 4 + len(raw)
    for raw in second:
        size += 4 + len(raw)
    blob = PyBytes_FromStringAndSize(NULL, size)
    out = PyBytes_AS_STRING(blob)
    for entries in (first, second):
        for raw in <list>entries:
            length = PyBytes_GET_SIZE(raw)
            _put_u32(<unsigned char *>out + offset, <unsigned int>length)
            memcpy(out + offset + 4, PyBytes_AS_STRING(raw), length)
            offset += 4 + length
    return blob


cdef Py_ssize_t _ENTRY_HEADER_SIZE = 16  # _highlights.ENTRY_HEADER: two u64, little-endian
cdef unsigned long long _CONTEXT_BIT = 1ULL << 63  # _highlights.CONTEXT_BIT
assert _hl.ENTRY_HEADER.size == _ENTRY_HEADER_SIZE and _hl.CONTEXT_BIT == _CONTEXT_BIT


cdef inline void _put_u32(unsigned char *out, unsigned int value) noexcept:
    cdef int i
    for i in range(4):
        out[i] = <unsigned char>(value >> (8 * i))


cdef inline void _put_u64(unsigned char *out, unsigned long long value) noexcept:
    cdef int i
    for i in range(8):
        out[i] = <unsigned char>(value >> (8 * i))


cdef Py_ssize_t _complete_prefix_len(const unsigned char *data, Py_ssize_t end) noexcept:
    """``_highlights.complete_prefix_len`` in C."""
    cdef Py_ssize_t start = end - 1, needed
    cdef unsigned char lead
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


cdef Py_ssize_t _text_bytes(list entries):
    cdef Py_ssize_t total = 0
    for raw in entries:
        total += len(raw) - _ENTRY_HEADER_SIZE
    return total


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
    # The ring's capacity: the tail, and with highlight rules the scan window
    # after it.  Bytes in the ring older than the last _tail_cap have left the
    # tail but are not scanned yet; they are scanned in one pass when the
    # window is full and before anything reads the ring or the scanner
    # (_flush_window), so an append does what the floor does: a memcpy.
    cdef Py_ssize_t _ring_cap
    cdef Py_ssize_t _head_len
    cdef Py_ssize_t _head_alloc
    cdef Py_ssize_t _ring_start
    cdef Py_ssize_t _ring_len
    cdef Py_ssize_t _ring_alloc
    cdef unsigned long long _total
    cdef unsigned long long _appends  # calls to append() on this object, for metrics
    cdef bint _sealed
    # While spilled, the storage holds only what came after the spill; the
    # spilled part (in the store) had this total, head and tail length.
    cdef bint _spilled
    cdef unsigned long long _spill_total
    cdef Py_ssize_t _spill_head_len
    cdef Py_ssize_t _spill_tail_len
    cdef _Scanner _scanner  # None without highlight rules
    # While spilled with highlight rules: the scanner as it will be once the
    # spilled tail has left the ring (see spill()).
    cdef _Scanner _spill_scanner

    def __init__(self, head, tail, highlights=None):
        cdef Py_ssize_t head_cap = _shared.capacity(head, "head")
        cdef Py_ssize_t tail_cap = _shared.capacity(tail, "tail")
        rules = _hl.rules_or_none(highlights)
        self._release_storage()
        self._head_limit = self._head_cap = head_cap
        self._tail_cap = self._ring_cap = tail_cap
        self._scanner = None
        if rules is not None:
            self._scanner = self._new_scanner(rules, None)
            self._ring_cap = tail_cap + self._window()
        self._total = 0
        self._appends = 0
        self._sealed = False
        self._spilled = False
        self._spill_scanner = None

    def __dealloc__(self):
        PyMem_Free(self._head)
        PyMem_Free(self._ring)

    cdef _Scanner _new_scanner(self, rules, state):
        return _Scanner(rules, state)

    cdef Py_ssize_t _window(self):
        # No window without a tail: there is nothing to hold the bytes in.
        return _hl.window_for(self._tail_cap) if self._tail_cap else 0

    cdef void _release_storage(self) noexcept:
        self._release_head()
        PyMem_Free(self._ring)
        self._ring = NULL
        self._ring_start = self._ring_len = self._ring_alloc = 0

    cdef void _release_head(self) noexcept:
        PyMem_Free(self._head)
        self._head = NULL
        self._head_len = self._head_alloc = 0

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
        if size > 0 and self._ring_alloc < self._ring_cap:
            needed = self._ring_len + size
            if needed > self._ring_alloc:
                needed = _grown(self._ring_alloc, needed, self._ring_cap)
                grown = PyMem_Realloc(self._ring, needed)
                if grown == NULL:
                    raise MemoryError()
                self._ring = <unsigned char *>grown
                self._ring_alloc = needed
        return 0

    cdef inline void _write(self, const unsigned char *data, Py_ssize_t size) noexcept:
        """Copy ``size`` bytes in; ``_reserve(size)`` must have succeeded."""
        cdef Py_ssize_t cap = self._ring_cap
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
        cdef Py_ssize_t to_head, scanned
        # Once both parts have their full storage nothing is ever allocated.
        if self._head_alloc < self._head_cap or self._ring_alloc < self._ring_cap:
            self._reserve(size)
        if self._scanner is not None:
            to_head = self._head_cap - self._head_len
            if to_head > size:
                to_head = size
            if to_head < 0:
                to_head = 0
            if self._ring_len + (size - to_head) > self._ring_cap:
                # The window is full: scan what leaves the tail, in one pass.
                scanned = self._scan_evicted(data, size, to_head)
                if scanned:
                    self._write_head(data, to_head)
                    self._total += <unsigned long long>scanned
                    data += to_head + scanned
                    size -= to_head + scanned
        self._write(data, size)
        return 0

    cdef inline void _write_head(self, const unsigned char *data, Py_ssize_t size) noexcept:
        memcpy(self._head + self._head_len, data, size)
        self._head_len += size
        self._total += <unsigned long long>size

    cdef void _flush_window(self) noexcept:
        """Scan the bytes that left the tail and wait in the window; called
        before anything reads the ring or the scanner."""
        if self._scanner is not None and self._ring_len > self._tail_cap:
            self._scan_evicted(NULL, 0, 0)

    cdef Py_ssize_t _scan_evicted(self, const unsigned char *data, Py_ssize_t size,
                                  Py_ssize_t to_head) noexcept:
        """Show the scanner, in stream order, every byte that is past the last
        ``_tail_cap`` once ``data`` (``to_head`` of it for the head) is
        appended, and drop them from the ring.  Returns how many bytes of
        ``data``, after its head part, were scanned that way: the caller
        skips them, and what it writes then fits the tail exactly."""
        cdef Py_ssize_t excess, from_ring, first, base
        cdef _Scanner scanner = self._scanner
        excess = self._ring_len + (size - to_head) - self._tail_cap
        if excess <= 0:
            return 0
        if self._spill_scanner is not None:
            # All of the spilled tail has now left the ring, before these bytes.
            scanner = self._scanner = self._spill_scanner
            self._spill_scanner = None
        if not scanner.head_done:
            # Eviction begins: the scanner first reads the rest of the head,
            # including the part this very append completes.
            base = self._spill_head_len if self._spilled else 0
            scanner.feed(self._head + (<Py_ssize_t>scanner.fed - base),
                         self._head_len - (<Py_ssize_t>scanner.fed - base), False)
            scanner.finish_head(data, to_head)
        from_ring = excess if excess < self._ring_len else self._ring_len
        if from_ring > 0:
            # Oldest first; in the linear phase _ring_start is 0.
            first = self._ring_alloc - self._ring_start
            if first > from_ring:
                first = from_ring
            tj_prefetch(self._ring + self._ring_start, first)
            tj_prefetch(self._ring, from_ring - first)
            scanner.feed(self._ring + self._ring_start, first, True)
            if from_ring > first:
                scanner.feed(self._ring, from_ring - first, True)
            self._ring_len -= from_ring
            if self._ring_alloc < self._ring_cap:
                # Linear phase: the bytes must stay at the start.
                memmove(self._ring, self._ring + from_ring, self._ring_len)
            else:
                self._ring_start += from_ring
                if self._ring_start >= self._ring_alloc:
                    self._ring_start -= self._ring_alloc
        if excess > from_ring:
            scanner.feed(data + to_head, excess - from_ring, True)
        return excess - from_ring

    def append(self, object data):
        """Add ``data`` to the stream; raise StreamSealed once sealed."""
        cdef Py_buffer view
        if self._sealed:
            raise _shared.sealed_error()
        if PyBytes_CheckExact(data):
            self._append_raw(<const unsigned char *>PyBytes_AS_STRING(data),
                             PyBytes_GET_SIZE(data))
            self._appends += 1
            return
        try:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        except (TypeError, BufferError):
            _shared.reject_append(data)  # raises a clearer error
            raise
        try:
            self._append_raw(<const unsigned char *>view.buf, view.len)
            self._appends += 1
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
    def appends(self):
        """Calls to ``append`` on this object (not carried by snapshots)."""
        return self._appends

    @property
    def dropped(self):
        """Bytes appended but no longer held, here or in a spilled part."""
        cdef unsigned long long after, held
        cdef Py_ssize_t tail_len = self._tail_len()
        if not self._spilled:
            return self._total - <unsigned long long>(self._head_len + tail_len)
        # What the merge in unspill() will keep, worked out from counters.
        after = self._total - self._spill_total
        if after == <unsigned long long>(self._head_len + tail_len):
            tail_len = self._spill_tail_len + tail_len
            if tail_len > self._tail_cap:
                tail_len = self._tail_cap
        held = self._spill_head_len + self._head_len + tail_len
        return self._total - held

    def __len__(self):
        """Bytes held in memory (while spilled, only what came after the spill)."""
        return self._head_len + self._tail_len()

    cdef inline Py_ssize_t _tail_len(self) noexcept:
        """Bytes of the tail: the ring may hold more, waiting in the window."""
        return self._ring_len if self._ring_len < self._tail_cap else self._tail_cap

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
        self._flush_window()  # the ring then holds the tail and no more
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

    def view(self):
        """``parts()`` and the highlights, read at one instant: ``(head, tail,
        total, sealed, highlights, highlights_first, highlights_skipped,
        dropped_lines)`` (the fields of ``journal.StreamView`` after its name)."""
        head, tail, total, sealed, scanned = self._read(False)
        return (head, tail, total, sealed) + _shared.view_of(self._scan_of(scanned))

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
        cdef _Scanner scanner = self._scanner
        cdef _Scanner ahead = None
        cdef unsigned long long seen
        if self._spilled:
            raise ValueError("this buffer is already spilled; unspill() it first")
        self._flush_window()
        if scanner is not None and not self._sealed:
            if not scanner.head_done:
                if self._ring_len:  # the head is full
                    scanner.finish_head(self._head + <Py_ssize_t>scanner.fed,
                                        self._head_len - <Py_ssize_t>scanner.fed)
                else:
                    scanner.feed(self._head + <Py_ssize_t>scanner.fed,
                                 self._head_len - <Py_ssize_t>scanner.fed, False)
            # The spilled tail leaves the ring while it is away if enough new
            # bytes arrive, and must be scanned first: scan it now, into a
            # copy that takes over only if that happens.  Building the copy
            # runs Python code, so an append may slip in: then build it again.
            while self._ring_len:
                self._flush_window()
                seen = self._total
                ahead = self._new_scanner(scanner.rules, scanner.state())
                tail = self._ring_bytes()
                if seen != self._total:
                    continue
                ahead.feed(<const unsigned char *>PyBytes_AS_STRING(tail), len(tail), True)
                if seen == self._total:
                    break
        # _state switches to spilled storage the instant it has read it, before
        # any Python code could run, so no append can fall in between and be lost.
        return _shared.encode_snapshot(self._state(True, ahead))

    cdef void _become_spilled(self, _Scanner ahead) noexcept:
        self._spill_total = self._total
        self._spill_head_len = self._head_len
        self._spill_tail_len = self._ring_len
        self._release_storage()
        self._spilled = True
        self._spill_scanner = ahead
        self._head_cap = self._head_limit - self._spill_head_len

    def unspill(self, snapshot):
        """Merge back the snapshot :meth:`spill` returned; reads work again."""
        if not self._spilled:
            raise ValueError("this buffer is not spilled")
        base = _shared.spill_base(snapshot, self._head_limit, self._tail_cap)
        self._flush_window()  # spill_base ran Python code: appends may have come
        if (base.total, len(base.head), len(base.tail)) != (
                self._spill_total, self._spill_head_len, self._spill_tail_len):
            raise _shared.CorruptSnapshot(
                "this snapshot is not the one this buffer spilled")
        cdef bytes base_head = base.head
        cdef bytes base_tail = base.tail
        cdef bytes head, tail, merged_tail
        cdef unsigned long long after
        cdef Py_ssize_t evicted
        # Atomic from here: only C-level bytes operations, no Python code.
        head = PyBytes_FromStringAndSize(<char *>self._head, self._head_len)
        tail = self._ring_bytes()
        after = self._total - self._spill_total
        if after > <unsigned long long>(len(head) + len(tail)):
            merged_tail = tail  # the new part overflowed the ring by itself
        else:
            merged_tail = base_tail + tail
            evicted = len(merged_tail) - self._tail_cap
            if evicted > 0:
                merged_tail = merged_tail[evicted:]
                if self._spill_scanner is not None:
                    self._scanner.feed(<const unsigned char *>PyBytes_AS_STRING(base_tail),
                                       evicted, True)
        head = base_head + head
        total = self._total
        self._release_storage()
        self._spilled = False
        self._spill_scanner = None
        self._head_cap = self._head_limit
        # Rebuilding never evicts (the tail fits), so the scanner sees nothing.
        self._append_raw(<const unsigned char *>PyBytes_AS_STRING(head), len(head))
        self._append_raw(<const unsigned char *>PyBytes_AS_STRING(merged_tail),
                         len(merged_tail))
        self._total = total

    @property
    def highlight_rules(self):
        """The rules this buffer keeps highlight lines by, or None."""
        return None if self._scanner is None else self._scanner.rules

    def highlights(self):
        """Lines kept from the dropped middle: the earliest, then the most recent."""
        if self._scanner is None:
            return []
        self._flush_window()
        entries = _hl.split_entries(self._scanner.kept_blob())
        return _shared.scan_view(0, entries, [], 0).kept

    @property
    def highlights_skipped(self):
        """Matching lines of the dropped middle that the budget did not keep."""
        if self._scanner is None:
            return 0
        self._flush_window()
        return self._scanner.skipped

    @property
    def dropped_lines(self):
        """Newlines in the dropped middle; None without highlight rules."""
        if self._scanner is None:
            return None
        self._flush_window()
        return self._scanner.lines - self._scanner.head_lines if self._scanner.head_done else 0

    cdef tuple _read(self, bint full, bint release=False, _Scanner ahead=None):
        """Everything a reader needs, copied at one instant.

        Only bytes and ints are made until every field is copied (and, for
        ``spill``, the storage released), so no Python code can run in between (see ``kept_blob``); the objects that can
        start a collection are built afterwards.  ``full`` adds what a
        snapshot needs beyond what rendering needs."""
        cdef _Scanner scanner = self._scanner
        cdef bytes blob = None, carry = None, window = None, prev = None
        cdef Py_ssize_t first_count = 0
        cdef int after_left = 0
        cdef unsigned long long fed = 0, head_lines = 0, lines = 0, line_start = 0
        cdef unsigned long long line_length = 0, skipped = 0
        cdef bint head_done = False, matched = False, first_closed = False
        if self._spilled:
            raise _shared.spilled_error()
        head = PyBytes_FromStringAndSize(<char *>self._head, self._head_len)
        tail = self._ring_bytes()
        total = self._total
        sealed = bool(self._sealed)
        if scanner is not None:
            blob = scanner.kept_blob()
            first_count = len(scanner._first)
            if full:
                carry = PyBytes_FromStringAndSize(<char *>scanner._carry, scanner._carry_len)
                window = PyBytes_FromStringAndSize(<char *>scanner._window, scanner._window_len)
                prev = _joined(scanner._prev, [])
            fed, head_done, head_lines, lines = (
                scanner.fed, scanner.head_done, scanner.head_lines, scanner.lines)
            line_start, line_length, matched = (
                scanner._line_start, scanner._line_length, scanner._matched)
            first_closed, skipped = scanner._first_closed, scanner.skipped
            after_left = scanner._after_left
        if release:
            self._become_spilled(ahead)
        if scanner is None:
            return (head, tail, total, sealed, None)
        numbers = (fed, head_done, head_lines, lines, line_start, line_length, matched,
                   first_closed, skipped, after_left)
        return (head, tail, total, sealed, (blob, first_count, carry, window, prev, numbers))

    cdef object _scan_of(self, tuple scanned):
        if scanned is None:
            return None
        blob, first_count, _, _, _, numbers = scanned
        fed, head_done, head_lines, lines, _, _, _, _, skipped, _ = numbers
        entries = _hl.split_entries(blob)
        return _shared.scan_view(lines - head_lines if head_done else 0,
                                 entries[:first_count], entries[first_count:], skipped)

    cdef object _state(self, bint release=False, _Scanner ahead=None):
        head, tail, total, sealed, scanned = self._read(True, release, ahead)
        scanner = None
        if scanned is not None:
            blob, first_count, carry, window, prev, numbers = scanned
            (fed, head_done, head_lines, lines, line_start, line_length, matched,
             first_closed, skipped, after_left) = numbers
            entries = _hl.split_entries(blob)
            scanner = _hl.ScannerState(
                self._scanner.rules, fed, head_done, head_lines, lines, line_start,
                line_length, matched, carry, window, tuple(entries[:first_count]),
                first_closed, tuple(entries[first_count:]), skipped, after_left,
                tuple(_hl.split_entries(prev)))
        return _shared.SnapshotState(
            self._head_limit, self._tail_cap, total, sealed, head, tail, scanner)

    def render(self, marker=None):
        """Head, then a marker and any highlight lines if bytes were dropped, then tail."""
        head, tail, total, _, scanned = self._read(False)
        return _shared.render(head, tail, total, marker, self._scan_of(scanned))

    def text(self, marker=None):
        """``render()`` decoded as UTF-8, never splitting a character at a cut."""
        head, tail, total, _, scanned = self._read(False)
        return _shared.text(head, tail, total, marker, self._scan_of(scanned))

    def snapshot(self):
        """A versioned, checksummed copy of the state, for ``restore()``."""
        return _shared.encode_snapshot(self._state())

    @classmethod
    def restore(cls, snapshot):
        """Rebuild the buffer a ``snapshot()`` was taken of; raise CorruptSnapshot."""
        state = _shared.decode_snapshot(snapshot)
        cdef HeadTailBuffer buf = cls(state.head_capacity, state.tail_capacity)
        cdef bytes head = state.head
        if state.scanner is not None:
            buf._ring_cap = buf._tail_cap + buf._window()  # the ring is still empty
        cdef bytes tail = state.tail
        buf._append_raw(<const unsigned char *>PyBytes_AS_STRING(head), len(head))
        buf._append_raw(<const unsigned char *>PyBytes_AS_STRING(tail), len(tail))
        buf._total = state.total
        buf._sealed = state.sealed
        if state.scanner is not None:
            buf._scanner = buf._new_scanner(state.scanner.rules, state.scanner)
        return buf

    def __reduce__(self):
        return (type(self).restore, (self.snapshot(),))

    def __eq__(self, other):
        if not isinstance(other, HeadTailBuffer):
            return NotImplemented
        return self.snapshot() == other.snapshot()

    def __sizeof__(self):
        cdef Py_ssize_t held = 0 if self._scanner is None else self._scanner.held()
        if self._spill_scanner is not None:
            held += self._spill_scanner.held()
        return object.__sizeof__(self) + self._head_alloc + self._ring_alloc + held

    def __repr__(self):
        return (
            f"<HeadTailBuffer head={self._head_limit} tail={self._tail_cap} "
            f"total={self._total} held={self._head_len + self._tail_len()}"
            f"{' sealed' if self._sealed else ''}{' spilled' if self._spilled else ''}>"
        )
