"""Highlight rules as data: anchors, exclusions and context, in both twins,
against the reference model; the default table against real tools' lines."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_model import reference_highlights

from journal import HighlightRules
from journal._highlight_rules import DEFAULT_RULES, HighlightRule
from journal._highlights import Highlight

# Fragments that make anchors, exclusions and context likely to meet: text
# at a line's start after indentation, at its end before blanks and CR, and
# exclusions in both cases.
FRAGMENTS = [
    b"\n", b"\r\n", b"  ", b"\t", b"FAIL", b"fail", b"--- FAIL: T", b"ok ", b"... ok", b"PASSED",
    b"passed", b"Err", b"or", b"error", b"x", b"not ok 3", b"a" * 20, b" ", b"\xe2\x9c\x96",
    b"_", b"Key", b"P", b"s", b"0", b"-W",
]
RULE_SETS = [
    (HighlightRule("e", "error", ("PASSED", "^ok "), after=1),),
    (HighlightRule("start", "^fail", before=2), HighlightRule("end", "ok$")),
    (HighlightRule("whole", "^fail$", after=3), HighlightRule("e", "err", ("... ok",), 1, 1)),
    (HighlightRule("x", "x", ("^x",), before=1, after=1), "error"),
    (HighlightRule("tap", "^not ok "), HighlightRule("cross", "\u2716", (), 3, 0)),
    (HighlightRule("w", "error", word=True), HighlightRule("w2", "^fail", word=True, after=1),
     HighlightRule("w3", "ok$", ("PASSED",), word=True)),
    DEFAULT_RULES,
]


@st.composite
def rule_sets(draw):
    rows = draw(st.sampled_from(RULE_SETS))
    budget = draw(st.integers(2, 160))
    limit = draw(st.integers(1, min(budget // 2, 40)))
    return HighlightRules(rows, budget, limit)


parts = st.lists(st.lists(st.sampled_from(FRAGMENTS), max_size=8).map(b"".join), max_size=40)


def _check(buf, data, head, tail, rules):
    kept, skipped, lines = reference_highlights(data, head, tail, rules)
    assert buf.highlights() == kept
    assert buf.highlights_skipped == skipped
    assert buf.dropped_lines == lines


@settings(max_examples=300, deadline=None)
@given(rules=rule_sets(), head=st.integers(0, 48), tail=st.integers(0, 48), chunks=parts)
def test_rules_match_the_model(buffer_cls, rules, head, tail, chunks):
    buf = buffer_cls(head, tail, rules)
    data = b""
    for chunk in chunks:
        buf.append(chunk)
        data += chunk
        _check(buf, data, head, tail, rules)


@settings(max_examples=150, deadline=None)
@given(
    rules=rule_sets(), head=st.integers(0, 40), tail=st.integers(1, 40),
    steps=st.lists(st.tuples(st.sampled_from(["append", "spill", "restore"]),
                             st.lists(st.sampled_from(FRAGMENTS), max_size=8).map(b"".join)),
                   max_size=30),
)
def test_context_survives_spills_and_restores(buffer_cls, rules, head, tail, steps):
    buf = buffer_cls(head, tail, rules)
    data = b""
    for action, chunk in steps:
        if action == "append":
            buf.append(chunk)
            data += chunk
        elif action == "spill":
            snapshot = buf.spill()
            buf.append(chunk)  # appends go on while spilled
            data += chunk
            buf.unspill(snapshot)
        else:
            buf = buffer_cls.restore(buf.snapshot())
        _check(buf, data, head, tail, rules)


@settings(max_examples=200, deadline=None)
@given(rules=rule_sets(), head=st.integers(0, 32), tail=st.integers(0, 32), chunks=parts)
def test_twins_agree_on_context_byte_for_byte(both_buffer_classes, rules, head, tail, chunks):
    compiled, pure = (cls(head, tail, rules) for cls in both_buffer_classes)
    for chunk in chunks:
        compiled.append(chunk)
        pure.append(chunk)
        assert compiled.snapshot() == pure.snapshot()
    assert compiled.render() == pure.render()
    assert compiled.text() == pure.text()


def _kept(buffer_cls, rules, lines, chunk=7):
    data = b"".join(line + b"\n" for line in lines) + b"end\n"
    buf = buffer_cls(0, 4, rules)
    for start in range(0, len(data), chunk):
        buf.append(data[start : start + chunk])
    return buf


def test_context_after_and_before_are_kept_and_marked(buffer_cls):
    rules = HighlightRules([HighlightRule("go", "^--- FAIL", before=1, after=1)], 400, 100)
    buf = _kept(buffer_cls, rules, [
        b"=== RUN   TestA", b"    a_test.go:12: want 3, got 4", b"--- FAIL: TestA (0.00s)",
        b"FAIL", b"=== RUN   TestB", b"ok",
    ])
    assert buf.highlights() == [
        Highlight(2, 16, b"    a_test.go:12: want 3, got 4", True),
        Highlight(3, 48, b"--- FAIL: TestA (0.00s)"),
        Highlight(4, 72, b"FAIL", True),
    ]
    rendered = buf.render()
    assert b"[line 2] |     a_test.go:12: want 3, got 4\n" in rendered
    assert b"[line 3] --- FAIL: TestA (0.00s)\n" in rendered
    assert b"[line 4] | FAIL\n" in rendered


def test_a_match_inside_context_extends_it_and_nothing_is_kept_twice(buffer_cls):
    rules = HighlightRules([HighlightRule("e", "error", before=2, after=2)], 400, 100)
    buf = _kept(buffer_cls, rules, [b"a", b"b", b"error 1", b"c", b"error 2", b"d", b"e", b"f"])
    kept = [(h.text, h.context) for h in buf.highlights()]
    assert kept == [(b"a", True), (b"b", True), (b"error 1", False), (b"c", True),
                    (b"error 2", False), (b"d", True), (b"e", True)]


def test_anchors_and_exclusions(buffer_cls):
    rules = HighlightRules([
        HighlightRule("start", "^fail"),
        HighlightRule("end", "... fail$"),
        HighlightRule("error", "error", ("PASSED", "^ok ")),
    ], 400, 100)
    buf = _kept(buffer_cls, rules, [
        b"FAIL: test_x (m.T)", b"  FAIL\tpkg", b"unfailing", b"test_y (m.T) ... FAIL  \r",
        b"test_y (m.T) ... FAIL here", b"t.py::test_error_handling PASSED", b"ok 3 - error x",
        b"not ok 4 - error y", b"t.py::test_passed_error FAILED",
    ])
    assert [h.text for h in buf.highlights()] == [
        b"FAIL: test_x (m.T)", b"  FAIL\tpkg", b"test_y (m.T) ... FAIL  ",
        b"not ok 4 - error y", b"t.py::test_passed_error FAILED",
    ]


def test_a_word_rule_skips_identifiers_and_file_names(buffer_cls):
    rules = HighlightRules([HighlightRule("e", "error", word=True)], 400, 100)
    buf = _kept(buffer_cls, rules, [
        b"test_error_handling", b"TestErrorHandling", b"ErrorPath.java:3", b"-Werror",
        b"error_unit_3.c", b"Error0001", b"KeyError: x", b"2 errors", b"error", b"(error)",
        b"errors_seen=0 and then an ERROR: here",
    ])
    assert [h.text for h in buf.highlights()] == [
        b"KeyError: x", b"2 errors", b"error", b"(error)", b"errors_seen=0 and then an ERROR: here",
    ]


def test_an_end_anchor_needs_the_whole_line(buffer_cls):
    rules = HighlightRules([HighlightRule("end", "fail$")], budget=40, line_limit=8)
    buf = _kept(buffer_cls, rules, [b"abc fail", b"abcd fail"])
    assert [h.text for h in buf.highlights()] == [b"abc fail"]


def test_context_counts_in_the_budget(buffer_cls):
    rules = HighlightRules([HighlightRule("e", "error", after=1)], budget=40, line_limit=10)
    buf = _kept(buffer_cls, rules, [b"error %02d" % n + b"\n....." for n in range(20)], chunk=64)
    kept = buf.highlights()
    assert sum(len(h.text) for h in kept) <= 40
    assert kept[0].text == b"error 00" and kept[1] == Highlight(2, 9, b".....", True)
    assert kept[-1].context and kept[-2].text == b"error 19"
    assert buf.highlights_skipped == 40 - len(kept)


def test_early_noise_cannot_push_out_a_later_failure(buffer_cls):
    """The first half of the budget holds the earliest lines and closes; a
    line is pushed out only by lines after it, so a failure late in the
    middle survives any amount of noise before it."""
    rules = HighlightRules(["error"], budget=200, line_limit=50)
    noise = [b"error noise %04d" % n for n in range(500)]
    buf = _kept(buffer_cls, rules, noise + [b"error: the real one"] + [b"fine"] * 50)
    assert buf.highlights()[-1].text == b"error: the real one"


@pytest.mark.parametrize(
    "line",
    [
        b"--- FAIL: TestParse (0.00s)", b"    parse_test.go:12: want 3, got 4",
        b"./p/p.go:3:23: undefined: thing", b"FAIL\texample.com/p\t0.004s",
        b"not ok 701 - case 700", b"test_x (mod.T) ... FAIL", b"FAIL: test_x (mod.T)",
        b"cp: cannot stat 'a.txt': No such file or directory",
        b"./deploy.sh: line 3: deploy: command not found", b"sh: 1: deploy: not found",
        b"bash: ./run: Permission denied", b"Segmentation fault (core dumped)",
        b"./run.sh: line 4:  4242 Killed                  ./hog",
        b"error[E0425]: cannot find value `y` in this scope",
        b"thread 'tests::adds' panicked at src/lib.rs:5:9:", b"---- tests::adds stdout ----",
        b"test tests::adds ... FAILED", b"X.java:3: error: cannot find symbol",
        b"Exception in thread \"main\" java.lang.IllegalStateException: boom",
        b"[ERROR] Tests run: 3, Failures: 1, Errors: 0, Skipped: 0",
        b"FooTest.testX:12 expected:<3> but was:<4> <<< FAILURE!",
        b"* What went wrong:", b"make: *** No rule to make target 'x'.  Stop.",
        b"x.c:(.text+0x5): undefined reference to `missing'",
        b"\xe2\x9c\x96 case 700 (0.8ms)", b"\xe2\x97\x8f Suite \xe2\x80\xba adds",
        b"Traceback (most recent call last):", b"x.py:3: error: Incompatible types",
        b"src/a.ts(3,5): error TS2322: Type 'string' is not assignable",
        b"FAILED tests/test_a.py::test_x - assert 3 == 4", b"FAILED: build/x.o",
        b"KeyError: 'id'", b"java.lang.NullPointerException: x", b"2 errors generated.",
        b"a.cpp:1:12: note: candidate function not viable: no known conversion from 'int'",
        b" --> pkg/error_handling_2.py:2:12", b"Killed",
        b"[ERROR] Tests run: 3, Failures: 0, Errors: 2, Skipped: 0",
    ],
)
def test_default_rules_catch_each_toolchain(buffer_cls, line):
    buf = _kept(buffer_cls, HighlightRules(), [b"filler"] * 3 + [line] + [b"filler"] * 3)
    assert [h.text for h in buf.highlights() if not h.context] == [line]


@pytest.mark.parametrize(
    "line",
    [
        b"tests/test_a.py::test_error_handling PASSED                [ 10%]",
        b"--- PASS: TestErrorHandling (0.00s)", b"=== RUN   TestFailover",
        b"test tests::panic_on_error ... ok", b"test_error_paths (m.T) ... ok",
        b"ok 3 - error handling", b"# Subtest: error handling",
        b"\xe2\x9c\x94 error handling (0.5ms)", b"ok  \texample.com/errors\t0.003s",
        b"[INFO] Tests run: 3, Failures: 0, Errors: 0, Skipped: 0",
        b"gcc -Wall -Werror -c errors.c -o errors.o",
        b"error_unit_006.c:23:9: warning: unused variable 'unused_21' [-Wunused-variable]",
        b"ErrorPath001.java:10: warning: [unchecked] unchecked call to add(E)",
        b"record 7: parsed, error_count=0, failed_jobs=0",
        b"packagefile errors=/usr/lib/go/pkg/linux_amd64/errors.a",
        b'\t\t"errors": "$WORK/b003/vet.out",', b'\t\t"/usr/lib/go/src/runtime/panic.go",',
        b"  --> src/lib.rs:3:9", b"test tests::note_candidate_error ... ok",
        b"--- PASS: TestProcessKilled (0.00s)",
    ],
)
def test_default_rules_keep_no_passing_test(buffer_cls, line):
    buf = _kept(buffer_cls, HighlightRules(), [b"filler"] * 3 + [line] + [b"filler"] * 3)
    assert buf.highlights() == []


def test_context_rows_keep_the_cause_beside_the_position(buffer_cls):
    # ruff: the rule and message, then the arrow; g++: the candidate, its
    # source and caret, then the note that says why.
    lines = [b"filler"] * 3 + [b"F821 Undefined name `x`", b" --> a.py:2:12"] + [b"filler"] * 3
    buf = _kept(buffer_cls, HighlightRules(), lines)
    assert [h.text for h in buf.highlights()] == [b"F821 Undefined name `x`", b" --> a.py:2:12"]
    lines = [b"filler"] * 3 + [b"a.cpp:1:12: note: candidate: 'int f(int)'", b"    1 | int f(int);",
                              b"      |     ^", b"a.cpp:1:7: note:   no known conversion for argument 1"]
    buf = _kept(buffer_cls, HighlightRules(), lines + [b"filler"] * 4)
    assert [h.text for h in buf.highlights()][-1] == lines[-1]


@pytest.mark.parametrize(
    ("row", "error", "match"),
    [
        (HighlightRule("", "x"), ValueError, "name"),
        (HighlightRule("n", "^"), ValueError, "1 to 64"),  # a lone ^ is the text itself...
        (HighlightRule("n", "x", "PASSED"), TypeError, "tuple of str"),
        (HighlightRule("n", "x", ("",)), ValueError, "1 to 64"),
        (HighlightRule("n", "x", ("a\nb",)), ValueError, "newline"),
        (HighlightRule("n", "x", ("u",) * 17), ValueError, "at most 16"),
        (HighlightRule("n", "x", after=17), ValueError, "after"),
        (HighlightRule("n", "x", before=-1), ValueError, "before"),
        (HighlightRule("n", "x", after=True), TypeError, "after"),
        (HighlightRule("n", b"x"), TypeError, "match is a str"),  # type: ignore[arg-type]
    ],
)
def test_bad_rows_are_refused(row, error, match):
    if row.match == "^":
        assert HighlightRules([row]).patterns == (b"^",)  # ...and is allowed
        return
    with pytest.raises(error, match=match):
        HighlightRules([row])


def test_rules_round_trip_through_a_snapshot(buffer_cls):
    rules = HighlightRules([HighlightRule("r\u00e9gle", "^x$", ("^y", "z"), 2, 3), b"\xff\xfe"])
    buf = buffer_cls(2, 2, rules)
    buf.append(b"ab\nq\nx\n\xff\xfe\nmore\nand more\n")
    copy = buffer_cls.restore(buf.snapshot())
    assert copy.highlight_rules == rules and copy.highlights() == buf.highlights()
    assert copy.snapshot() == buf.snapshot()


# The scan window: evicted bytes wait in it and are scanned in one pass when
# it fills or before anything reads the scanner.  These tests read only at
# the end (or where the steps say), so spills, snapshots and full windows
# meet bytes still waiting in it.
WINDOW_STEPS = st.lists(
    st.tuples(st.sampled_from(["append"] * 6 + ["spill", "restore", "read", "seal"]),
              st.lists(st.sampled_from(FRAGMENTS), max_size=12).map(b"".join)),
    max_size=60)


@settings(max_examples=200, deadline=None)
@given(rules=rule_sets(), head=st.integers(0, 40), tail=st.integers(0, 400), steps=WINDOW_STEPS)
def test_the_scan_window_changes_nothing(buffer_cls, rules, head, tail, steps):
    buf = buffer_cls(head, tail, rules)
    data = b""
    for action, chunk in steps:
        if action == "append" and not buf.sealed:
            buf.append(chunk)
            data += chunk
        elif action == "spill":
            snapshot = buf.spill()
            if not buf.sealed:
                buf.append(chunk)
                data += chunk
            buf.unspill(snapshot)
        elif action == "restore":
            buf = buffer_cls.restore(buf.snapshot())
        elif action == "read":
            buf.render()
        else:
            buf.seal()
    _check(buf, data, head, tail, rules)


@settings(max_examples=100, deadline=None)
@given(rules=rule_sets(), tail=st.integers(0, 400), chunks=parts)
def test_twins_agree_with_bytes_waiting_in_the_window(both_buffer_classes, rules, tail, chunks):
    compiled, pure = (cls(8, tail, rules) for cls in both_buffer_classes)
    for chunk in chunks:
        compiled.append(chunk)
        pure.append(chunk)
    assert compiled.snapshot() == pure.snapshot()


def test_a_full_window_is_scanned_and_reads_see_what_waits(buffer_cls):
    rules = HighlightRules(["error"], budget=1 << 16, line_limit=64)
    buf = buffer_cls(0, 20_000, rules)  # a 4,096-byte window
    lines = [b"%05d error\n" % n if n % 500 == 0 else b"%05d fine\n" % n for n in range(3_000)]
    for line in lines:
        buf.append(line)
    # 33,006 bytes: the first 13,006 left the tail, some still in the window.
    data = b"".join(lines)
    assert [h.text for h in buf.highlights()] == [b"00000 error", b"00500 error", b"01000 error"]
    assert buf.dropped_lines == data[: buf.dropped].count(b"\n") == 1_182


def _version_2(state):
    """The snapshot taskjournal wrote before rules had context: plain patterns,
    no context state."""
    import struct
    import zlib

    scan, rules = state.scanner, state.scanner.rules
    section = struct.pack(
        "<IIBBBBQQQQQQIIIB", rules.budget, rules.line_limit, len(rules.patterns), scan.matched,
        scan.head_done, scan.first_closed, scan.fed, scan.head_lines, scan.lines,
        scan.line_start, scan.line_length, scan.skipped, len(scan.first), len(scan.recent),
        len(scan.carry), len(scan.window))
    for pattern in rules.patterns:
        section += bytes([len(pattern)]) + pattern
    section += scan.carry + scan.window
    for raw in scan.first + scan.recent:
        section += struct.pack("<I", len(raw)) + raw
    header = struct.pack("<4sBBHQQQQQ", b"TJHB", 2, 2 | int(state.sealed), 0,
                         state.head_capacity, state.tail_capacity, state.total,
                         len(state.head), len(state.tail))
    body = header + state.head + state.tail + section
    return body + struct.pack("<I", zlib.crc32(body))


def test_version_2_snapshots_still_restore(buffer_cls):
    from journal._buffer_shared import decode_snapshot

    buf = buffer_cls(6, 6, HighlightRules(["error", "panic"], budget=200, line_limit=50))
    buf.append(b"start\n" + b"x\nerror: one\ny\npanic: two\n" * 3 + b"partial err")
    old = _version_2(decode_snapshot(buf.snapshot()))
    copy = buffer_cls.restore(old)
    assert copy.highlights() == buf.highlights() and copy.render() == buf.render()
    assert copy.highlight_rules == buf.highlight_rules and copy.snapshot() == buf.snapshot()
    copy.append(b"or\n" + b"." * 20)
    assert copy.highlights()[-1].text == b"partial error"
