"""The example hub: a grpc.aio server that keeps its tasks in a TaskJournal.

Nodes connect and receive commands; every chunk of output they stream goes
straight into the task's append handle.  Callers submit commands and wait for
results.  Killed and restarted on the same store, the hub lists the tasks that
were in flight, and each node that reconnects re-attaches its own and resends
what the journal's last checkpoint lacks.  Every journal call that waits
for the store is the ``*_async`` twin, awaited on the loop: no thread hop.

    python examples/grpc_hub/hub.py --port 50051 --store sqlite:///hub.db
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import logging
import os
import signal
import sys
import time
import uuid
from typing import Any, AsyncIterator, Optional

import grpc

from protocol import pb, rpc

from journal import (
    DuplicateTask,
    InvalidTransition,
    JournalConfig,
    ResultExpired,
    StreamSealed,
    TaskJournal,
    TaskLost,
    UnknownTask,
    WaitTimeout,
)

log = logging.getLogger("hub")

MESSAGE_LIMIT = 16 * 1024 * 1024
OPTIONS = [
    ("grpc.max_send_message_length", MESSAGE_LIMIT),
    ("grpc.max_receive_message_length", MESSAGE_LIMIT),
]


class NodeLink:
    """One connected node: what the hub still has to tell it."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.outbox: asyncio.Queue[Any] = asyncio.Queue()


class Hub(rpc.HubServicer):
    def __init__(self, journal: TaskJournal, started: float) -> None:
        self.journal = journal
        self.started = started
        self.links: dict[str, NodeLink] = {}
        self._turn = itertools.count()
        self.chunks = 0
        self.bytes = 0
        self.reattached = 0
        self.reattached_after = 0.0
        #: Set on Ctrl-C or SIGTERM: open calls end on their own, so that
        #: stopping the server cancels nothing (a cancelled handler is a
        #: CancelledError traceback in gRPC's log).
        self.stopping = asyncio.Event()

    # -- nodes ---------------------------------------------------------------

    async def Connect(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        messages = request_iterator.__aiter__()
        first = await messages.__anext__()
        if first.WhichOneof("kind") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a node opens with Hello")
        link = NodeLink(first.hello.node_id)
        self.links[link.node_id] = link
        self.journal.heartbeat(link.node_id)
        log.info("node %s connected with %d task(s)", link.node_id, len(first.hello.task_ids))
        for task_id in first.hello.task_ids:
            await self._reattach(link, task_id)
        reader = asyncio.ensure_future(self._read(link, messages))
        stopping = asyncio.ensure_future(self.stopping.wait())
        try:
            while True:
                outgoing = asyncio.ensure_future(link.outbox.get())
                await asyncio.wait({outgoing, reader, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not outgoing.done():
                    outgoing.cancel()
                    # The node went away, or the hub stops: the node keeps
                    # its tasks and re-attaches them to the next hub.
                    break
                yield outgoing.result()
        finally:
            reader.cancel()
            stopping.cancel()
            if self.links.get(link.node_id) is link:
                del self.links[link.node_id]
            log.info("node %s disconnected", link.node_id)

    async def _reattach(self, link: NodeLink, task_id: str) -> None:
        try:
            record = await self.journal.reattach_async(task_id, link.node_id)
        except (InvalidTransition, UnknownTask) as exc:
            # Ended already (its end was durable before the restart), or
            # never registered here: nothing more to send.
            await link.outbox.put(pb.HubMessage(done=pb.Done(task_id=task_id, reason=str(exc))))
            return
        offsets = {name: view.total for name, view in record.streams.items()}
        log.info("re-attached %s at %s", task_id, offsets)
        self.reattached += 1
        self.reattached_after = time.monotonic() - self.started
        await link.outbox.put(pb.HubMessage(resume=pb.Resume(task_id=task_id, offsets=offsets)))

    async def _read(self, link: NodeLink, messages: Any) -> None:
        handles: dict[tuple[str, str], Any] = {}
        async for message in messages:
            self.journal.heartbeat(link.node_id)
            kind = message.WhichOneof("kind")
            if kind == "output":
                await self._ingest(link, message.output, handles)
            elif kind == "started":
                try:
                    await self.journal.start_async(message.started.task_id)
                except InvalidTransition:
                    pass  # started before a restart, or ended already
            elif kind == "exit":
                await self._finish(link, message.exit)

    async def _ingest(self, link: NodeLink, output: Any, handles: dict[tuple[str, str], Any]) -> None:
        key = (output.task_id, output.stream)
        handle = handles.get(key)
        if handle is None:
            try:
                handle = handles[key] = self.journal.stream(output.task_id, output.stream)
            except (StreamSealed, UnknownTask) as exc:
                log.info("output for %s dropped: %r", output.task_id, exc)
                return  # the task ended (or is unknown): its final state is kept
        self.chunks += 1
        self.bytes += len(output.data)
        data = output.data
        total = handle.total
        if output.offset > total:
            log.info("gap in %s %s: got %d, hold %d", output.task_id, output.stream, output.offset, total)
            # A gap: ask for the stream again from what the journal holds.
            resume = pb.Resume(task_id=output.task_id, offsets={output.stream: total})
            await link.outbox.put(pb.HubMessage(resume=resume))
            return
        if output.offset < total:
            data = data[total - output.offset:]  # sent twice (a resend): keep it once
        if data:
            try:
                handle.append(data)
            except StreamSealed:
                pass

    async def _finish(self, link: NodeLink, exit: Any) -> None:
        task_id, code = exit.task_id, exit.exit_code
        log.info("exit %s %d", task_id, code)
        try:
            if code == 0:
                await self.journal.complete_async(task_id, {"exit_code": 0})
            else:
                await self.journal.fail_async(task_id, f"exit code {code}", {"exit_code": code})
        except (InvalidTransition, UnknownTask):
            pass  # its end was already recorded
        await link.outbox.put(pb.HubMessage(done=pb.Done(task_id=task_id, reason="recorded")))

    # -- callers -------------------------------------------------------------

    async def Submit(self, request: Any, context: Any) -> Any:
        argv = list(request.argv)
        if not argv:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "argv is empty")
        links = list(self.links.values())
        if not links:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no node is connected")
        link = links[next(self._turn) % len(links)]
        task_id = request.task_id or uuid.uuid4().hex
        try:
            await self.journal.register_async(task_id, link.node_id, {"argv": argv})
        except DuplicateTask:
            known = self.journal.get(task_id)
            if known.meta != {"argv": argv}:
                await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"task {task_id!r} runs another command")
            return pb.SubmitReply(task_id=task_id, node_id=known.node_id)  # a retried Submit
        await link.outbox.put(pb.HubMessage(command=pb.Command(task_id=task_id, argv=argv)))
        return pb.SubmitReply(task_id=task_id, node_id=link.node_id)

    async def Wait(self, request: Any, context: Any) -> Any:
        timeout: Optional[float] = request.timeout or None
        waiting = asyncio.ensure_future(self.journal.wait_async(request.task_id, timeout))
        stopping = asyncio.ensure_future(self.stopping.wait())
        await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not waiting.done():
            waiting.cancel()
            # UNAVAILABLE: the caller retries, and asks the next hub.
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the hub is stopping")
        try:
            record = waiting.result()
        except TaskLost as exc:
            record = exc.record
        except WaitTimeout as exc:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc))
        except (UnknownTask, ResultExpired) as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return _result(record)

    async def Stats(self, request: Any, context: Any) -> Any:
        in_flight = self.journal.in_flight()
        return pb.HubStats(
            chunks=self.chunks, bytes=self.bytes, seconds=time.monotonic() - self.started,
            recovered=self.journal.recovered, reattached=self.reattached,
            reattached_after=self.reattached_after, in_flight=len(in_flight),
            detached=sum(record.detached for record in in_flight), nodes=len(self.links),
        )


def _result(record: Any) -> Any:
    result = record.result if isinstance(record.result, dict) else {}
    streams = [
        pb.StreamResult(name=name, total=view.total, dropped=view.dropped, head=view.head,
                        tail=view.tail, text=view.render())
        for name, view in record.streams.items()
    ]
    return pb.TaskResult(
        task_id=record.task_id, node_id=record.node_id, status=record.status.value,
        exit_code=int(result.get("exit_code", -1)), error=record.error or "", streams=streams,
    )


async def serve(port: int, store: str, grace: float, lease: float) -> None:
    started = time.monotonic()
    journal = TaskJournal(store, config=JournalConfig(reattach_grace=grace, lease_timeout=lease))
    server = grpc.aio.server(options=OPTIONS)
    hub = Hub(journal, started)
    rpc.add_HubServicer_to_server(hub, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    # What start-up made (modules, grpc, the journal, the tasks it recovered)
    # lives as long as the process: kept out of every later collection, a
    # full one during a burst of calls walks only what was made since
    # (a 13-27 ms loop stall in bench/test_async_bench.py, 3-9 ms frozen).
    gc.freeze()
    print(f"hub: listening on 127.0.0.1:{port}, journal {store}, "
          f"{journal.recovered} task(s) in flight to re-attach", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    hub.stopping.set()
    await server.stop(grace=5)
    in_flight = len(journal.in_flight())
    # close() leaves the unfinished tasks in the store: the next hub on this
    # store lists them, and their nodes re-attach them.
    await journal.close_async()
    print(f"hub: stopped; journal closed, {in_flight} task(s) in flight left to re-attach",
          flush=True)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=50051)
    parser.add_argument("--store", default="sqlite:///hub.db")
    parser.add_argument("--grace", type=float, default=30.0,
                        help="seconds a node has to re-attach after a restart")
    parser.add_argument("--lease", type=float, default=30.0,
                        help="seconds a silent node keeps its tasks")
    args = parser.parse_args(argv)
    level = logging.INFO if os.environ.get("HUB_EXAMPLE_DEBUG") else logging.WARNING
    logging.basicConfig(level=level, format="hub: %(message)s", stream=sys.stderr)
    try:
        asyncio.run(serve(args.port, args.store, args.grace, args.lease))
    except KeyboardInterrupt:
        # Ctrl-C before the loop took the signals over (while the journal
        # opened): nothing was served yet, nothing to say but that.
        print("hub: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
