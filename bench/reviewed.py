"""The in-memory journal the seed review audited, rebuilt for comparison.

One dict of tasks behind one global ``threading.Lock``; each stdout chunk is
appended as ``buf = buf + chunk`` and the result trimmed back to the first
20,000 and the last 20,000 bytes.  It is what the benchmarks measure our
journal against, not code to use.
"""

from __future__ import annotations

import threading

HEAD = 20_000
TAIL = 20_000


class ReviewedJournal:
    def __init__(self) -> None:
        self.tasks: dict[str, dict] = {}
        self.lock = threading.Lock()

    def register(self, task_id: str, node_id: str = "node") -> None:
        with self.lock:
            self.tasks[task_id] = {"node_id": node_id, "status": "pending",
                                   "stdout": b"", "result": None}

    def append(self, task_id: str, chunk: bytes) -> None:
        with self.lock:
            task = self.tasks.get(task_id)
            if task is None:
                return
            task["stdout"] = _trim_stream(task["stdout"] + chunk)

    def complete(self, task_id: str, result: object) -> None:
        with self.lock:
            task = self.tasks[task_id]
            task["status"] = "completed"
            task["result"] = result

    def get(self, task_id: str) -> dict:
        with self.lock:
            return dict(self.tasks[task_id])


def _trim_stream(buf: bytes) -> bytes:
    if len(buf) > HEAD + TAIL:
        return buf[:HEAD] + buf[-TAIL:]
    return buf
