"""The example caller: submit a command to the hub and wait for its result.

Both calls ride out a hub restart: they retry while the hub is unreachable,
and a retried Submit carries the same task id, so it never runs twice.

    python examples/grpc_hub/client.py --hub 127.0.0.1:50051 -- make -k all

It prints the task's streams on stdout and exits with the command's exit
code.  If the hub cannot be reached, has no node, or the command does not
end within --timeout seconds, it says so in one line on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from typing import Any, Callable, Optional, TypeVar

import grpc

from protocol import pb, rpc

T = TypeVar("T")

#: The longest one call may take when the hub answers nothing at all.
CALL_TIMEOUT = 10.0
#: Exit status when the command could not be run or waited for.
UNREACHED = 2


class HubClient:
    def __init__(self, hub: str, patience: float = 60.0) -> None:
        self._channel = grpc.insecure_channel(hub)
        self._stub = rpc.HubStub(self._channel)
        #: How long to keep retrying while the hub is down.
        self.patience = patience

    def submit(self, argv: list[str], task_id: Optional[str] = None) -> Any:
        request = pb.SubmitRequest(argv=argv, task_id=task_id or uuid.uuid4().hex)
        return self._retry(lambda left: self._stub.Submit(request, timeout=min(CALL_TIMEOUT, left)))

    def wait(self, task_id: str, timeout: float = 600.0) -> Any:
        deadline = time.monotonic() + timeout
        # The hub ends the wait at the timeout; the call's own deadline, a
        # little later, covers a hub that stops answering meanwhile.
        return self._retry(lambda left: self._stub.Wait(
            pb.WaitRequest(task_id=task_id, timeout=left), timeout=left + CALL_TIMEOUT,
        ), until=deadline)

    def stats(self) -> Any:
        return self._retry(lambda left: self._stub.Stats(pb.StatsRequest(),
                                                         timeout=min(CALL_TIMEOUT, left)))

    def _retry(self, call: Callable[[float], T], until: Optional[float] = None) -> T:
        """``call(seconds left)`` until it answers, retrying while the hub is
        unreachable; past the deadline, the last error is raised."""
        deadline = until if until is not None else time.monotonic() + self.patience
        pause = 0.05
        while True:
            try:
                return call(max(0.1, deadline - time.monotonic()))
            except grpc.RpcError as exc:
                # UNAVAILABLE: the hub is down or restarting (or has no node
                # yet); CANCELLED: it went away in the middle of the call.
                retryable = exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
                if not retryable or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 1.0)

    def close(self) -> None:
        self._channel.close()


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be seconds > 0, got {text}")
    return value


def explain(exc: grpc.RpcError, hub: str, timeout: float, task: Any = None) -> str:
    """One line for what the client could not get, and from whom."""
    code, details = exc.code(), (exc.details() or "").strip()
    waited = f"gave up after {timeout:g} s (--timeout)"
    if code == grpc.StatusCode.UNAVAILABLE and "no node" in details:
        return f"the hub at {hub} has no node connected to run the command; {waited}"
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return f"cannot reach the hub at {hub} ({details or code.name}); {waited}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and task is not None:
        return (f"task {task.task_id} did not end within {timeout:g} s (--timeout); "
                f"it still runs on {task.node_id}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"the hub at {hub} did not answer; {waited}"
    return f"the hub at {hub} refused: {code.name}: {details}"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hub", default="127.0.0.1:50051")
    parser.add_argument("--timeout", type=_seconds, default=600.0,
                        help="seconds to reach the hub and wait for the command's end")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.timeout
    client = HubClient(args.hub, patience=args.timeout)
    submitted = None
    try:
        submitted = client.submit(args.command)
        print(f"task {submitted.task_id} on {submitted.node_id}", file=sys.stderr, flush=True)
        result = client.wait(submitted.task_id, max(0.1, deadline - time.monotonic()))
    except grpc.RpcError as exc:
        print(f"client: {explain(exc, args.hub, args.timeout, submitted)}", file=sys.stderr)
        return UNREACHED
    except KeyboardInterrupt:
        print("client: interrupted", file=sys.stderr)
        return 130
    finally:
        client.close()
    for stream in result.streams:
        print(f"--- {stream.name}: {stream.total} bytes, {stream.dropped} dropped", file=sys.stderr)
        sys.stdout.buffer.write(stream.text)
        sys.stdout.flush()
    print(f"--- {result.status}, exit code {result.exit_code}", file=sys.stderr)
    return result.exit_code if result.status in ("completed", "failed") else 1


if __name__ == "__main__":
    sys.exit(main())
