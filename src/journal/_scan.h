/* The candidate filter of the highlight scanner (_buffer.pyx).
 *
 * Every byte that leaves a tail is searched for a few short patterns, ASCII
 * case-insensitively.  Testing each byte against each pattern costs far more
 * than the append that evicted it, so the scanner first asks this filter for
 * the next position where some pattern's chosen byte pair occurs, and
 * compares whole patterns only there.  A pair is picked per pattern to be
 * rare in logs ("rr" for "error"), so most blocks hold no candidate.
 *
 * Three ways to find candidates, fastest first, chosen once at run time:
 * - x86 with AVX2 or SSSE3: nibble lookups with PSHUFB ("Teddy", as in
 *   Hyperscan and ripgrep), 32 or 16 bytes at a time whatever the number
 *   of patterns, up to 8 pattern buckets;
 * - any x86-64: SSE2 compares, 16 bytes at a time, one compare pair per
 *   pattern;
 * - elsewhere: two table lookups per byte.
 * All three give the same answers; the tests run each.
 *
 * Folding is "| 0x20" on both sides, which maps 'A'-'Z' onto 'a'-'z' and
 * never makes two equal folded bytes unequal: a candidate can be false (the
 * caller checks the pattern exactly) but a real match is never missed.
 */

#ifndef JOURNAL_SCAN_H
#define JOURNAL_SCAN_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__SSE2__) || defined(_M_X64) || (defined(_M_IX86_FP) && _M_IX86_FP >= 2)
#include <emmintrin.h>
#define TJ_SSE2 1
#else
#define TJ_SSE2 0
#endif

/* PSHUFB and AVX2 need target attributes and a CPU check: GCC and Clang. */
#if TJ_SSE2 && (defined(__GNUC__) || defined(__clang__)) && \
    (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define TJ_TEDDY 1
#else
#define TJ_TEDDY 0
#endif

enum { TJ_PATH_TABLES = 0, TJ_PATH_SSE2 = 1, TJ_PATH_SSSE3 = 2, TJ_PATH_AVX2 = 3 };

/* The fastest path this CPU runs; tests may lower it. */
static int tj_path = -1;

static int tj_best_path(void) {
#if TJ_TEDDY
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) {
        return TJ_PATH_AVX2;
    }
    if (__builtin_cpu_supports("ssse3")) {
        return TJ_PATH_SSSE3;
    }
#endif
    return TJ_SSE2 ? TJ_PATH_SSE2 : TJ_PATH_TABLES;
}

/* Use ``path`` if this CPU can (-1: the best one, -2: keep the current
 * one); return the path in use. */
static int tj_use_path(int path) {
    int best;
    if (path == -2 && tj_path >= 0) {
        return tj_path;
    }
    best = tj_best_path();
    tj_path = (path < 0 || path > best) ? best : path;
    return tj_path;
}

#define TJ_MAX_PATTERNS 32

/* Teddy looks at three bytes from a pattern's chosen position, which makes
 * a position pass by chance far less often than with two: with 30 patterns
 * in 8 buckets every bucket accepts mixes of its patterns' nibbles, and two
 * bytes let common log pairs through (".c" of gcc's file names, from ".g"
 * and "(c" sharing a bucket: 14 false candidates a kilobyte, each a
 * mispredicted branch). */
#define TJ_TEDDY_BYTES 3

typedef struct {
    int count;                         /* patterns */
    unsigned char first[TJ_MAX_PATTERNS][16];   /* folded pair bytes, broadcast */
    unsigned char second[TJ_MAX_PATTERNS][16];  /* unused for 1-byte patterns */
    int single[TJ_MAX_PATTERNS];       /* 1-byte pattern: no second byte */
    uint32_t first_mask[256];          /* bit k: (byte | 0x20) == first of k */
    uint32_t second_mask[256];         /* bit k: (byte | 0x20) == second of k, or k single */
    uint32_t single_bits;              /* bit k: pattern k has one byte */
    /* Teddy: for each of the three bytes, the buckets (bit k % 8) whose
     * pattern may have a byte with this low (lo) and high (hi) nibble there;
     * each table twice over, as the 32-byte lanes of AVX2 want it. */
    unsigned char lo[TJ_TEDDY_BYTES][32];
    unsigned char hi[TJ_TEDDY_BYTES][32];
} tj_filter;

static void tj_filter_init(tj_filter *f) {
    memset(f, 0, sizeof(*f));
}

static void tj_teddy_nibbles(tj_filter *f, int j, unsigned char byte, unsigned char bucket) {
    f->lo[j][byte & 0x0f] |= bucket;
    f->lo[j][16 + (byte & 0x0f)] |= bucket;
    f->hi[j][byte >> 4] |= bucket;
    f->hi[j][16 + (byte >> 4)] |= bucket;
}

/* ``folded`` (already | 0x20) in either case, at Teddy byte ``j``. */
static void tj_teddy_add(tj_filter *f, int j, unsigned char folded, unsigned char bucket) {
    tj_teddy_nibbles(f, j, folded, bucket);
    if (folded >= 'a' && folded <= 'z') {
        tj_teddy_nibbles(f, j, (unsigned char)(folded - 32), bucket);
    } else {
        tj_teddy_nibbles(f, j, (unsigned char)(folded & ~0x20), bucket);  /* what | 0x20 also folds */
    }
}

/* A pattern shorter than three bytes lets its bucket take any byte past its
 * end (only its bucket: the others keep their filter). */
static void tj_teddy_any(tj_filter *f, int j, unsigned char bucket) {
    int n;
    for (n = 0; n < 32; n++) {
        f->lo[j][n] |= bucket;
        f->hi[j][n] |= bucket;
    }
}

/* Pattern k is looked for from its position ``at``, where it has ``length``
 * bytes (1 to 3 are used): the exact tables take the pair bytes[0:2] (one
 * byte when ``length`` is 1), Teddy all three, in bucket ``bucket`` (0 to 7;
 * the caller groups patterns whose bytes share nibbles, since a bucket
 * accepts every mix of its patterns' nibbles). */
static void tj_filter_set(tj_filter *f, int k, const unsigned char *bytes, int length,
                          int bucket) {
    int byte, j;
    uint32_t bit = (uint32_t)1 << k;
    unsigned char a = bytes[0] | 0x20, b = length > 1 ? (bytes[1] | 0x20) : 0;
    unsigned char bucket_bit = (unsigned char)(1u << bucket);
    int single = length == 1;
    memset(f->first[k], a, 16);
    memset(f->second[k], b, 16);
    f->single[k] = single;
    if (single) {
        f->single_bits |= bit;
    }
    for (byte = 0; byte < 256; byte++) {
        if ((unsigned char)(byte | 0x20) == a) {
            f->first_mask[byte] |= bit;
        }
        if (single || (unsigned char)(byte | 0x20) == b) {
            f->second_mask[byte] |= bit;
        }
    }
    if (k + 1 > f->count) {
        f->count = k + 1;
    }
    for (j = 0; j < TJ_TEDDY_BYTES; j++) {
        if (j < length) {
            tj_teddy_add(f, j, (unsigned char)(bytes[j] | 0x20), bucket_bit);
        } else {
            tj_teddy_any(f, j, bucket_bit);
        }
    }
}

/* Patterns whose pair starts at position i of data[0:size]; a pair needs
 * i + 1 < size, a single byte only i < size. */
static inline uint32_t tj_candidates_at(const tj_filter *f, const unsigned char *data,
                                        ptrdiff_t i, ptrdiff_t size) {
    uint32_t mask = f->first_mask[data[i]];
    if (mask == 0) {
        return 0;
    }
    return mask & (i + 1 < size ? f->second_mask[data[i + 1]] : f->single_bits);
}

/* Every way of finding the next candidate also counts the newlines it
 * passes over, since the scanner needs both and one pass over the bytes is
 * cheaper than two: ``*newlines`` grows by the '\n' bytes in
 * data[i : the candidate] (or to ``size`` when there is none). */
static ptrdiff_t tj_next_by_tables(const tj_filter *f, const unsigned char *data,
                                   ptrdiff_t i, ptrdiff_t size, ptrdiff_t *newlines) {
    for (; i < size; i++) {
        if (tj_candidates_at(f, data, i, size)) {
            return i;
        }
        *newlines += data[i] == '\n';
    }
    return -1;
}

/* Bit tricks rather than __builtin_popcount: without -mpopcnt that is a
 * library call, slower than this. */
static inline int tj_popcount(unsigned int bits) {
    bits = bits - ((bits >> 1) & 0x55555555u);
    bits = (bits & 0x33333333u) + ((bits >> 2) & 0x33333333u);
    bits = (bits + (bits >> 4)) & 0x0f0f0f0fu;
    return (int)((bits * 0x01010101u) >> 24);
}

static inline int tj_lowest_bit(unsigned int bits) {
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_ctz(bits);  /* bits != 0: one instruction everywhere */
#else
    int offset = 0;
    while (!(bits & 1u)) {
        bits >>= 1;
        offset++;
    }
    return offset;
#endif
}

/* A driver scans starts in [i, size - REACH) block by block: a block at j
 * answers for starts j .. j + WIDTH - 1 and reads data[j : j + WIDTH +
 * REACH] (REACH is 1 for the pair compares of SSE2, 2 for Teddy's three
 * bytes).  The last, partial stretch is one more full block ending there,
 * overlapping what was already scanned (its lower bits are shifted out), so
 * nothing past ``size`` is read.  The last REACH starts are left to the
 * exact tables, which look at pairs and single bytes only.
 *
 * PREPARE loads the filter's tables into TABLES once a call, so a block is
 * only its loads, lookups and compares.  BLOCK returns the candidate bits
 * and sets its last argument to the block's newline bytes as a vector of
 * 0xFF lanes.  Teddy's buckets are shared by several patterns, so some of
 * its bits are false: they are checked against the exact tables here,
 * inside the block, since leaving the loop for each one would restart the
 * scan a byte later.  Subtracting the newline lanes from a lane counter
 * costs one instruction a block; the lanes are added up (SUM) only when the
 * driver stops, or before a lane could pass 255. */
#define TJ_LOW_BITS(n) ((n) >= 32 ? 0xffffffffu : ((1u << (n)) - 1u))
#define TJ_DRIVER(ATTRIBUTE, NAME, WIDTH, REACH, VEC, TABLES, PREPARE, BLOCK, ZERO, SUB, SUM, \
                  MASK, SMALLER)                                                     \
    ATTRIBUTE static ptrdiff_t NAME(const tj_filter *f, const unsigned char *data,     \
                                    ptrdiff_t i, ptrdiff_t size, ptrdiff_t *newlines) { \
        unsigned int bits;                                                           \
        int at, blocks = 0;                                                          \
        VEC nl, lanes = ZERO;                                                        \
        TABLES tables;                                                               \
        if (size < (WIDTH) + (REACH)) {                                              \
            return SMALLER(f, data, i, size, newlines);                              \
        }                                                                            \
        PREPARE(f, &tables);                                                         \
        for (; i + (WIDTH) + (REACH) <= size; i += (WIDTH)) {                        \
            bits = BLOCK(&tables, data + i, &nl);                                    \
            for (; bits; bits &= bits - 1) {                                         \
                at = tj_lowest_bit(bits);                                            \
                if (!tj_candidates_at(f, data, i + at, size)) {                      \
                    continue;                                                        \
                }                                                                    \
                *newlines += SUM(lanes) + tj_popcount(MASK(nl) & TJ_LOW_BITS(at));   \
                return i + at;                                                       \
            }                                                                        \
            lanes = SUB(lanes, nl);                                                  \
            if (++blocks == 255) {                                                   \
                *newlines += SUM(lanes);                                             \
                lanes = ZERO;                                                        \
                blocks = 0;                                                          \
            }                                                                        \
        }                                                                            \
        *newlines += SUM(lanes);                                                     \
        if (i < size - (REACH)) {                                                    \
            ptrdiff_t last = size - (REACH) - (WIDTH);                               \
            unsigned int nl_bits;                                                    \
            bits = BLOCK(&tables, data + last, &nl) >> (i - last);                   \
            nl_bits = MASK(nl) >> (i - last);                                        \
            for (; bits; bits &= bits - 1) {                                         \
                at = tj_lowest_bit(bits);                                            \
                if (!tj_candidates_at(f, data, i + at, size)) {                      \
                    continue;                                                        \
                }                                                                    \
                *newlines += tj_popcount(nl_bits & TJ_LOW_BITS(at));                 \
                return i + at;                                                       \
            }                                                                        \
            *newlines += tj_popcount(nl_bits);                                       \
            i = size - (REACH);                                                      \
        }                                                                            \
        return tj_next_by_tables(f, data, i, size, newlines);                        \
    }

#if TJ_SSE2
static inline ptrdiff_t tj_sum128(__m128i lanes) {
    __m128i sums = _mm_sad_epu8(lanes, _mm_setzero_si128());
    return _mm_cvtsi128_si32(sums) + _mm_cvtsi128_si32(_mm_srli_si128(sums, 8));
}

static inline unsigned int tj_mask128(__m128i lanes) {
    return (unsigned int)_mm_movemask_epi8(lanes);
}

/* SSE2 compares each pattern's pair itself: its tables are the filter's. */
typedef struct {
    const tj_filter *f;
} tj_sse2_tables;

static inline void tj_prepare_sse2(const tj_filter *f, tj_sse2_tables *t) {
    t->f = f;
}

static inline unsigned int tj_block_sse2(const tj_sse2_tables *t, const unsigned char *p,
                                         __m128i *nl) {
    const tj_filter *f = t->f;
    const __m128i fold = _mm_set1_epi8(0x20);
    __m128i raw = _mm_loadu_si128((const __m128i *)p);
    __m128i lo = _mm_or_si128(raw, fold);
    __m128i hi = _mm_or_si128(_mm_loadu_si128((const __m128i *)(p + 1)), fold);
    __m128i hit = _mm_setzero_si128();
    int k;
    for (k = 0; k < f->count; k++) {
        __m128i eq = _mm_cmpeq_epi8(lo, _mm_loadu_si128((const __m128i *)f->first[k]));
        if (!f->single[k]) {
            eq = _mm_and_si128(eq, _mm_cmpeq_epi8(hi, _mm_loadu_si128((const __m128i *)f->second[k])));
        }
        hit = _mm_or_si128(hit, eq);
    }
    *nl = _mm_cmpeq_epi8(raw, _mm_set1_epi8('\n'));
    return (unsigned int)_mm_movemask_epi8(hit);
}

TJ_DRIVER(, tj_next_sse2, 16, 1, __m128i, tj_sse2_tables, tj_prepare_sse2, tj_block_sse2,
          _mm_setzero_si128(), _mm_sub_epi8, tj_sum128, tj_mask128, tj_next_by_tables)
#endif

#if TJ_TEDDY
typedef struct {
    __m128i lo[TJ_TEDDY_BYTES], hi[TJ_TEDDY_BYTES];
} tj_ssse3_tables;

__attribute__((target("ssse3")))
static inline void tj_prepare_ssse3(const tj_filter *f, tj_ssse3_tables *t) {
    int j;
    for (j = 0; j < TJ_TEDDY_BYTES; j++) {
        t->lo[j] = _mm_loadu_si128((const __m128i *)f->lo[j]);
        t->hi[j] = _mm_loadu_si128((const __m128i *)f->hi[j]);
    }
}

/* The buckets that accept the 16 bytes at p as Teddy byte j. */
__attribute__((target("ssse3")))
static inline __m128i tj_teddy128(const tj_ssse3_tables *t, int j, const unsigned char *p) {
    const __m128i nibble = _mm_set1_epi8(0x0f);
    __m128i v = _mm_loadu_si128((const __m128i *)p);
    return _mm_and_si128(_mm_shuffle_epi8(t->lo[j], _mm_and_si128(v, nibble)),
                         _mm_shuffle_epi8(t->hi[j], _mm_and_si128(_mm_srli_epi16(v, 4), nibble)));
}

__attribute__((target("ssse3")))
static inline unsigned int tj_block_ssse3(const tj_ssse3_tables *t, const unsigned char *p,
                                          __m128i *nl) {
    __m128i all = _mm_and_si128(_mm_and_si128(tj_teddy128(t, 0, p), tj_teddy128(t, 1, p + 1)),
                                tj_teddy128(t, 2, p + 2));
    __m128i none = _mm_cmpeq_epi8(all, _mm_setzero_si128());
    *nl = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)p), _mm_set1_epi8('\n'));
    return (unsigned int)_mm_movemask_epi8(none) ^ 0xffffu;
}

TJ_DRIVER(__attribute__((target("ssse3"))), tj_next_ssse3, 16, 2, __m128i, tj_ssse3_tables,
          tj_prepare_ssse3, tj_block_ssse3, _mm_setzero_si128(), _mm_sub_epi8, tj_sum128,
          tj_mask128, tj_next_by_tables)

__attribute__((target("avx2")))
static inline ptrdiff_t tj_sum256(__m256i lanes) {
    uint64_t sums[4];  /* not _mm256_extract_epi64: it does not exist on i386 */
    _mm256_storeu_si256((__m256i *)sums, _mm256_sad_epu8(lanes, _mm256_setzero_si256()));
    return (ptrdiff_t)(sums[0] + sums[1] + sums[2] + sums[3]);
}

__attribute__((target("avx2")))
static inline unsigned int tj_mask256(__m256i lanes) {
    return (unsigned int)_mm256_movemask_epi8(lanes);
}

typedef struct {
    __m256i lo[TJ_TEDDY_BYTES], hi[TJ_TEDDY_BYTES];
} tj_avx2_tables;

__attribute__((target("avx2")))
static inline void tj_prepare_avx2(const tj_filter *f, tj_avx2_tables *t) {
    int j;
    for (j = 0; j < TJ_TEDDY_BYTES; j++) {
        t->lo[j] = _mm256_loadu_si256((const __m256i *)f->lo[j]);
        t->hi[j] = _mm256_loadu_si256((const __m256i *)f->hi[j]);
    }
}

__attribute__((target("avx2")))
static inline __m256i tj_teddy256(const tj_avx2_tables *t, int j, const unsigned char *p) {
    const __m256i nibble = _mm256_set1_epi8(0x0f);
    __m256i v = _mm256_loadu_si256((const __m256i *)p);
    return _mm256_and_si256(
        _mm256_shuffle_epi8(t->lo[j], _mm256_and_si256(v, nibble)),
        _mm256_shuffle_epi8(t->hi[j], _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble)));
}

__attribute__((target("avx2")))
static inline unsigned int tj_block_avx2(const tj_avx2_tables *t, const unsigned char *p,
                                         __m256i *nl) {
    __m256i all = _mm256_and_si256(
        _mm256_and_si256(tj_teddy256(t, 0, p), tj_teddy256(t, 1, p + 1)),
        tj_teddy256(t, 2, p + 2));
    __m256i none = _mm256_cmpeq_epi8(all, _mm256_setzero_si256());
    *nl = _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)p), _mm256_set1_epi8('\n'));
    return ~(unsigned int)_mm256_movemask_epi8(none);
}

TJ_DRIVER(__attribute__((target("avx2"))), tj_next_avx2, 32, 2, __m256i, tj_avx2_tables,
          tj_prepare_avx2, tj_block_avx2, _mm256_setzero_si256(), _mm256_sub_epi8, tj_sum256,
          tj_mask256, tj_next_ssse3)
#endif

/* The first i in [start, size) where some pattern's pair starts, or -1.
 * Teddy candidates are a superset of the table ones: keep only those. */
static ptrdiff_t tj_next_candidate(const tj_filter *f, const unsigned char *data,
                                   ptrdiff_t i, ptrdiff_t size, ptrdiff_t *newlines) {
    while (i >= 0 && i < size) {
        switch (tj_path) {
#if TJ_TEDDY
        case TJ_PATH_AVX2:
            i = tj_next_avx2(f, data, i, size, newlines);
            break;
        case TJ_PATH_SSSE3:
            i = tj_next_ssse3(f, data, i, size, newlines);
            break;
#endif
#if TJ_SSE2
        case TJ_PATH_SSE2:
            i = tj_next_sse2(f, data, i, size, newlines);
            break;
#endif
        default:
            return tj_next_by_tables(f, data, i, size, newlines);
        }
        if (i < 0 || tj_candidates_at(f, data, i, size)) {
            return i;
        }
        *newlines += data[i] == '\n';  /* '*' folds like '\n' */
        i++;
    }
    return -1;
}

/* Ask for the cache lines of data[0:size] at once.  Bytes leaving a tail
 * were written a whole tail ago and are cold: read one line after another,
 * the scan waits on memory at every line, while the append that evicts them
 * only writes (which waits on nothing).  Asked for all together, the lines
 * arrive in parallel; with write intent, since that append overwrites them
 * right after the scan. */
static inline void tj_prefetch(const unsigned char *data, ptrdiff_t size) {
#if defined(__GNUC__) || defined(__clang__)
    ptrdiff_t at;
    for (at = 0; at < size; at += 64) {
        __builtin_prefetch(data + at, 1, 3);
    }
#else
    (void)data;
    (void)size;
#endif
}

/* Index of the last '\n' in data[0:size], or -1.  glibc's memrchr is
 * vectorised; it is not portable, hence the loop elsewhere. */
static ptrdiff_t tj_last_newline(const unsigned char *data, ptrdiff_t size) {
#if defined(__GLIBC__) && defined(_GNU_SOURCE)
    const unsigned char *found = (const unsigned char *)memrchr(data, '\n', (size_t)size);
    return found ? found - data : -1;
#else
    ptrdiff_t i = size;
    while (i > 0) {
        i--;
        if (data[i] == '\n') {
            return i;
        }
    }
    return -1;
#endif
}

#endif /* JOURNAL_SCAN_H */
