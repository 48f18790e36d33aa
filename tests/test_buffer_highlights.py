"""Highlight lines: both buffers against the reference model, and their edges."""

from __future__ import annotations

import struct
import threading
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_model import reference_highlights

from journal import CorruptSnapshot
from journal._highlights import DEFAULT_PATTERNS, Highlight, HighlightRules

# Fragments chosen to make lines split across appends, patterns split across
# appends and across the head/tail border, CRLF, multi-byte characters and
# lines longer than the limit likely.
FRAGMENTS = [
    b"\n", b"\r\n", b"ok ", b"Err", b"or", b"ERROR", b"error: x", b"fail", b"FAI", b"led",
    b"panic", b"\xc3\xa9", b"\xe2\x82\xac", b"\xf0\x9f\x98\x80", b"a" * 40, b"warn ",
    b"e", b"r", b"o",
]
PATTERN_SETS = [("error",), ("error", "failed", "panic"), ("rr", "é"), ("e",)]


@st.composite
def rules(draw):
    patterns = draw(st.sampled_from(PATTERN_SETS))
    budget = draw(st.integers(2, 120))
    limit = draw(st.integers(1, budget // 2))
    return HighlightRules(patterns, budget, limit)


chunks = st.lists(
    st.lists(st.sampled_from(FRAGMENTS), max_size=6).map(b"".join), max_size=40
)


def _check(buf, data, head, tail, rule):
    kept, skipped, lines = reference_highlights(data, head, tail, rule)
    assert buf.highlights() == kept
    assert buf.highlights_skipped == skipped
    assert buf.dropped_lines == lines


@settings(max_examples=300, deadline=None)
@given(rule=rules(), head=st.integers(0, 48), tail=st.integers(0, 48), parts=chunks)
def test_highlights_match_the_model(buffer_cls, rule, head, tail, parts):
    buf = buffer_cls(head, tail, rule)
    data = b""
    for part in parts:
        buf.append(part)
        data += part
        _check(buf, data, head, tail, rule)


@settings(max_examples=200, deadline=None)
@given(
    rule=rules(), head=st.integers(0, 48), tail=st.integers(1, 48),
    steps=st.lists(st.tuples(st.sampled_from(["append", "spill", "restore", "seal"]),
                             st.lists(st.sampled_from(FRAGMENTS), max_size=8).map(b"".join)),
                   max_size=40),
)
def test_spills_and_restores_change_nothing(buffer_cls, rule, head, tail, steps):
    buf = buffer_cls(head, tail, rule)
    data = b""
    for action, part in steps:
        if action == "append" and not buf.sealed:
            buf.append(part)
            data += part
        elif action == "spill":
            snapshot = buf.spill()
            if not buf.sealed:
                buf.append(part)  # appends go on while spilled
                data += part
            buf.unspill(snapshot)
        elif action == "restore":
            buf = buffer_cls.restore(buf.snapshot())
        else:
            buf.seal()
        _check(buf, data, head, tail, rule)


@settings(max_examples=200, deadline=None)
@given(rule=rules(), head=st.integers(0, 32), tail=st.integers(0, 32), parts=chunks)
def test_twins_render_the_same_bytes(both_buffer_classes, rule, head, tail, parts):
    compiled, pure = (cls(head, tail, rule) for cls in both_buffer_classes)
    for part in parts:
        compiled.append(part)
        pure.append(part)
    assert compiled.render() == pure.render()
    assert compiled.text() == pure.text()
    assert compiled.snapshot() == pure.snapshot()


def test_first_error_in_the_middle_of_10_mb_is_shown(buffer_cls):
    buf = buffer_cls(20_000, 20_000, HighlightRules())
    line = b"cc -O2 -c src/module_%06d.c -o build/module_%06d.o\n"
    for n in range(60_000):
        buf.append(line % (n, n))
    buf.append(b"src/parser.c:412:9: error: 'tokn' undeclared (first use in this function)\n")
    for n in range(60_000, 200_000):
        buf.append(line % (n, n))
    assert buf.total > 10_000_000
    rendered = buf.text()
    assert "src/parser.c:412:9: error: 'tokn' undeclared" in rendered
    assert "[line 60001] src/parser.c:412:9" in rendered
    assert f"{buf.dropped:,}".replace(",", "") in rendered
    assert len(rendered) < 45_000


def test_marker_states_bytes_lines_and_highlights(buffer_cls):
    buf = buffer_cls(4, 4, HighlightRules(["bad"]))
    buf.append(b"head\nbad one\nfine\nBAD two\nxyz\n")
    kept = buf.highlights()
    assert [h.text for h in kept] == [b"bad one", b"BAD two"]
    assert [h.line for h in kept] == [2, 4]
    assert [h.offset for h in kept] == [5, 18]
    assert buf.render() == (
        b"head\n[... " + str(buf.dropped).encode() + b" bytes, 4 lines omitted; "
        b"2 highlighted lines follow ...]\n"
        b"[line 2] bad one\n[line 4] BAD two\n"
        b"[... end of highlights; the last 4 bytes follow ...]\nxyz\n"
    )
    assert buf.render("<{dropped}|{lines}|{highlights}>").startswith(b"head<22|4|2>[line 2]")
    with pytest.raises(ValueError, match="its fields are"):
        buf.render("{nope}")


def test_pattern_split_across_appends_and_the_head_border(buffer_cls):
    buf = buffer_cls(3, 2, HighlightRules(["error"]))
    for piece in (b"xxE", b"r", b"Ro", b"r here\n", b"more\n", b"zz"):
        buf.append(piece)
    assert buf.highlights() == [Highlight(1, 0, b"xxErRor here")]


def test_crlf_and_long_lines_are_cut_at_characters(buffer_cls):
    rules = HighlightRules(["error"], budget=64, line_limit=10)
    buf = buffer_cls(0, 1, rules)
    buf.append(b"error one\r\n")
    buf.append(b"error \xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\n")  # the cut falls inside a euro sign
    buf.append(b"x")
    assert [h.text for h in buf.highlights()] == [b"error one", b"error \xe2\x82\xac"]


def test_rules_read_only_the_kept_part_of_a_line(buffer_cls):
    # A match past line_limit is not seen: a highlight would not show it.
    buf = buffer_cls(0, 0, HighlightRules(["fatal"], budget=16, line_limit=8))
    buf.append(b"0123456789" * 5 + b"fatal\n")
    buf.append(b"fatal 0123456789\n")
    assert buf.highlights() == [Highlight(2, 56, b"fatal 01")]


def test_budget_keeps_the_first_and_the_latest(buffer_cls):
    buf = buffer_cls(0, 0, HighlightRules(["e"], budget=40, line_limit=10))
    for n in range(100):
        buf.append(b"e%04d\n" % n)  # 5 bytes of text each
    kept = [h.text for h in buf.highlights()]
    assert kept == [b"e%04d" % n for n in (0, 1, 2, 3, 96, 97, 98, 99)]
    assert buf.highlights_skipped == 92
    text = buf.text()
    assert text.index("e0003") < text.index("92 more highlighted lines not kept") < text.index("e0096")


def test_lines_still_in_the_tail_are_not_highlights(buffer_cls):
    buf = buffer_cls(0, 100, HighlightRules())
    buf.append(b"error in the tail\n")
    assert buf.highlights() == [] and buf.dropped_lines == 0
    assert buf.render() == b"error in the tail\n"


def test_buffers_without_rules_are_unchanged(buffer_cls):
    buf = buffer_cls(2, 2)
    buf.append(b"error error\n")
    assert buf.highlight_rules is None and buf.highlights() == []
    assert buf.dropped_lines is None
    assert buf.render() == b"er\n[... 8 bytes omitted ...]\nr\n"


def test_highlights_survive_snapshots_and_count_in_sizeof(buffer_cls):
    buf = buffer_cls(8, 8, HighlightRules())
    buf.append(b"start...\n" + b"a failed step\n" * 3 + b"end\n")
    copy = buffer_cls.restore(buf.snapshot())
    assert copy == buf and copy.highlights() == buf.highlights()
    assert copy.highlight_rules == HighlightRules()
    copy.append(b"panic: more\n" + b"." * 20)
    assert copy.highlights()[-1] == Highlight(6, 55, b"panic: more")
    assert buf.__sizeof__() > buffer_cls(8, 8).__sizeof__() + 3 * len(b"a failed step")


def _v1_snapshot(head_cap, tail_cap, total, sealed, head, tail):
    header = struct.pack("<4sBBHQQQQQ", b"TJHB", 1, int(sealed), 0, head_cap, tail_cap,
                         total, len(head), len(tail))
    body = header + head + tail
    return body + struct.pack("<I", zlib.crc32(body))


def test_version_1_snapshots_still_restore(buffer_cls):
    old = _v1_snapshot(4, 4, 20, True, b"abcd", b"wxyz")
    buf = buffer_cls.restore(old)
    assert (buf.head(), buf.tail(), buf.total, buf.sealed) == (b"abcd", b"wxyz", 20, True)
    assert buf.highlight_rules is None
    assert buf.snapshot()[4] == 3  # written back in the current version


def test_a_highlight_section_in_a_version_1_snapshot_is_rejected(buffer_cls):
    snap = bytearray(buffer_cls(4, 4, HighlightRules()).snapshot())
    snap[4] = 1
    snap[-4:] = struct.pack("<I", zlib.crc32(bytes(snap[:-4])))
    with pytest.raises(CorruptSnapshot, match="unknown flags|padded"):
        buffer_cls.restore(bytes(snap))


def test_inconsistent_highlight_sections_are_rejected(buffer_cls):
    buf = buffer_cls(2, 2, HighlightRules(["x"]))
    buf.append(b"ab\nx1\nx2\ncd")
    snap = bytearray(buf.snapshot())
    section = 48 + 2 + 2  # header, head, tail
    fed = section + 12  # the u64 after budget, line limit and four flag bytes
    snap[fed : fed + 8] = struct.pack("<Q", 10**6)
    snap[-4:] = struct.pack("<I", zlib.crc32(bytes(snap[:-4])))
    with pytest.raises(CorruptSnapshot, match="scanned past the end"):
        buffer_cls.restore(bytes(snap))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"patterns": []}, ValueError, "at least one"),
        ({"patterns": "error"}, TypeError, "not a single one"),
        ({"patterns": [b""]}, ValueError, "1 to 64"),
        ({"patterns": ["a\nb"]}, ValueError, "newline"),
        ({"patterns": [3]}, TypeError, "str, bytes or HighlightRule"),
        ({"patterns": ["p%d" % n for n in range(33)]}, ValueError, "at most 32"),
        ({"patterns": ["p%d" % n for n in range(65)]}, ValueError, "at most 64"),
        ({"budget": 1}, ValueError, "budget"),
        ({"budget": 100, "line_limit": 51}, ValueError, "line_limit"),
        ({"line_limit": 1.5}, TypeError, "line_limit"),
    ],
)
def test_bad_rules_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        HighlightRules(**kwargs)


def test_rules_fold_patterns_and_compare_by_value():
    rules = HighlightRules(["ERROR", b"Fatal", "error"])
    assert rules.patterns == (b"error", b"fatal")
    assert rules == HighlightRules(["error", "fatal"]) and hash(rules) == hash(HighlightRules(["error", "fatal"]))
    assert HighlightRules().rules == DEFAULT_PATTERNS
    with pytest.raises(AttributeError):
        rules.budget = 1  # type: ignore[misc]


def test_buffer_refuses_rules_of_the_wrong_type(buffer_cls):
    with pytest.raises(TypeError, match="HighlightRules"):
        buffer_cls(4, 4, ["error"])


def test_threads_lose_no_highlight(buffer_cls):
    # Lines are 16 bytes, so the head and the tail hold whole lines.
    buf = buffer_cls(1024, 1024, HighlightRules(["error"], budget=1 << 20, line_limit=64))

    def work(thread):
        for n in range(2000):
            line = b"t%02d %05d %s\n" % (thread, n, b"error" if n % 10 == 0 else b"fine!")
            buf.append(line)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    head, tail = buf.head(), buf.tail()
    visible = head.count(b"error") + tail.count(b"error")
    assert len(buf.highlights()) + buf.highlights_skipped + visible == 16 * 200
    assert buf.highlights_skipped == 0
    assert all(h.text.endswith(b"error") for h in buf.highlights())


SCAN_PATHS = ["tables", "sse2", "ssse3", "avx2"]


@pytest.fixture(params=SCAN_PATHS)
def scan_path(request, both_buffer_classes):
    """Every way the compiled scanner can find candidates on this CPU; a path
    the CPU lacks falls back to the best it has, so it is skipped here."""
    module = __import__(both_buffer_classes[0].__module__, fromlist=["_scan_path"])
    if module._scan_path(request.param) != request.param:
        module._scan_path("best")
        pytest.skip(f"this CPU cannot run the {request.param} path")
    yield request.param
    module._scan_path("best")


# Patterns that stress the candidate filter: one- and two-byte patterns
# (shorter than Teddy's three bytes, so their bucket takes any byte past
# their end), '*' (which folds like '\n' in the SSE2 and table filters),
# more patterns than Teddy has buckets, and runs split across 16- and
# 32-byte blocks.
FILTER_PATTERN_SETS = [
    ("e",), ("*",), ("a*b", "x"), ("ab", "**", "q"), ("zq", "error"),
    tuple(f"p{n}q" for n in range(12)),
    ("error", "fatal", "exception", "traceback", "failed", "panic"),
]
FILTER_FRAGMENTS = FRAGMENTS + [b"*", b"\n*\n", b"p3q", b"P11Q", b"a*B", b"x" * 33, b"-" * 31,
                                b"aB", b"Zq", b"q", b"ERRor"]


# The path stays set for all of a test's examples, so sharing it is sound.
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    patterns=st.sampled_from(FILTER_PATTERN_SETS), head=st.integers(0, 40),
    tail=st.integers(0, 40),
    parts=st.lists(st.lists(st.sampled_from(FILTER_FRAGMENTS), max_size=12).map(b"".join),
                   max_size=30),
)
def test_every_scan_path_matches_the_model(scan_path, both_buffer_classes, patterns, head,
                                           tail, parts):
    rule = HighlightRules(patterns, budget=4096, line_limit=64)
    compiled = both_buffer_classes[0](head, tail, rule)
    data = b""
    for part in parts:
        compiled.append(part)
        data += part
    _check(compiled, data, head, tail, rule)


def test_scan_paths_agree_on_a_large_log(scan_path, both_buffer_classes):
    rule = HighlightRules(budget=1 << 20, line_limit=200)
    lines = [b"gcc -c src/m%05d.c -o m%05d.o" % (n, n) for n in range(20_000)]
    for n in range(0, 20_000, 997):
        lines[n] = b"src/m%05d.c:3:1: ERROR: expected ';'" % n
    data = b"\n".join(lines) + b"\n"
    compiled = both_buffer_classes[0](1000, 1000, rule)
    for start in range(0, len(data), 4093):
        compiled.append(data[start : start + 4093])
    _check(compiled, data, 1000, 1000, rule)
    assert len([h for h in compiled.highlights() if not h.context]) == 20
