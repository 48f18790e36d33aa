"""Which implementation an install actually loads, and the one rule that says so.

A default install must run the compiled buffer: a silent fall-back to the
pure twin would keep every other test green while losing the point of the
package, so it fails here.  The rule itself (``journal._selection``) is
tested here too, and that nothing else reads the switch.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

from conftest import NO_EXTENSIONS
from journal import _selection

ENV_VAR = _selection.ENV_VAR
ROOT = pathlib.Path(__file__).resolve().parent.parent
SELECTION_FILE = pathlib.Path(_selection.__file__).resolve()


def _run(script, **env):
    environ = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    environ.update(env)
    out = subprocess.run(
        [sys.executable, "-c", script], env=environ, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def _implementation(**env):
    return _run(
        "import journal, journal.buffer as b; "
        "print(b.IMPLEMENTATION, journal.HeadTailBuffer.__module__)",
        **env,
    )


@pytest.mark.skipif(NO_EXTENSIONS, reason="this run deliberately tests the pure twin")
@pytest.mark.parametrize("env", [{}, {ENV_VAR: ""}, {ENV_VAR: "0"}])
def test_default_install_loads_the_compiled_buffer(env):
    assert _implementation(**env) == ["c", "journal._buffer"]


@pytest.mark.parametrize("value", ["1", "yes"])
def test_no_extensions_variable_forces_the_pure_twin(value):
    assert _implementation(**{ENV_VAR: value}) == ["python", "journal._buffer_py"]


@pytest.mark.parametrize(
    ("environ", "implementation", "pure"),
    [
        ({}, "cpython", False),
        ({ENV_VAR: ""}, "cpython", False),
        ({ENV_VAR: "0"}, "cpython", False),
        ({ENV_VAR: "1"}, "cpython", True),
        ({ENV_VAR: "false"}, "cpython", True),  # anything but "" or "0"
        ({ENV_VAR: " 0"}, "cpython", True),
        ({}, "pypy", True),
        ({ENV_VAR: "0"}, "graalpy", True),
    ],
)
def test_the_rule(environ, implementation, pure):
    reason = _selection.pure_reason(environ, implementation)
    assert (reason is not None) is pure
    if pure:
        assert (ENV_VAR in reason) or (implementation in reason)


def test_selection_module_loads_by_path_without_the_package():
    # setup.py's way: run_path the file with the package unimportable.
    assert _run(
        "import runpy, sys; sys.modules['journal'] = None; "
        f"g = runpy.run_path({str(SELECTION_FILE)!r}); "
        "print(g['no_extensions'](), g['flag']('0'), g['flag']('1'))",
        **{ENV_VAR: "1"},
    ) == ["True", "False", "True"]


def test_a_missing_extension_falls_back_but_load_does_not():
    # journal._buffer blocked: what a source install without a compiler gets.
    assert _run(
        "import sys; sys.modules['journal._buffer'] = None\n"
        "import journal.buffer as b\n"
        "from journal import _selection\n"
        "try:\n"
        "    _selection.load('c')\n"
        "except ImportError:\n"
        "    print(b.IMPLEMENTATION, 'load-raised')\n"
    ) == ["python", "load-raised"]


def test_name_of_inverts_load(both_buffer_classes):
    for cls in both_buffer_classes:
        assert _selection.load(_selection.name_of(cls)) is cls
    with pytest.raises(ValueError, match="not a HeadTailBuffer twin"):
        _selection.name_of(bytearray)


def test_pure_name_round_trips():
    # Holds in a pure run too, where both_buffer_classes skips.
    assert _selection.name_of(_selection.load(_selection.PURE)) == _selection.PURE


def test_only_the_selection_module_reads_the_switch():
    reads = re.compile(r"(getenv|environ\.get|environ\[)\s*\(?\s*['\"]" + ENV_VAR)
    files = [ROOT / "setup.py"] + [
        path for part in ("src", "tests", "bench") for path in (ROOT / part).rglob("*.py")
    ]
    if not (ROOT / "setup.py").exists():
        pytest.skip("not run from a source tree")
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in files
        if path.resolve() != (ROOT / "src" / "journal" / "_selection.py").resolve()
        for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if reads.search(text)
    ]
    assert offenders == []
