"""A real redis-server process on a free loopback port, for the tests."""

from __future__ import annotations

import os
import pathlib
import random
import shutil
import signal
import socket
import subprocess
import time


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """Start, stop and restart one redis-server.

    ``persistent=True`` turns on the append-only file with an fsync per
    write, so that data survives a restart (for outage tests); otherwise
    persistence is off, as in CI.
    """

    def __init__(self, directory: pathlib.Path, persistent: bool = False,
                 args: tuple[str, ...] = ()) -> None:
        self.directory = directory
        self.port = free_port()
        self.persistent = persistent
        #: More redis-server arguments (``--replicaof HOST PORT``, ...).
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        persistence = (["--appendonly", "yes", "--appendfsync", "always"] if self.persistent
                       else ["--appendonly", "no"])
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--dir", str(self.directory), *persistence, *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    # -- faults, for the tests of the Redis store's error handling ----------

    def client(self):
        """A plain redis-py client of this server (imports redis lazily)."""
        import redis

        return redis.Redis.from_url(self.url)

    def freeze(self) -> None:
        """SIGSTOP the server: connections are accepted by the kernel and
        commands queue unanswered; they run once :meth:`thaw` is called."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the server (nothing flushed)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


class RedisClusterServers:
    """A Redis Cluster of ``primaries`` primaries, each with ``replicas``
    replicas, on free loopback ports (``cluster-node-timeout`` short, so a
    failover takes a couple of seconds rather than fifteen)."""

    def __init__(self, directory: pathlib.Path, primaries: int = 3, replicas: int = 0,
                 node_timeout_ms: int = 1000) -> None:
        self.directory = directory
        self.primaries = primaries
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.ports: list[int] = []
        while len(self.ports) < primaries * (1 + replicas):
            port = cluster_port()
            if port not in self.ports:
                self.ports.append(port)
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start_node(self, port: int) -> None:
        node_dir = self.directory / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        self.processes[port] = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(node_dir), "--cluster-enabled", "yes",
             "--cluster-config-file", str(node_dir / "nodes.conf"),
             "--cluster-node-timeout", str(self.node_timeout_ms),
             "--repl-diskless-sync-delay", "0",
             "--logfile", str(node_dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait_for_pong(port, self.processes[port])

    def start(self) -> None:
        for port in self.ports:
            self.start_node(port)
        subprocess.run(
            [_cli(), "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60,
        )
        self.wait_healthy()

    def wait_healthy(self, seconds: float = 30.0, replicas: bool = True) -> None:
        """Until every live node says cluster_state:ok and sees all slots
        (and, with ``replicas``, every primary has its replicas in sync)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            states = [self.cli(port, "cluster", "info") for port in self.live_ports()]
            if all("cluster_state:ok" in s and "cluster_slots_ok:16384" in s for s in states) \
                    and (not replicas or self._replicas_online()):
                return
            time.sleep(0.1)
        raise RuntimeError("the Redis cluster did not become healthy")

    def _replicas_online(self) -> bool:
        """Every primary has its replicas attached and past their first sync."""
        if not self.replicas:
            return True
        online = 0
        for port in self.live_ports():
            info = self.cli(port, "info", "replication")
            if "role:master" in info:
                online += info.count("state=online")
        return online >= self.primaries * self.replicas

    def replica_of(self, port: int) -> int:
        """The port of a replica of the primary on ``port``."""
        primary_id = self.cli(port, "cluster", "myid").strip()
        for line in self.cli(port, "cluster", "nodes").splitlines():
            fields = line.split()
            if "slave" in fields[2] and fields[3] == primary_id:
                return int(fields[1].split("@")[0].rsplit(":", 1)[1])
        raise RuntimeError(f"the primary on port {port} has no replica")

    def wait_promoted(self, port: int, seconds: float = 60.0) -> None:
        """Until the node on ``port`` (a replica) is a primary, and the
        cluster is whole again."""
        deadline = time.monotonic() + seconds
        while "role:master" not in self.cli(port, "info", "replication"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the replica on port {port} was not promoted")
            time.sleep(0.05)
        self.wait_healthy(max(1.0, deadline - time.monotonic()), replicas=False)

    def live_ports(self) -> list[int]:
        return [p for p, proc in self.processes.items() if proc.poll() is None]

    def cli(self, port: int, *args: str) -> str:
        return subprocess.run([_cli(), "-p", str(port), *args], check=True,
                              capture_output=True, text=True, timeout=30).stdout

    def kill(self, port: int) -> None:
        """SIGKILL one node (nothing flushed)."""
        process = self.processes.pop(port)
        process.kill()
        process.wait(timeout=10)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            process.wait(timeout=10)
        self.processes.clear()


def _cli() -> str:
    """redis-cli, or Valkey's (Debian sid has Valkey: redis-server there is
    a link to valkey-server, which takes the same cluster options)."""
    return shutil.which("redis-cli") or shutil.which("valkey-cli") or "redis-cli"


def cluster_port() -> int:
    """A free port P whose cluster bus port P + 10000 is free too (a node's
    port must be at most 55535)."""
    while True:
        port = random.randint(20000, 55535)
        try:
            with socket.socket() as one, socket.socket() as bus:
                one.bind(("127.0.0.1", port))
                bus.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port


def _wait_for_pong(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}")
        time.sleep(0.02)
    raise RuntimeError(f"redis-server did not answer on port {port}")


def admin_client(url: str):
    """A plain redis-py client of the server or cluster a store URL names
    (its options dropped), for tests that look behind the store's back."""
    import redis
    from redis.cluster import RedisCluster

    base = url.partition("?")[0]
    probe = redis.Redis.from_url(base)
    try:
        clustered = int(probe.info("cluster").get("cluster_enabled", 0))
    finally:
        probe.close()
    return RedisCluster.from_url(base) if clustered else redis.Redis.from_url(base)


def task_keys(prefix: str, task_id: str) -> list[str]:
    """A task's row and streams keys under ``prefix`` (the store's layout)."""
    from journal.store._redis_keys import Layout

    return Layout(prefix).task_keys(task_id)
