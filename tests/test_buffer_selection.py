"""Which implementation an install actually loads.

A default install must run the compiled buffer: a silent fall-back to the
pure twin would keep every other test green while losing the point of the
package, so it fails here.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import NO_EXTENSIONS


def _implementation(**env):
    script = (
        "import journal, journal.buffer as b; "
        "print(b.IMPLEMENTATION, journal.HeadTailBuffer.__module__)"
    )
    environ = {k: v for k, v in os.environ.items() if k != "JOURNAL_NO_EXTENSIONS"}
    environ.update(env)
    out = subprocess.run(
        [sys.executable, "-c", script], env=environ, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


@pytest.mark.skipif(NO_EXTENSIONS, reason="this run deliberately tests the pure twin")
@pytest.mark.parametrize("env", [{}, {"JOURNAL_NO_EXTENSIONS": ""}, {"JOURNAL_NO_EXTENSIONS": "0"}])
def test_default_install_loads_the_compiled_buffer(env):
    assert _implementation(**env) == ["c", "journal._buffer"]


@pytest.mark.parametrize("value", ["1", "yes"])
def test_no_extensions_variable_forces_the_pure_twin(value):
    assert _implementation(JOURNAL_NO_EXTENSIONS=value) == ["python", "journal._buffer_py"]
