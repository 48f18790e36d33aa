"""The package's types, as a user's type checker sees them (it ships py.typed).

Code written the way the README writes it must pass ``mypy --strict``: the
exception payloads included (``exc.record.status`` of a TaskLost,
``exc.owner`` of an OwnedElsewhere).  The whole package is checked with
``mypy --strict src/journal`` in .ci/run; this test checks the installed
package from outside, in an empty directory.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("mypy", reason="mypy is in the test extra")

USER_CODE = textwrap.dedent(
    """
    from typing import Optional

    from typing_extensions import assert_type

    from journal import (
        HeadTailBuffer, JournalConfig, OwnedElsewhere, StreamView, TaskJournal, TaskLost,
        TaskRecord, TaskStatus, WaitTimeout,
    )

    def run(journal: TaskJournal, chunks: list[bytes]) -> Optional[str]:
        journal.register("build-42", "node-7", meta={"cmd": "make"}, deadline=600)
        out = journal.stream("build-42")
        assert_type(out, HeadTailBuffer)
        journal.start("build-42")
        for chunk in chunks:
            out.append(chunk)
        journal.complete("build-42", {"exit_code": 0})
        try:
            record = journal.wait("build-42", timeout=30)
        except TaskLost as exc:
            assert_type(exc.record, TaskRecord)
            assert_type(exc.record.status, TaskStatus)
            stdout = exc.record.streams["stdout"]
            assert_type(stdout, StreamView)
            return stdout.text()
        except OwnedElsewhere as exc:
            assert_type(exc.owner, str)
            return exc.owner
        except WaitTimeout:
            return None
        assert_type(record, TaskRecord)
        print(record.status, record.result, record.streams["stdout"].text())
        return None

    buffer = HeadTailBuffer(16, 16)
    assert_type(HeadTailBuffer.restore(buffer.snapshot()), HeadTailBuffer)
    assert_type(buffer.view()[7], Optional[int])
    run(TaskJournal(config=JournalConfig(head_bytes=20_000, tail_bytes=20_000)), [b"x"])
    """
)


def test_readme_style_code_passes_mypy_strict(tmp_path):
    (tmp_path / "user.py").write_text(USER_CODE, "utf-8")
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"),
         "user.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
