"""The example node agent: runs the hub's commands and streams their output.

Each command runs as a real subprocess.  Its stdout and stderr are written to
spool files first and sent from there, chunk by chunk, so that nothing is
lost while the hub is away: after reconnecting, the node names the tasks it
still has, the hub answers with the offsets its journal holds, and the node
sends each stream again from there.  A task is forgotten only once the hub
says its end is recorded.

    python examples/grpc_hub/node.py --hub 127.0.0.1:50051 --node-id node-1
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import itertools
import logging
import os
import shutil
import signal
import sys
import tempfile
from typing import Any, AsyncIterator, Optional

# The node forks a subprocess per command while its channel is open: without
# this, gRPC's fork handlers may write their own log lines into the child's
# stderr (seen with grpcio 1.80), which would become part of the task's output.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

import grpc  # noqa: E402

from protocol import CHUNK, pb, rpc

log = logging.getLogger("node")

STREAMS = ("stdout", "stderr")
_spool_names = itertools.count()
SPOOL_PREFIX = "taskjournal-node-"
#: In each spool folder: the pid of the node that owns it.
OWNER_FILE = "owner.pid"


class NodeTask:
    """One command: its spool files, and how much of each the hub has."""

    def __init__(self, task_id: str, argv: list[str], spool: str) -> None:
        self.task_id = task_id
        self.argv = argv
        number = next(_spool_names)  # never a task id in a file name
        self.paths = {name: os.path.join(spool, f"{number}.{name}") for name in STREAMS}
        self.written = dict.fromkeys(STREAMS, 0)
        self.sent = dict.fromkeys(STREAMS, 0)
        self.exit_code: Optional[int] = None
        self.process: Optional[asyncio.subprocess.Process] = None
        # Per connection: may we send (a new task, or the hub said Resume),
        # and did we tell this connection it started / ended?
        self.resumed = True
        self.started_sent = False
        self.exit_sent = False

    def forget(self) -> None:
        for path in self.paths.values():
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


class NodeAgent:
    def __init__(self, hub: str, node_id: str, spool: str) -> None:
        self.hub = hub
        self.node_id = node_id
        self.spool = spool
        self.tasks: dict[str, NodeTask] = {}
        self.wake = asyncio.Event()
        #: Bumped per connection: a pump of an earlier one stops at once.
        self.session = 0

    async def run(self) -> None:
        pause = 0.05
        while True:
            try:
                await self._session()
                pause = 0.05
            except grpc.aio.AioRpcError as exc:
                log.info("hub unreachable (%s); retrying", exc.code().name)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)

    async def _session(self) -> None:
        async with grpc.aio.insecure_channel(self.hub) as channel:
            outbox: asyncio.Queue[Any] = asyncio.Queue(maxsize=64)
            for task in self.tasks.values():
                # Nothing goes out for an old task before the hub says where from.
                task.resumed = task.started_sent = task.exit_sent = False
            hello = pb.Hello(node_id=self.node_id, task_ids=list(self.tasks))
            await outbox.put(pb.NodeMessage(hello=hello))
            self.session += 1
            call = rpc.HubStub(channel).Connect(_drain(outbox))
            pump = asyncio.ensure_future(self._pump(outbox, self.session))
            try:
                async for message in call:
                    self._handle(message)
                    if pump.done():
                        pump.result()  # the pump failed: raise its error here
            finally:
                # Not only cancel(): on Python < 3.12 wait_for() can swallow a
                # cancellation, and a pump left running would mark output as
                # sent into a dead connection.
                self.session += 1
                pump.cancel()

    def _handle(self, message: Any) -> None:
        kind = message.WhichOneof("kind")
        if kind == "command":
            command = message.command
            task = NodeTask(command.task_id, list(command.argv), self.spool)
            self.tasks[task.task_id] = task
            asyncio.ensure_future(self._run(task))
        elif kind == "resume":
            task = self.tasks.get(message.resume.task_id)
            if task is not None:
                for name in STREAMS:
                    task.sent[name] = message.resume.offsets.get(name, 0)
                task.resumed = True
                task.exit_sent = False
                log.info("resume %s from %s", task.task_id, dict(task.sent))
        elif kind == "done":
            task = self.tasks.pop(message.done.task_id, None)
            if task is not None:
                task.forget()
        self.wake.set()

    async def _run(self, task: NodeTask) -> None:
        try:
            process = await asyncio.create_subprocess_exec(
                *task.argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
        except OSError as exc:
            with open(task.paths["stderr"], "ab") as spool:
                spool.write(f"node: cannot run {task.argv[0]!r}: {exc}\n".encode())
            task.written["stderr"] = os.path.getsize(task.paths["stderr"])
            task.exit_code = 127
            self.wake.set()
            return
        task.process = process
        await asyncio.gather(
            self._capture(task, "stdout", process.stdout),
            self._capture(task, "stderr", process.stderr),
        )
        task.exit_code = await process.wait()
        self.wake.set()

    async def _capture(self, task: NodeTask, name: str, reader: Any) -> None:
        with open(task.paths[name], "ab") as spool:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    return
                spool.write(data)
                spool.flush()
                task.written[name] += len(data)
                self.wake.set()

    async def _pump(self, outbox: asyncio.Queue[Any], session: int) -> None:
        """Send whatever the hub lacks, oldest task first; a heartbeat when idle."""

        async def send(message: Any) -> None:
            await outbox.put(message)
            if self.session != session:
                raise asyncio.CancelledError  # this connection is over

        while self.session == session:
            self.wake.clear()
            sent_any = False
            for task in list(self.tasks.values()):
                if not task.resumed:
                    continue
                if not task.started_sent:
                    await send(pb.NodeMessage(started=pb.Started(task_id=task.task_id)))
                    task.started_sent = True
                for name in STREAMS:
                    while task.resumed and task.sent[name] < task.written[name]:
                        data = _read(task.paths[name], task.sent[name], CHUNK)
                        output = pb.Output(task_id=task.task_id, stream=name,
                                           offset=task.sent[name], data=data)
                        task.sent[name] += len(data)
                        await send(pb.NodeMessage(output=output))
                        sent_any = True
                done = all(task.sent[name] >= task.written[name] for name in STREAMS)
                if task.exit_code is not None and done and not task.exit_sent:
                    exit = pb.Exit(task_id=task.task_id, exit_code=task.exit_code)
                    await send(pb.NodeMessage(exit=exit))
                    task.exit_sent = True
                    sent_any = True
                    log.info("exit %s %d sent at %s", task.task_id, task.exit_code, dict(task.sent))
            if not sent_any:
                try:
                    await asyncio.wait_for(self.wake.wait(), 1.0)
                except asyncio.TimeoutError:
                    await send(pb.NodeMessage(heartbeat=pb.Heartbeat()))


    def stop(self) -> int:
        """End the commands still running (they would outlive the node, their
        output going nowhere); their tasks are left to the hub, which finds
        them lost once this node's lease runs out.  How many there were."""
        running = [task.process for task in self.tasks.values()
                   if task.process is not None and task.process.returncode is None]
        for process in running:
            try:
                process.terminate()
            except ProcessLookupError:
                pass
        return len(running)


def make_spool() -> str:
    """A spool folder of this node's own, after removing those that nodes
    killed without a chance to clean up (SIGKILL, a power cut) left behind."""
    for path in glob.glob(os.path.join(tempfile.gettempdir(), SPOOL_PREFIX + "*")):
        try:
            with open(os.path.join(path, OWNER_FILE)) as owner:
                pid = int(owner.read())
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)  # its node is gone
        except (OSError, ValueError):
            pass  # not a node's, not ours to judge, or its node still runs
    spool = tempfile.mkdtemp(prefix=SPOOL_PREFIX)
    with open(os.path.join(spool, OWNER_FILE), "w") as owner:
        owner.write(str(os.getpid()))
    return spool


async def _drain(outbox: asyncio.Queue[Any]) -> AsyncIterator[Any]:
    while True:
        yield await outbox.get()


def _read(path: str, offset: int, size: int) -> bytes:
    with open(path, "rb") as spool:
        spool.seek(offset)
        return spool.read(size)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hub", default="127.0.0.1:50051")
    parser.add_argument("--node-id", required=True)
    args = parser.parse_args(argv)
    level = logging.INFO if os.environ.get("HUB_EXAMPLE_DEBUG") else logging.WARNING
    logging.basicConfig(level=level, format="node: %(message)s", stream=sys.stderr)
    # Until the loop takes the signals over, SIGTERM ends the node as Ctrl-C
    # does (the spool is removed below), not by the default kill.
    signal.signal(signal.SIGTERM, _interrupt)
    spool = ""
    try:
        spool = make_spool()
        print(f"node {args.node_id}: connecting to {args.hub}, spooling in {spool}", flush=True)
    except KeyboardInterrupt:  # a SIGTERM this early: nothing ran yet
        if spool:
            shutil.rmtree(spool, ignore_errors=True)
        return

    async def run() -> None:  # the agent's Event belongs to this loop
        agent = NodeAgent(args.hub, args.node_id, spool)
        main_task = asyncio.current_task()
        assert main_task is not None
        loop = asyncio.get_running_loop()
        # Ctrl-C and SIGTERM end the agent here, quietly, not with a
        # KeyboardInterrupt in whatever callback the loop was running.
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, main_task.cancel)
        try:
            await agent.run()
        except asyncio.CancelledError:
            ended = agent.stop()
            print(f"node {args.node_id}: stopped; {ended} running command(s) ended, "
                  f"{len(agent.tasks)} task(s) left to the hub", flush=True)

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass  # before the loop took the signals over
    finally:
        shutil.rmtree(spool, ignore_errors=True)


if __name__ == "__main__":
    main()
