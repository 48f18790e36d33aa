"""Logs made on the spot by real tools, for the fidelity benchmark.

Each function runs a real tool in a scratch directory and returns its
combined output and the lines that tool itself marks as errors (the ground
truth the rendered task is checked against).  The sizes are chosen so each
log is many times a 40 KB render budget, with the errors in its middle.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

FILES = 240
FAILING_FILES = range(10, FILES - 10, 23)  # 10 files, none near either end
TESTS = 2500
FAILING_TESTS = range(600, 1900, 200)  # 7 tests, far from the first and last output
TARGETS = 3000
FAILING_TARGETS = range(500, 2500, 250)  # 8 targets


def _run(command: list[str], cwd: Path) -> bytes:
    done = subprocess.run(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env={**os.environ, "LC_ALL": "C"}, check=False)
    return done.stdout


def _error_lines(log: bytes, pattern: bytes) -> list[bytes]:
    return [line for line in log.splitlines() if re.search(pattern, line)]


def compile_c(workdir: Path) -> tuple[bytes, list[bytes]]:
    """``make -k -j2`` over C files full of warnings, ten of them with an error."""
    workdir.mkdir(parents=True, exist_ok=True)
    for n in range(FILES):
        unused = "\n".join(f"    int unused_{k} = {k};" for k in range(24))
        bad = "    return missing_symbol_%d;\n" % n if n in FAILING_FILES else "    return 0;\n"
        (workdir / f"unit_{n:03d}.c").write_text(
            f"int unit_{n:03d}(void) {{\n{unused}\n{bad}}}\n")
    objects = " ".join(f"unit_{n:03d}.o" for n in range(FILES))
    (workdir / "Makefile").write_text(textwrap.dedent(f"""\
        all: {objects}
        %.o: %.c
        \tgcc -Wall -c $< -o $@
        """))
    log = _run(["make", "-k", "-j2"], workdir)
    # gcc's own error lines, and make's line for each target that failed.
    return log, _error_lines(log, rb": error: |\*\*\* \[.*\] Error ")


def run_pytest(workdir: Path) -> tuple[bytes, list[bytes]]:
    """``pytest -v`` over many passing tests with a few failures in the middle."""
    workdir.mkdir(parents=True, exist_ok=True)
    body = "\n".join(
        f"def test_{n:04d}():\n    assert {n} {'!=' if n in FAILING_TESTS else '=='} {n}\n"
        for n in range(TESTS))
    (workdir / "test_generated.py").write_text(body)
    log = _run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider",
                "-p", "no:randomly", "-o", "addopts=", "test_generated.py"], workdir)
    # The progress line of each failing test; the summary at the end repeats
    # them, and the tail keeps that part anyway.
    return log, _error_lines(log, rb"::test_\d+ FAILED")


def make_keep_going(workdir: Path) -> tuple[bytes, list[bytes]]:
    """``make -k`` over shell recipes that print a lot, a few of which fail."""
    workdir.mkdir(parents=True, exist_ok=True)
    rules = []
    for n in range(TARGETS):
        fail = "; echo 'step %d: cannot open input.dat' >&2; exit 3" % n if n in FAILING_TARGETS else ""
        rules.append(f"t{n}:\n\t@for i in 1 2 3; do echo \"[t{n}] processing chunk $$i of 3\"; done{fail}\n")
    names = " ".join(f"t{n}" for n in range(TARGETS))
    (workdir / "Makefile").write_text(f".PHONY: all {names}\nall: {names}\n" + "".join(rules))
    log = _run(["make", "-k"], workdir)
    return log, _error_lines(log, rb"\*\*\* \[.*\] Error ")


TOOLS = {"gcc via make -k": compile_c, "pytest -v": run_pytest, "make -k": make_keep_going}
