"""Resident memory against tasks run, with the journal's defaults.

    python bench/rss_flat.py --store sqlite --tasks 200000
    python bench/rss_flat.py --store memory --tasks 50000 --output 400000

16 threads finish --tasks tasks between them, 64 open at a time per thread
(1,024 in flight), each printing --output bytes in 4 KB appends before it
completes with a small result.  The journal is opened with nothing but the
store URL (a fresh SQLite file, or memory://): every limit is its default,
the memory budget included.  At every tenth of the run the resident set is
sampled; at the end every result is read back.  Prints one JSON line: the
RSS samples, peak RSS (getrusage), RSS growth over the run, tasks/s, and
what stats() says.  bench/test_rss_bench.py runs it at 10k, 50k and 200k.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import threading
import time

from journal import TaskJournal

THREADS = 16
OPEN_PER_THREAD = 64
CHUNK = 4096


def rss_now() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", choices=("sqlite", "memory"), default="sqlite")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--output", type=int, default=100_000, help="bytes each task prints")
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="rss-flat-")
    url = f"sqlite:///{directory}/journal.db" if args.store == "sqlite" else "memory://"
    journal = TaskJournal(url)
    lines = b"".join(b"src/core/unit_%03d.c:%d: building object %06d\n" % (n % 997, n, n)
                     for n in range(200))
    chunk = (lines * (CHUNK // len(lines) + 1))[:CHUNK]
    appends = max(1, args.output // CHUNK)
    finished = [0] * THREADS
    samples: list[tuple[int, int]] = []
    baseline = rss_now()
    started = time.perf_counter()

    def drive(worker: int) -> None:
        numbers = iter(range(worker, args.tasks, THREADS))
        open_tasks: list[tuple[str, object, int]] = []
        while True:
            while len(open_tasks) < OPEN_PER_THREAD:
                n = next(numbers, None)
                if n is None:
                    break
                task_id = f"t{n}"
                journal.register(task_id, f"node-{n % 500}")
                open_tasks.append((task_id, journal.stream(task_id), 0))
            if not open_tasks:
                return
            task_id, handle, sent = open_tasks.pop(0)
            handle.append(chunk)  # type: ignore[attr-defined]
            if sent + 1 < appends:
                open_tasks.append((task_id, handle, sent + 1))
            else:
                journal.complete(task_id, {"n": task_id})
                finished[worker] += 1

    def sample() -> None:
        step = max(1, args.tasks // 10)
        next_mark = step
        while next_mark <= args.tasks:
            done = sum(finished)
            if done >= next_mark:
                samples.append((done, rss_now()))
                next_mark += step
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=drive, args=(w,)) for w in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    sampler.join(timeout=1)
    unreadable = sum(journal.get(f"t{n}").result != {"n": f"t{n}"} for n in range(args.tasks))
    stats = journal.stats()
    journal.close()
    shutil.rmtree(directory, ignore_errors=True)
    print(json.dumps({
        "store": args.store,
        "tasks": args.tasks,
        "output_bytes": appends * CHUNK,
        "tasks_per_second": args.tasks / seconds,
        "rss_baseline": baseline,
        "rss_samples": samples,
        "rss_growth": max(rss for _, rss in samples) - baseline if samples else 0,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "unreadable_results": unreadable,
        "tasks_in_memory": stats["tasks_in_memory"],
        "bytes_resident": stats["bytes_resident"],
        "output_released_tasks": stats["output_released_tasks"],
    }))


if __name__ == "__main__":
    main()
