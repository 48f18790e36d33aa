"""The default highlight rules: what the common toolchains print when they fail.

Rules are data, one row each, so that a new toolchain is a new row (and a row
in the README's table), never a new branch in a scanner.  A row says:

- ``match``: the text a line must contain, ASCII case-insensitively.  A
  leading ``^`` anchors it at the line's start (after any indentation, since
  tools indent nested tests), a trailing ``$`` at its end (before any
  trailing blanks or CR).
- ``unless``: texts that veto the row when the line contains them, matched
  exactly (case-sensitively: pass markers have a fixed case, ``PASSED``,
  ``... ok``, while test names vary).  A leading ``^`` anchors one at the
  line's start, after indentation.
- ``before`` / ``after``: context lines kept with a matching line, because a
  failure's cause often sits right next to its marker line.
- ``word``: the match must be a word of its own, not a piece of an
  identifier or file name (``test_error_handling``, ``ErrorPath.java``,
  ``error_unit_3.c``, ``-Werror``).  A word begins after a character that is
  not a letter, digit or ``_``, or at a CamelCase step (``KeyError``); it
  ends before one that is not an upper-case letter, digit or ``_`` (so
  ``errors`` and ``panicked`` still count).

A line matches when one row matches its first ``line_limit`` bytes (what a
highlight keeps of it); its context is the most any matching row asks for.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["DEFAULT_RULES", "HighlightRule", "PASS_MARKERS", "RuleTable"]


class HighlightRule(NamedTuple):
    """One row of highlight rules (see the module docstring)."""

    name: str
    match: str
    unless: tuple[str, ...] = ()
    before: int = 0
    after: int = 0
    word: bool = False


class RuleTable(tuple[HighlightRule, ...]):
    """A named table of rules: it shows as its name, not as thirty rows (in
    ``JournalConfig``'s repr, for one)."""

    name: str

    def __new__(cls, name: str, rows: tuple[HighlightRule, ...]) -> RuleTable:
        table = super().__new__(cls, rows)
        table.name = name
        return table

    def __repr__(self) -> str:
        return self.name

    def __reduce__(self) -> tuple[object, tuple[str, tuple[HighlightRule, ...]]]:
        return (RuleTable, (self.name, tuple(self)))


#: What passing tests print around their names, in the tools listed below:
#: a test called ``test_error_handling`` must not be kept for its name.
PASS_MARKERS = (
    "PASSED",  # pytest -v
    "... ok",  # cargo test, unittest -v
    "--- PASS",  # go test -v
    "=== RUN", "=== PAUSE", "=== CONT", "=== NAME",  # go test -v
    "^ok ",  # TAP (node --test), go test
    "# Subtest:",  # TAP v13 (node --test)
    "\u2714",  # check mark: node's spec reporter, jest, JUnit 5
    "\u2713",  # check mark: mocha, jest
    "Errors: 0",  # Maven / surefire counts
    "Failures: 0",
    "-Werror",  # a compiler command line, not a failure
)

_PASS = PASS_MARKERS

#: The "error" row's vetoes: the pass markers, less "Failures: 0" (a line
#: that counts errors beside it reports them: "Failures: 0, Errors: 2"), and
#: what Go's build listings print of its ``errors`` package and files:
#: ``go build -x`` and ``go vet -x`` echo each importcfg and vet.cfg they
#: write, and a program that imports errors has not failed.  A row has room
#: for 16 vetoes.
_ERROR_UNLESS = tuple(marker for marker in _PASS if marker != "Failures: 0") + (
    '"errors"',  # an import path, a key or a value in vet.cfg
    '.go"',  # a file in vet.cfg's lists: ".../src/fmt/errors.go",
    "packagefile errors",  # importcfg: packagefile errors=.../errors.a
)

DEFAULT_RULES = RuleTable("DEFAULT_RULES", (
    # Words that almost every toolchain prints on failure.  They carry no
    # context: their message is on their line, and context is for the rows
    # below that know where a tool puts the cause.
    HighlightRule("error", "error", _ERROR_UNLESS, word=True),
    HighlightRule("fatal", "fatal", _PASS, word=True),
    HighlightRule("exception", "exception", _PASS, word=True),
    HighlightRule("traceback", "traceback (most recent call last)"),
    HighlightRule("failed", "failed", _PASS, word=True),
    HighlightRule("panic", "panic", _PASS + ('.go"',), word=True),  # not runtime/panic.go
    HighlightRule("rust-panic", "panicked at", after=2),  # the message is on the next line
    HighlightRule("tap-error", "error: |-$", after=3),  # node --test: the message follows
    # A marker at a line's start: the identity of a failed test or target.
    HighlightRule("fail-marker", "^fail"),  # FAIL: (unittest), FAIL pkg (go), FAILED (pytest)
    HighlightRule("failure-marker", "<<< fail", after=1),  # surefire (Maven, JUnit)
    HighlightRule("maven-error", "^[error]"),  # whatever counts its line holds
    HighlightRule("go-test", "^--- fail", after=2),
    # go build, vet and test: the package ("# example.com/p") or test
    # ("=== RUN   TestX") comes just before.
    HighlightRule("go-position", ".go:", ("=== RUN", "--- PASS"), before=1),
    HighlightRule("tap-not-ok", "^not ok "),  # node --test (TAP)
    HighlightRule("spec-cross", "^\u2716 ", ("\u2716 0 problems",), after=1),  # node spec, eslint
    HighlightRule("jest-bullet", "^\u25cf ", after=3),  # jest: the test, a blank, the message
    HighlightRule("unittest-fail", "... fail$"),  # python -m unittest -v
    HighlightRule("cargo-output", "stdout ----$", after=3),  # cargo test: a test's output
    # javac: the source line, the caret, then "symbol: ..." say what is wrong.
    HighlightRule("javac-position", ".java:", ("^at ", ": warning:"), after=3),
    HighlightRule("gradle-wrong", "what went wrong", after=2),
    # make: a failed target (its recipe's last words come just before) or a
    # "No rule to make target ... Stop."
    HighlightRule("make-stop", ": *** ", before=1),
    HighlightRule("linker", "undefined reference"),
    # C++ overload resolution: the error only says that no call matched, a
    # note says why: clang "note: candidate function not viable: no known
    # conversion from ...", g++ "note: candidate: 'int f(int)'", its source
    # line and caret, then "note:   no known conversion for argument 1 ...".
    HighlightRule("cc-candidate", "note: candidate", _PASS, after=3),
    # ruff (and other tools that print rustc-style diagnostics): the rule and
    # its message ("F821 Undefined name `x`", "invalid-syntax: ..."), then
    # " --> file:line:col".  rustc prints its warnings so too; its errors
    # are kept by the "error" row.
    HighlightRule("arrow-position", "^--> ", (".rs:",), before=1),
    # Shells and coreutils.
    HighlightRule("not-found", "command not found"),
    HighlightRule("sh-not-found", ": not found"),
    HighlightRule("no-such-file", "no such file or directory"),
    HighlightRule("permission", "permission denied"),
    HighlightRule("segfault", "segmentation fault"),
    HighlightRule("core-dumped", "(core dumped)"),  # Aborted (core dumped), ...
    HighlightRule("killed", "killed", _PASS, word=True),  # "4242 Killed  ./hog", "Killed"
    HighlightRule("timed-out", "timed out", _PASS),
))
