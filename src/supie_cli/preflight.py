"""What ``supie up`` checks before it starts anything: every port it would listen on is free, and
no other stack holds its data folder. Each refusal names the port or folder and the holder's pid,
so the operator knows what to stop."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import psutil

__all__ = ["PortClaim", "busy_ports", "listener_pid", "DataDirLock", "DataDirBusy", "LOCK_NAME"]

LOCK_NAME = ".supie-up.lock"


@dataclass(frozen=True)
class PortClaim:
    """A port ``supie up`` is about to listen on, and what for (``ws``, ``http``, ``nats``...)."""

    label: str
    host: str
    port: int


def listener_pid(port: int) -> int | None:
    """The pid of the process listening on TCP ``port`` (any address), if this user may see it."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return None
    for conn in conns:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            return conn.pid
    return None


def _describe(pid: int | None) -> str:
    if pid is None:
        return "another process"
    try:
        cmd = " ".join(psutil.Process(pid).cmdline())[:120]
    except (psutil.Error, OSError):
        cmd = ""
    return f"pid {pid} ({cmd})" if cmd else f"pid {pid}"


def _bind_error(claim: PortClaim) -> OSError | None:
    family = socket.AF_INET6 if ":" in claim.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # Servers bind with SO_REUSEADDR too, so a port only in TIME_WAIT counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((claim.host, claim.port))
        except OSError as exc:
            return exc
    return None


def busy_ports(claims: list[PortClaim]) -> list[str]:
    """One sentence per claimed port that cannot be listened on, naming who holds it (empty:
    all free)."""
    problems = []
    for claim in claims:
        if not claim.port:
            continue
        exc = _bind_error(claim)
        if exc is None:
            continue
        if exc.errno == errno.EADDRINUSE:
            holder = _describe(listener_pid(claim.port))
            problems.append(f"port {claim.port} ({claim.label}) is already in use by {holder}")
        else:
            problems.append(
                f"cannot listen on {claim.host}:{claim.port} ({claim.label}): {exc.strerror}"
            )
    return problems


class DataDirBusy(RuntimeError):
    """Another ``supie up`` holds the data folder."""


class DataDirLock:
    """An exclusive ``flock`` on ``<data_dir>/.supie-up.lock`` holding the owner's pid, kept for
    the life of the stack. The kernel drops it when the holder dies, however it dies, so a stale
    file never blocks the next start."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            who = f"pid {holder}" if holder.isdigit() else "another process"
            raise DataDirBusy(
                f"data dir {self.path.parent} is in use by another supie up ({who}); stop it or "
                "pass another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
