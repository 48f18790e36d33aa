"""The example caller: submit a command to the hub and wait for its result.

Both calls ride out a hub restart: they retry while the hub is unreachable,
and a retried Submit carries the same task id, so it never runs twice.

    python examples/grpc_hub/client.py --hub 127.0.0.1:50051 -- make -k all
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


class HubClient:
    def __init__(self, hub: str, patience: float = 60.0) -> None:
        self._channel = grpc.insecure_channel(hub)
        self._stub = rpc.HubStub(self._channel)
        #: How long to keep retrying while the hub is down.
        self.patience = patience

    def submit(self, argv: list[str], task_id: Optional[str] = None) -> Any:
        request = pb.SubmitRequest(argv=argv, task_id=task_id or uuid.uuid4().hex)
        return self._retry(lambda: self._stub.Submit(request, timeout=10))

    def wait(self, task_id: str, timeout: float = 600.0) -> Any:
        deadline = time.monotonic() + timeout
        return self._retry(lambda: self._stub.Wait(
            pb.WaitRequest(task_id=task_id, timeout=max(0.1, deadline - time.monotonic()))
        ), until=deadline)

    def stats(self) -> Any:
        return self._retry(lambda: self._stub.Stats(pb.StatsRequest(), timeout=10))

    def _retry(self, call: Callable[[], T], until: Optional[float] = None) -> T:
        deadline = until if until is not None else time.monotonic() + self.patience
        pause = 0.05
        while True:
            try:
                return call()
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


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hub", default="127.0.0.1:50051")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    client = HubClient(args.hub)
    submitted = client.submit(args.command)
    print(f"task {submitted.task_id} on {submitted.node_id}", file=sys.stderr, flush=True)
    result = client.wait(submitted.task_id, args.timeout)
    for stream in result.streams:
        print(f"--- {stream.name}: {stream.total} bytes, {stream.dropped} dropped", file=sys.stderr)
        sys.stdout.buffer.write(stream.text)
        sys.stdout.flush()
    print(f"--- {result.status}, exit code {result.exit_code}", file=sys.stderr)
    client.close()
    return result.exit_code if result.status in ("completed", "failed") else 1


if __name__ == "__main__":
    sys.exit(main())
