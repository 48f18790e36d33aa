"""What the simulated nodes print: compiler and test-runner output.

Each task gets a kind, drawn with a seed so a run can be repeated: most are
ordinary builds that pass, some print far more than the head+tail budget,
some fail with an error near the end, some hit an error in the middle of a
long run and go on.  Output is pre-built as a pool of ~4 KB chunks per kind,
so the simulation measures the journal, not string formatting.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

CHUNK = 4096


@dataclass(frozen=True)
class Kind:
    name: str
    #: Range of chunks of ordinary output.
    chunks: tuple[int, int]
    exit_code: int
    #: Where an error line goes, as a fraction of the output; None for none.
    error_at: float | None = None
    share: float = 0.0


KINDS = (
    Kind("build", (2, 40), 0, share=0.70),
    Kind("test-suite", (20, 120), 0, share=0.12),
    Kind("huge-build", (600, 1200), 0, share=0.05),  # 2.4 to 4.8 MB
    Kind("fails-at-end", (5, 60), 2, error_at=0.97, share=0.08),
    Kind("error-in-middle", (200, 500), 1, error_at=0.5, share=0.05),
)


@dataclass
class Plan:
    """One task's output: chunk indices into the pool, and where the error goes."""

    kind: Kind
    chunks: list[int]
    error_index: int | None
    error_line: bytes = b""


def _compiler_lines(rng: random.Random, count: int) -> list[str]:
    lines = []
    for _ in range(count):
        unit = f"src/{rng.choice(['core', 'net', 'ui', 'db', 'io'])}/{rng.choice(['alloc', 'parse', 'emit', 'sched', 'hash'])}_{rng.randrange(1000):03d}"
        roll = rng.random()
        if roll < 0.55:
            lines.append(f"cc -O2 -Wall -Iinclude -c {unit}.c -o build/{unit}.o")
        elif roll < 0.75:
            lines.append(f"{unit}.c:{rng.randrange(1, 900)}:{rng.randrange(1, 60)}: warning: "
                         f"unused variable 'tmp{rng.randrange(9)}' [-Wunused-variable]")
        elif roll < 0.9:
            lines.append(f"tests/test_{unit.rsplit('/', 1)[1]}.py::test_case_{rng.randrange(500)} "
                         f"PASSED [{rng.randrange(100):3d}%]")
        else:
            lines.append(f"[{rng.randrange(1, 99):2d}/99] Linking target lib{unit.rsplit('/', 1)[1]}.so")
    return lines


def chunk_pool(seed: int, size: int = 64) -> list[bytes]:
    """``size`` distinct chunks of about CHUNK bytes of whole lines."""
    rng = random.Random(seed)
    pool = []
    for _ in range(size):
        out = bytearray()
        for line in _compiler_lines(rng, 200):
            if len(out) + len(line) + 1 > CHUNK:
                break
            out += line.encode() + b"\n"
        pool.append(bytes(out))
    return pool


def plan_task(rng: random.Random, number: int, pool_size: int) -> Plan:
    roll = rng.random()
    for kind in KINDS:
        roll -= kind.share
        if roll < 0:
            break
    count = rng.randint(*kind.chunks)
    chunks = [rng.randrange(pool_size) for _ in range(count)]
    error_index = None if kind.error_at is None else int(count * kind.error_at)
    error = (f"src/core/parse_{number:03d}.c:{rng.randrange(1, 900)}:7: error: "
             f"'token_{number}' undeclared (first use in this function)\n").encode()
    return Plan(kind, chunks, error_index, error if error_index is not None else b"")
