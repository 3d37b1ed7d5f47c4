"""Real clusters for the scale-out tests, from the same wheels as the embedded default:

* :class:`ValkeyCluster`: three ``valkey-server --cluster-enabled yes`` masters; the fixture
  itself assigns the slots (``CLUSTER ADDSLOTSRANGE``), introduces the nodes (``CLUSTER MEET``)
  and waits for ``cluster_state:ok`` on every node.
* :class:`NatsCluster`: three ``nats-server`` processes with JetStream, joined by routes; ready
  once JetStream has a meta leader. Nodes can be killed and restarted by name.

Both bind to any host address given (the multi-host test runs them inside network namespaces
through ``wrap``), on free ports by default."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis as redis_sync
from supie_common.embedded import (
    die_with_parent,
    free_port,
    nats_server_binary,
    valkey_server_binary,
    wait_for_port,
)

__all__ = [
    "ValkeyCluster",
    "NatsCluster",
    "NatsNode",
    "valkey_cluster",
    "nats_cluster",
    "wait_until",
]

SLOTS = 16384
Wrap = Callable[[int, list[str]], list[str]]


def _no_wrap(_: int, argv: list[str]) -> list[str]:
    return argv


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class ValkeyNode:
    host: str
    port: int
    bus_port: int
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None


class ValkeyCluster:
    """Three masters, no replicas: every slot is served, so any key works."""

    def __init__(
        self, base: Path, hosts: Sequence[str] = ("127.0.0.1",) * 3, wrap: Wrap = _no_wrap
    ) -> None:
        self.wrap = wrap
        self.nodes = [
            ValkeyNode(host, free_port(), free_port(), base / f"valkey-{i}")
            for i, host in enumerate(hosts)
        ]

    @property
    def url(self) -> str:
        """The cluster URL ``connect_redis`` takes: every node as a seed."""
        return "redis+cluster://" + ",".join(f"{n.host}:{n.port}" for n in self.nodes)

    def _client(self, node: ValkeyNode) -> redis_sync.Redis:
        return redis_sync.Redis(host=node.host, port=node.port, decode_responses=True)

    def start(self, timeout_s: float = 30.0) -> ValkeyCluster:
        for i, node in enumerate(self.nodes):
            node.data_dir.mkdir(parents=True, exist_ok=True)
            argv = [
                valkey_server_binary(),
                "--bind", node.host,
                "--port", str(node.port),
                "--cluster-enabled", "yes",
                "--cluster-port", str(node.bus_port),
                "--cluster-config-file", str(node.data_dir / "nodes.conf"),
                "--cluster-node-timeout", "3000",
                "--dir", str(node.data_dir),
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--save", "",
                "--protected-mode", "no",
                "--daemonize", "no",
            ]  # fmt: skip
            node.proc = _spawn(self.wrap(i, argv), node.data_dir / "valkey.log")
        for node in self.nodes:
            self._wait_port(node, timeout_s)
        per = SLOTS // len(self.nodes)
        for i, node in enumerate(self.nodes):
            last = SLOTS - 1 if i == len(self.nodes) - 1 else (i + 1) * per - 1
            self._client(node).execute_command("CLUSTER", "ADDSLOTSRANGE", i * per, last)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            self._client(first).execute_command(
                "CLUSTER", "MEET", node.host, node.port, node.bus_port
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            states = [self._client(n).cluster("info")["cluster_state"] for n in self.nodes]
            if all(s == "ok" for s in states):
                return self
            time.sleep(0.1)
        raise TimeoutError(f"valkey cluster not ok after {timeout_s}s: {states}")

    def _wait_port(self, node: ValkeyNode, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if self._client(node).ping():
                    return
            except redis_sync.ConnectionError:
                time.sleep(0.05)
        raise TimeoutError(f"valkey {node.host}:{node.port} did not start")

    def stop(self) -> None:
        for node in self.nodes:
            _stop(node.proc)


@dataclass
class NatsNode:
    name: str
    host: str
    port: int
    cluster_port: int
    monitor_port: int
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    argv: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"


class NatsCluster:
    """Three JetStream nodes joined by routes (cluster ``supie``)."""

    def __init__(
        self,
        base: Path,
        hosts: Sequence[str] = ("127.0.0.1",) * 3,
        wrap: Wrap = _no_wrap,
        ports: Sequence[tuple[int, int, int]] | None = None,
    ) -> None:
        self.wrap = wrap
        self.nodes = [
            NatsNode(
                f"n{i + 1}",
                host,
                *(ports[i] if ports else (free_port(), free_port(), free_port())),
                base / f"nats-{i + 1}",
            )
            for i, host in enumerate(hosts)
        ]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def node(self, name: str) -> NatsNode:
        return next(n for n in self.nodes if n.name == name)

    def _argv(self, node: NatsNode) -> list[str]:
        routes = ",".join(f"nats://{n.host}:{n.cluster_port}" for n in self.nodes if n is not node)
        return [
            nats_server_binary(),
            "--name", node.name,
            "-a", node.host,
            "-p", str(node.port),
            "-m", str(node.monitor_port),
            "-js",
            "-sd", str(node.data_dir / "jetstream"),
            "--cluster_name", "supie",
            "--cluster", f"nats://{node.host}:{node.cluster_port}",
            "--routes", routes,
        ]  # fmt: skip

    def start_node(self, node: NatsNode) -> None:
        node.data_dir.mkdir(parents=True, exist_ok=True)
        index = self.nodes.index(node)
        node.proc = _spawn(self.wrap(index, self._argv(node)), node.data_dir / "nats.log")

    def start(self, timeout_s: float = 60.0) -> NatsCluster:
        for node in self.nodes:
            self.start_node(node)
        for node in self.nodes:
            self.wait_node(node, timeout_s)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.meta_leader() is not None:
                return self
            time.sleep(0.2)
        raise TimeoutError(f"no JetStream meta leader after {timeout_s}s")

    def wait_node(self, node: NatsNode, timeout_s: float = 30.0) -> None:
        wait_for_port(node.host, node.port, timeout_s)

    def _monitor(self, node: NatsNode, path: str) -> dict[str, object] | None:
        try:
            with socket.create_connection((node.host, node.monitor_port), timeout=1) as s:
                s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
                chunks = []
                while chunk := s.recv(65536):
                    chunks.append(chunk)
        except OSError:
            return None
        body = b"".join(chunks).split(b"\r\n\r\n", 1)[-1]
        try:
            data = json.loads(body)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def meta_leader(self) -> str | None:
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None:
                continue
            info = self._monitor(node, "/jsz")
            meta = info.get("meta_cluster") if info else None
            if isinstance(meta, dict) and meta.get("leader"):
                return str(meta["leader"])
        return None

    def kill(self, name: str) -> None:
        node = self.node(name)
        if node.proc is not None and node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait()
        node.proc = None

    def stop(self) -> None:
        for node in self.nodes:
            _stop(node.proc)


@pytest.fixture
def valkey_cluster(tmp_path: Path) -> Iterator[ValkeyCluster]:
    cluster = ValkeyCluster(tmp_path / "vc")
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    cluster = NatsCluster(tmp_path / "nc")
    try:
        yield cluster.start()
    finally:
        cluster.stop()


async def wait_until(condition: Callable[[], object], timeout_s: float, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
