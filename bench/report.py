"""Turn a pytest-benchmark JSON file into the README's ratio tables.

    python -m pytest bench --benchmark-json=bench.json
    python bench/report.py bench.json

Figures use the fastest round divided by the operations one round performs:
on a shared, noisy machine other load only ever adds time, so the minimum is
the round least disturbed by it.  Ratios compare implementations measured
in the same run, which is the only comparison worth making here.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict

# Which implementation each ratio column is measured against, by group kind.
BASELINES = {
    "append": ("reviewed", "c"),
    "hot buffer": ("bytearray", "c"),
    "end to end": ("reviewed", "c"),
    "handle vs bare buffer": ("journal handle", "bare buffer"),
    # off / on: the throughput with highlight rules, as a fraction of without.
    "highlights": ("off", "on"),
    # on / floor: an append through a handle with highlights, over the floor.
    "floor": ("handle on", "floor"),
    # SQLite's time per op over Redis's: above 1, Redis is the faster.
    "registrations by store": ("sqlite", "redis"),
    "streaming by store": ("sqlite", "redis"),
}


def _per_op(bench: dict) -> float:
    ops = bench.get("extra_info", {}).get("ops_per_round", 1)
    return bench["stats"]["min"] / ops


def _impl(bench: dict) -> str:
    # The first parametrize id is the implementation: test_x[impl-...].
    found = re.search(r"\[([^\]-]+)", bench["name"])
    return found.group(1) if found else "redis"  # the one unparametrized bench


def load(path: str) -> dict[str, dict[str, float]]:
    with open(path) as handle:
        data = json.load(handle)
    groups: dict[str, dict[str, float]] = defaultdict(dict)
    for bench in data["benchmarks"]:
        if "errors_total" in bench.get("extra_info", {}):
            continue  # fidelity: see fidelity_table()
        if "wake_p50_ms" in bench.get("extra_info", {}):
            continue  # a latency, not a cost per op: see wake_line()
        groups[bench["group"]][_impl(bench)] = _per_op(bench)
    return groups


def fidelity_table(path: str) -> str:
    """Error lines of each tool's log shown by a 40 KB render, per layout."""
    with open(path) as handle:
        data = json.load(handle)
    rows = ["| log | layout | log size | error lines shown | append + render |",
            "|---|---|---|---|---|"]
    for bench in sorted(data["benchmarks"], key=lambda b: b["name"]):
        info = bench.get("extra_info", {})
        if "errors_total" not in info:
            continue
        tool, layout = re.search(r"\[(.*)-([^-\]]+)\]$", bench["name"]).groups()
        rows.append(
            f"| {tool} | {layout} | {info['log_bytes'] / 1e6:.2f} MB | "
            f"{info['errors_shown']} of {info['errors_total']} | "
            f"{bench['stats']['min'] * 1e3:.2f} ms |"
        )
    return "\n".join(rows) if len(rows) > 2 else ""


def _ns(seconds: float) -> str:
    return f"{seconds * 1e9:,.0f}"


def table(groups: dict[str, dict[str, float]]) -> str:
    rows = ["| benchmark | ns per op, by implementation | ratio |", "|---|---|---|"]
    for group in sorted(groups, key=_sort_key):
        impls = groups[group]
        kind = next((k for k in BASELINES if group.startswith(k)), group)
        figures = ", ".join(f"{name} {_ns(t)}" for name, t in sorted(impls.items(), key=lambda kv: kv[1]))
        base, ours = BASELINES.get(kind, (None, None))
        ratio = ""
        if base in impls and ours in impls:
            ratio = f"{base} / {ours} = {impls[base] / impls[ours]:.2f}x"
            if "python" in impls:
                ratio += f"; python / {ours} = {impls['python'] / impls[ours]:.2f}x"
        rows.append(f"| {group} | {figures} | {ratio} |")
    return "\n".join(rows)


def _sort_key(group: str):
    numbers = [int(n) for n in re.findall(r"\d+", group)]
    return (re.sub(r"\d+", "", group), numbers)


def wake_line(path: str) -> str:
    with open(path) as handle:
        data = json.load(handle)
    for bench in data["benchmarks"]:
        info = bench.get("extra_info", {})
        if "wake_p50_ms" in info:
            return (f"cross-replica wake (complete on one replica -> wait returns on another): "
                    f"p50 {info['wake_p50_ms']} ms, max {info['wake_max_ms']} ms")
    return ""


def scan_budget_line(groups: dict[str, dict[str, float]]) -> str:
    """The scan alone beside what the highlights target leaves for it: at
    1 KB x 1,000 tasks, on / off >= 0.8 means on <= off / 0.8, so the
    scanner gets a quarter of the append without rules."""
    off = groups.get("highlights c, 1024 B, 1000 task(s)", {}).get("off")
    scan = groups.get("highlight scan alone, ns per KB", {}).get("c")
    if off is None or scan is None:
        return ""
    budget = off * (1 / 0.8 - 1)
    return (f"highlight scan alone, in cache: {_ns(scan)} ns per KB; the 0.8x target at "
            f"1 KB x 1,000 tasks leaves it {_ns(budget)} ns per 1 KB append "
            f"({scan / budget:.1f}x over)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python bench/report.py BENCH.json")
    print(table(load(sys.argv[1])))
    budget = scan_budget_line(load(sys.argv[1]))
    if budget:
        print()
        print(budget)
    wake = wake_line(sys.argv[1])
    if wake:
        print()
        print(wake)
    fidelity = fidelity_table(sys.argv[1])
    if fidelity:
        print()
        print(fidelity)
