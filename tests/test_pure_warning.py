"""A source install without a compiler works on the pure twin, and says so
once at import, naming the cost and the fix; choosing the twin
(JOURNAL_NO_EXTENSIONS=1, as the suite's pure runs do) is silent, even
under ``-W error``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import NO_EXTENSIONS
from journal import _selection

# journal._buffer blocked: what an install whose compile failed has.
BLOCKED = "import sys; sys.modules['journal._buffer'] = None\n"
IMPORTS = ("import journal, journal.buffer, journal.journal\n"
           "from journal import HeadTailBuffer, TaskJournal\n"
           "TaskJournal().close()\n"
           "print(journal.buffer.IMPLEMENTATION)\n")


def _python(code: str, *flags: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items()
               if k not in (_selection.ENV_VAR, "PYTHONWARNINGS")}
    environ.update(env)
    return subprocess.run([sys.executable, *flags, "-c", code], env=environ,
                          capture_output=True, text=True, timeout=60)


def test_a_missing_extension_warns_once_with_the_cost_and_the_fix():
    done = _python(BLOCKED + IMPORTS)
    assert done.returncode == 0 and done.stdout == "python\n", done.stderr
    assert done.stderr.count("PureTwinWarning") == 1, done.stderr
    for fragment in ("compiled buffer is not installed", "up to 20x slower",
                     "--only-binary taskjournal", "JOURNAL_NO_EXTENSIONS=1"):
        assert fragment in done.stderr, fragment


def test_the_warning_can_be_filtered_by_its_class():
    done = _python(BLOCKED + IMPORTS, "-W", "ignore::RuntimeWarning")
    assert done.returncode == 0 and done.stderr == ""
    assert issubclass(_selection.PureTwinWarning, RuntimeWarning)


@pytest.mark.parametrize("value", ["1", "yes"])
def test_choosing_the_pure_twin_is_silent_even_under_w_error(value):
    done = _python(BLOCKED + IMPORTS, "-W", "error", **{_selection.ENV_VAR: value})
    assert done.returncode == 0 and done.stdout == "python\n" and done.stderr == "", done.stderr


@pytest.mark.skipif(NO_EXTENSIONS, reason="this run deliberately tests the pure twin")
def test_the_compiled_buffer_is_silent_under_w_error():
    done = _python(IMPORTS, "-W", "error")
    assert done.returncode == 0 and done.stdout == "c\n" and done.stderr == "", done.stderr


def test_the_build_warning_names_the_cost_and_the_fix_too():
    """setup.py's fall-back when the compile fails, run without building:
    setup() is a no-op and the switch keeps cythonize out of it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import runpy, setuptools\n"
            "setuptools.setup = lambda **kwargs: None\n"
            f"found = runpy.run_path({os.path.join(root, 'setup.py')!r})\n"
            "from setuptools.dist import Distribution\n"
            "found['OptionalBuildExt'](Distribution())._fall_back(OSError('cc: not found'))\n")
    done = _python(code, **{_selection.ENV_VAR: "1"})
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("WARNING: the compiled buffer could not be built (cc: not found)")
    assert "up to 20x slower" in done.stderr and "--only-binary taskjournal" in done.stderr
