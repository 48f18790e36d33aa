"""Run a function in a forked child and collect its exit code."""

from __future__ import annotations

import os
import signal
import time

HUNG = -signal.SIGKILL  # what in_a_forked_child returns for a child it had to kill


def in_a_forked_child(run, patience=10.0):
    """Fork, run ``run()`` in the child and exit with what it returns (98 if
    it raised); the child's exit code, or HUNG if it was still running after
    ``patience`` seconds."""
    pid = os.fork()
    if pid == 0:
        code = 98
        try:
            code = run()
        except BaseException as exc:  # noqa: BLE001 - reported through the exit code
            os.write(2, f"the child raised {exc!r}\n".encode())
        finally:
            os._exit(code)
    deadline = time.monotonic() + patience
    while not (done := os.waitpid(pid, os.WNOHANG))[0] and time.monotonic() < deadline:
        time.sleep(0.02)
    if not done[0]:
        os.kill(pid, signal.SIGKILL)
        done = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(done[1])
