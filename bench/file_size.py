"""The SQLite file over several retention periods of a steady run.

    python bench/file_size.py --ttl 20 --seconds 70

16 threads finish tasks of 40 KB of output each, without pause, for
--seconds, with ``result_ttl`` set to --ttl and a sweep every second.  Every
5 s the sizes of the database file and its WAL are printed: after the first
retention period, expired tasks free their pages and new tasks take them, so
the file stops growing.  Prints one JSON line with the samples.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time

from journal import JournalConfig, TaskJournal


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ttl", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=70.0)
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="file-size-")
    path = os.path.join(directory, "journal.db")
    journal = TaskJournal(f"sqlite:///{path}",
                          config=JournalConfig(result_ttl=args.ttl, sweep_interval=1.0))
    out = (b"compiling unit 0042 of the build, all fine so far\n" * 800)[:40_000]
    stop = threading.Event()
    finished = [0] * 16

    def drive(worker: int) -> None:
        n = 0
        while not stop.is_set():
            task_id = f"w{worker}-{n}"
            journal.register(task_id, "node")
            journal.stream(task_id).append(out)
            journal.complete(task_id, {"n": n})
            finished[worker] += 1
            n += 1

    threads = [threading.Thread(target=drive, args=(w,)) for w in range(16)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    samples = []
    while time.monotonic() - started < args.seconds:
        time.sleep(5)
        wal = path + "-wal"
        samples.append({
            "seconds": round(time.monotonic() - started),
            "tasks_finished": sum(finished),
            "db_mb": round(os.path.getsize(path) / 1e6, 1),
            "wal_mb": round(os.path.getsize(wal) / 1e6, 1) if os.path.exists(wal) else 0.0,
            "retained": journal.stats()["tasks"],
        })
        print(samples[-1], flush=True)
    stop.set()
    for thread in threads:
        thread.join()
    journal.close()
    print(json.dumps({"ttl": args.ttl, "samples": samples}))


if __name__ == "__main__":
    main()
