"""Three test hosts on one machine: network namespaces joined by veth links to a bridge (in a
namespace of its own), plus one veth from the test process's namespace so the test can reach
them as a client would. Needs root and ``ip`` (iproute2); skips with the reason otherwise.

``lab.wrap(i, argv)`` runs a command on host ``i`` (``ip netns exec``, which execs, so the pid
is the command's own); ``lab.ip(i)`` is its address. Everything is removed at the end."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["NetnsLab", "netns_lab", "SUBNET"]

SUBNET = "10.213.77"  # only inside the lab's namespaces and on its one veth here
CLIENT_IP = f"{SUBNET}.254"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


class NetnsLab:
    def __init__(self, hosts: int = 3) -> None:
        tag = f"s{os.getpid() % 100000}"
        self.tag = tag
        self.switch = f"{tag}-sw"
        self.hosts = [f"{tag}-h{i + 1}" for i in range(hosts)]
        self.client_if = f"{tag}c0"
        self._made: list[str] = []

    def ip(self, i: int) -> str:
        return f"{SUBNET}.{i + 1}"

    @property
    def client_ip(self) -> str:
        return CLIENT_IP

    def wrap(self, i: int, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.hosts[i], *argv]

    def up(self) -> NetnsLab:
        _ip("netns", "add", self.switch)
        self._made.append(self.switch)
        _ip("-n", self.switch, "link", "set", "lo", "up")
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for i, host in enumerate(self.hosts):
            _ip("netns", "add", host)
            self._made.append(host)
            a, b = f"{self.tag}h{i + 1}a", f"{self.tag}h{i + 1}b"
            _ip("link", "add", a, "type", "veth", "peer", "name", b)
            _ip("link", "set", a, "netns", host)
            _ip("link", "set", b, "netns", self.switch)
            _ip("-n", self.switch, "link", "set", b, "master", "br0", "up")
            _ip("-n", host, "addr", "add", f"{self.ip(i)}/24", "dev", a)
            _ip("-n", host, "link", "set", a, "up")
            _ip("-n", host, "link", "set", "lo", "up")
        peer = f"{self.tag}c1"
        _ip("link", "add", self.client_if, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", self.switch)
        _ip("-n", self.switch, "link", "set", peer, "master", "br0", "up")
        _ip("addr", "add", f"{CLIENT_IP}/24", "dev", self.client_if)
        _ip("link", "set", self.client_if, "up")
        return self

    def down(self) -> None:
        _ip("link", "del", self.client_if, check=False)
        for name in reversed(self._made):
            _ip("netns", "del", name, check=False)
        self._made.clear()


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "iproute2's ip is not installed"
    routes = _ip("route", "show", f"{SUBNET}.0/24", check=False).stdout.strip()
    if routes:
        return f"{SUBNET}.0/24 is already routed here: {routes}"
    probe = _ip("netns", "add", f"supie-probe-{os.getpid()}", check=False)
    if probe.returncode != 0:
        return f"ip netns add is not permitted here: {probe.stderr.strip()}"
    _ip("netns", "del", f"supie-probe-{os.getpid()}", check=False)
    return None


@pytest.fixture
def netns_lab(tmp_path: Path) -> Iterator[NetnsLab]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    lab = NetnsLab()
    try:
        yield lab.up()
    finally:
        lab.down()
