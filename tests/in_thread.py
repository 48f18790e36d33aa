"""Run a blocking call in a thread and collect what it returned or raised."""

from __future__ import annotations

import threading

WAIT = 10.0  # generous: these waits end by being woken, not by timing out


def in_thread(call, *args, wait=WAIT):
    """Start ``call(*args)`` in a thread; return a function that joins it
    (failing if it is still running after ``wait`` seconds) and gives back
    its result or raises its exception."""
    outcome = {}
    started = threading.Event()

    def run():
        started.set()
        try:
            outcome["value"] = call(*args)
        except Exception as exc:  # noqa: BLE001 - handed back to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    started.wait()

    def result():
        thread.join(wait)
        assert not thread.is_alive(), "the waiter was never woken"
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    return result
