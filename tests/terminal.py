"""Run the taskjournal command on a real pseudo-terminal, as an operator does.

The child gets a pty of a set size for stdin, stdout and stderr (so
``isatty()`` is true and rich measures the screen by ioctl), and everything
it draws is read back from the master side, escapes included.  Python's own
``pty`` and ``termios`` do it: no extra test dependency, POSIX only.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from typing import Optional

ESCAPE = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>]")


class Screen:
    """One command on a pty: ``expect`` what it draws, ``send`` keys."""

    def __init__(self, args: list[str], columns: int = 80, rows: int = 24,
                 env: Optional[dict[str, str]] = None) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        environ = {key: value for key, value in os.environ.items()
                   if key not in ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "PAGER",
                                  "TASKJOURNAL_PAGER", "LESS", "TERM", "COLORTERM")}
        environ.update(TERM="xterm-256color", **(env or {}))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "journal", *args], stdin=slave, stdout=slave, stderr=slave,
            env=environ, start_new_session=True, close_fds=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)
        self.master = master
        self.output = b""

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed its side
            return False
        if not data:
            return False
        self.output += data
        return True

    def expect(self, pattern: bytes, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.output):
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not on the screen in {timeout} s:\n"
                                     f"{self.output[-3000:]!r}")
            if not self._read(0.1) and self.process.poll() is not None:
                raise AssertionError(f"the command ended before {pattern!r}:\n"
                                     f"{self.output[-3000:]!r}")

    def send(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def wait(self, timeout: float = 60) -> int:
        """Read to the end; the exit status."""
        deadline = time.monotonic() + timeout
        while self._read(0.1) or self.process.poll() is None:
            if time.monotonic() > deadline:
                os.killpg(self.process.pid, signal.SIGKILL)
                raise AssertionError(f"still running after {timeout} s:\n{self.output[-3000:]!r}")
        while self._read(0.05):
            pass
        os.close(self.master)
        return self.process.wait()

    @property
    def plain(self) -> str:
        """What was drawn, without escapes, ``\\r\\n`` as ``\\n``."""
        return ESCAPE.sub(b"", self.output).replace(b"\r\n", b"\n").decode("utf-8", "replace")


def run_on_terminal(*args: str, columns: int = 80, rows: int = 24,
                    env: Optional[dict[str, str]] = None, timeout: float = 60) -> tuple[int, Screen]:
    screen = Screen(list(args), columns, rows, env)
    return screen.wait(timeout), screen
