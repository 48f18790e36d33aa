"""The README's "Embedding in an asyncio hub" example runs as written and
passes ``mypy --strict``: a guide whose code rots is worse than none."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture
def guide(tmp_path) -> pathlib.Path:
    if not README.exists():
        pytest.skip("README.md is not beside the tests")
    section = README.read_text("utf-8").split("## Embedding in an asyncio hub\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "the guide has no python example"
    path = tmp_path / "hub_guide.py"
    path.write_text(code.group(1), "utf-8")
    return path


def test_the_guide_runs(guide):
    done = subprocess.run([sys.executable, str(guide)], cwd=guide.parent, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "compiling\n" in done.stdout and "error: no rule\n" in done.stdout
    assert done.stdout.endswith("failed: {'exit_code': 2}\n"), done.stdout
    assert (guide.parent / "hub.db").exists()


def test_the_guide_passes_mypy_strict(guide):
    pytest.importorskip("mypy", reason="mypy is in the test extra")
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--cache-dir",
                           str(guide.parent / "cache"), guide.name], cwd=guide.parent,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
