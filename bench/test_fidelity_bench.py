"""Fidelity: how many of a real tool's error lines a 40 KB render shows.

Three logs are made on the spot by real tools (``tool_logs.py``): a C build
under ``make -k`` with errors in ten files, ``pytest -v`` with failures in the
middle of thousands of passing tests, and a ``make -k`` run whose failing
targets sit among thousands of chatty ones.  Each log is appended in 4 KB
chunks to a buffer and rendered within a budget of 40 KB:

- ``head+tail``: 20,000 + 20,000 bytes, no highlights;
- ``highlights``: 18,000 + 18,000 bytes and a 4,096-byte highlight budget.

The benchmark times the append and the render; ``extra_info`` records the
fraction of the tool's own error lines found in the rendered text, which
``report.py`` prints as a table (target: every one with highlights).
"""

from __future__ import annotations

import pytest

from conftest import buffer_class
from journal import HighlightRules
from tool_logs import TOOLS

BUDGET = 40_000
LAYOUTS = {
    "head+tail": (BUDGET // 2, BUDGET // 2, None),
    "highlights": (18_000, 18_000, HighlightRules(budget=4096)),
}


@pytest.fixture(scope="module", params=sorted(TOOLS))
def tool_log(request, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(request.param.replace(" ", "_"))
    log, errors = TOOLS[request.param](workdir)
    assert len(log) > 4 * BUDGET and errors, "the tool did not produce the expected log"
    return request.param, log, errors


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_fidelity(benchmark, per_op, tool_log, layout):
    tool, log, errors = tool_log
    head, tail, rules = LAYOUTS[layout]
    cls = buffer_class("c")
    chunks = [log[start : start + 4096] for start in range(0, len(log), 4096)]
    benchmark.group = f"fidelity {tool}"
    per_op(1)

    def render():
        buf = cls(head, tail, rules)
        for chunk in chunks:
            buf.append(chunk)
        return buf.render()

    rendered = benchmark.pedantic(render, rounds=3, iterations=1)
    shown = sum(1 for line in errors if line in rendered)
    benchmark.extra_info.update(
        log_bytes=len(log), rendered_bytes=len(rendered), errors_total=len(errors),
        errors_shown=shown,
    )
    assert len(rendered) <= BUDGET + 1024  # markers and line labels
    if rules is not None:
        assert shown == len(errors), f"{tool}: {len(errors) - shown} error lines missing"
