"""Throwaway Redis for the tests: `redis-server` processes on free loopback ports, data in their own folders.

`RedisServer` is one server (optionally with an append-only file fsynced on every write, optionally with
cluster mode on); `RedisClusterServers` is a cluster of such servers whose slots `redis-cli --cluster
create` assigns. The binaries come from the Debian package `redis-server` (`.ci/run` installs it when
missing); the fixtures in `conftest.py` skip without them, and fail instead under CI=true.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

import redis
from redis.crc import key_slot
from service_testkit import free_port, require_program

HOST = "127.0.0.1"


class RedisServer:
    """One `redis-server` on a free port of 127.0.0.1, its files (log, AOF, nodes.conf) in `folder`.

    `aof=True` fsyncs the append-only file on every write, so a write Redis acknowledged survives a
    SIGKILL; restarting (`start` after `kill`) reuses the port and the folder, so the data comes back.
    """

    def __init__(self, folder: Path, *, aof: bool = False, cluster: bool = False) -> None:
        self.binary = require_program("redis-server", "redis-server")
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.aof = aof
        self.cluster = cluster
        self.port = free_port()
        self.cluster_port = free_port() if cluster else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = False

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def _args(self) -> list[str]:
        args = [self.binary, "--port", str(self.port), "--bind", HOST, "--dir", str(self.folder),
                "--logfile", "redis.log", "--save", "", "--daemonize", "no",
                "--appendonly", "yes" if self.aof else "no", "--appendfsync", "always"]
        if self.cluster_port is not None:
            # its own bus port (not port + 10000, which may be out of range or taken); a node whose
            # master is down keeps serving its own slots (histories are independent per user)
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--cluster-port", str(self.cluster_port), "--cluster-node-timeout", "2000",
                     "--cluster-require-full-coverage", "no"]
        return args

    def start(self, timeout_s: float = 10.0) -> None:
        """Start, or restart on the same port and folder. A first start whose port another process took
        after `free_port` released it moves to fresh ports (three tries)."""
        for attempt in range(3):
            if self._run(timeout_s):
                self.started = True
                return
            log = self.log()
            if self.started or "Address already in use" not in log or attempt == 2:
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}")
            self.port = free_port()
            self.cluster_port = free_port() if self.cluster else None

    def _run(self, timeout_s: float) -> bool:
        self.proc = subprocess.Popen(self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with contextlib.closing(self.client(socket_timeout=0.2)) as client:
                    client.ping()
                    return True
            except redis.RedisError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.kill()
                    return False
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final save; only what the AOF already holds survives."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def client(self, socket_timeout: float = 2.0) -> redis.Redis:
        return redis.Redis(HOST, self.port, decode_responses=True, socket_timeout=socket_timeout,
                           socket_connect_timeout=socket_timeout)

    def log(self) -> str:
        path = self.folder / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"


class RedisClusterServers:
    """`masters` cluster-mode servers (AOF on), joined into one cluster with all 16384 slots assigned."""

    def __init__(self, folder: Path, masters: int = 3) -> None:
        self.cli = require_program("redis-cli", "redis-server")
        self.nodes = [RedisServer(folder / f"node{i}", aof=True, cluster=True) for i in range(masters)]

    @property
    def url(self) -> str:
        """A startup node: the service discovers the others from it."""
        return self.nodes[0].url

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run([self.cli, "--cluster", "create", *(n.address for n in self.nodes),
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        self.wait_ok()

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Until every node is up and says `cluster_state:ok` (all slots served, all nodes known)."""
        deadline = time.monotonic() + timeout_s
        while True:
            states = []
            for node in self.nodes:
                try:
                    with contextlib.closing(node.client(socket_timeout=0.5)) as client:
                        info = client.cluster("info")
                        states.append(info["cluster_state"] == "ok"
                                      and int(info["cluster_known_nodes"]) == len(self.nodes))
                except redis.RedisError:
                    states.append(False)
            if all(states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster is not ok after {timeout_s} s: {states}")
            time.sleep(0.1)

    def node_of(self, key: str) -> RedisServer:
        """The node that serves `key`'s slot (from the slot map of a live node)."""
        slot = key_slot(key.encode())
        for node in self.nodes:
            if node.proc is None:
                continue
            with contextlib.closing(node.client()) as client:
                for first, last, (_, port, *_), *_ in client.cluster("slots"):  # CLUSTER SLOTS rows
                    if int(first) <= slot <= int(last):
                        return next(n for n in self.nodes if n.port == int(port))
        raise LookupError(f"no live node knows the owner of slot {slot}")

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()
