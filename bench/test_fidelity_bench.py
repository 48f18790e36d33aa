"""Fidelity: what a 40 KB render shows of a real tool's failures.

Every tool of ``tool_logs.py`` that this machine has runs twice on the spot,
on a pty (stderr interleaved with stdout, as a node agent sees it): once
with failures in the middle of 0.1 to 1 MB of output, once clean, with tests
named after errors.  Each log is appended in 4 KB chunks and rendered within
40 KB:

- ``head+tail``: 20,000 + 20,000 bytes, no highlights;
- ``highlights``: 18,000 + 18,000 bytes and the default rules with a
  4,096-byte highlight budget.

``extra_info`` records, from the failing log, the identity lines (the line
that names each failure) and the cause lines (the line that says why) found
in the render, and from the clean log the share of the highlight budget its
kept lines use (noise).  ``report.py`` prints the table.  Targets, with
highlights: every identity line, at least 95% of the cause lines, at most 5%
of the budget used on clean logs.
"""

from __future__ import annotations

import pytest

from conftest import buffer_class
from journal import HighlightRules
from tool_logs import TOOLS

BUDGET = 40_000
HIGHLIGHT_BUDGET = 4096
LAYOUTS = {
    "head+tail": (BUDGET // 2, BUDGET // 2, None),
    "highlights": (18_000, 18_000, HighlightRules(budget=HIGHLIGHT_BUDGET)),
}


@pytest.fixture(scope="module", params=sorted(TOOLS))
def tool_logs(request, tmp_path_factory):
    name = request.param
    failing = TOOLS[name](tmp_path_factory.mktemp(name.replace(" ", "_")), True)
    clean = TOOLS[name](tmp_path_factory.mktemp(name.replace(" ", "_") + "_clean"), False)
    assert 100_000 <= len(failing.output) <= 1_100_000, (name, len(failing.output))
    assert failing.identity and failing.cause, f"{name}: the tool did not fail as planned"
    assert not clean.identity and not clean.cause, f"{name}: the clean run failed"
    return name, failing, clean


def _render(cls, layout, output):
    head, tail, rules = LAYOUTS[layout]
    buf = cls(head, tail, rules)
    for start in range(0, len(output), 4096):
        buf.append(output[start : start + 4096])
    return buf, buf.render()


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_fidelity(benchmark, per_op, tool_logs, layout):
    tool, failing, clean = tool_logs
    cls = buffer_class("c")
    benchmark.group = f"fidelity {tool}"
    per_op(1)
    _, rendered = benchmark.pedantic(_render, args=(cls, layout, failing.output), rounds=3,
                                     iterations=1)
    identity = sum(1 for line in failing.identity if line in rendered)
    cause = sum(1 for line in failing.cause if line in rendered)
    quiet, _ = _render(cls, layout, clean.output)
    noise = sum(len(h.text) for h in quiet.highlights())
    benchmark.extra_info.update(
        log_bytes=len(failing.output), rendered_bytes=len(rendered),
        identity_total=len(failing.identity), identity_shown=identity,
        cause_total=len(failing.cause), cause_shown=cause,
        errors_total=len(failing.identity) + len(failing.cause), errors_shown=identity + cause,
        clean_bytes=len(clean.output), noise_bytes=noise,
        noise_share=round(noise / HIGHLIGHT_BUDGET, 4),
    )
    assert len(rendered) <= BUDGET + 2048  # markers and line labels
    if LAYOUTS[layout][2] is not None:
        missing = [line for line in failing.identity + failing.cause if line not in rendered]
        assert identity == len(failing.identity), f"{tool}: identity lines missing: {missing}"
        assert cause >= 0.95 * len(failing.cause), f"{tool}: cause lines missing: {missing}"
        assert noise <= 0.05 * HIGHLIGHT_BUDGET, f"{tool}: clean log kept {noise} bytes"
