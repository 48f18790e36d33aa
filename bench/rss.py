"""Peak RSS of a hub streaming many tasks, with and without a memory budget.

    python bench/rss.py --tasks 100000 --budget 64000000
    python bench/rss.py --tasks 100000            # no budget, for comparison

16 threads stream --concurrent tasks at a time between them (default 1,000:
a mesh of 100 nodes running 10 tasks each), appending 64 KB to each open task
in turn; a task that has received 1 MB (16 appends) completes and the thread
opens the next.  A fresh SQLite journal (synchronous=normal, so the run is
bounded by appends, not fsyncs).
Prints one JSON line: peak RSS, elapsed time, and the journal's stats.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import threading
import time

from journal import JournalConfig, TaskJournal

CHUNK = b"x" * 65_536
APPENDS = 16  # 1 MB per task


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--budget", type=int, default=None)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--concurrent", type=int, default=1_000)
    args = parser.parse_args()
    directory = tempfile.mkdtemp()
    config = JournalConfig(memory_budget=args.budget, checkpoint_interval=0.2, sweep_interval=0)
    journal = TaskJournal(f"sqlite:///{directory}/journal.db?synchronous=normal", config=config)
    started = time.perf_counter()

    window = max(1, args.concurrent // args.threads)

    def drive(worker: int) -> None:
        ids = iter(range(worker, args.tasks, args.threads))
        open_tasks: list[list] = []
        while True:
            while len(open_tasks) < window:
                n = next(ids, None)
                if n is None:
                    break
                task_id = f"task-{n}"
                journal.register(task_id, f"node-{n % 100}")
                journal.start(task_id)
                open_tasks.append([task_id, journal.stream(task_id), 0])
            if not open_tasks:
                return
            for task in open_tasks:
                task[1].append(CHUNK)
                task[2] += 1
            for task in [t for t in open_tasks if t[2] == APPENDS]:
                journal.complete(task[0], {"exit_code": 0})
                open_tasks.remove(task)

    threads = [threading.Thread(target=drive, args=(w,)) for w in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    stats = journal.stats()
    journal.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_bytes = peak if sys.platform == "darwin" else peak * 1024
    print(json.dumps({
        "tasks": args.tasks,
        "budget": args.budget,
        "concurrent": args.concurrent,
        "peak_rss_mb": round(peak_bytes / 1e6, 1),
        "elapsed_s": round(elapsed, 1),
        "bytes_written_gb": round(stats["bytes_written"] / 1e9, 1),
        "bytes_resident_mb": round(stats["bytes_resident"] / 1e6, 1),
        "tasks_in_memory": stats["tasks_in_memory"],
        "store_errors": stats["store_errors"],
    }))


if __name__ == "__main__":
    main()
