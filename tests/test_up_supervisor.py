"""``supie up`` as a supervisor, run as a real subprocess on free ports with a tmp data dir:
refusals before start (busy port, held data dir, invalid config), children that die with it
(SIGKILL, SIGHUP), crash-loop reports with the reason, and the embedded nats-server and
valkey-server restarted on the same port and data when they are killed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import redis as redis_sync
from supie_common.embedded import free_port

from supie_cli.config_check import check_by_subprocess, check_configs, check_in_process
from supie_cli.preflight import DataDirBusy, DataDirLock, PortClaim, busy_ports
from supie_cli.supervisor import ExitHistory, error_summary

SUPIE = [sys.executable, "-m", "supie_cli"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPIE_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Up:
    """A running ``supie up``; its merged output is collected by a reader thread."""

    def __init__(self, tmp: Path, *extra: str, services: str = "gateway", **ports: int) -> None:
        self.data_dir = tmp / "data"
        self.ws_port = ports.get("ws_port") or free_port()
        self.http_port = ports.get("http_port") or free_port()
        self.nats_port = ports.get("nats_port") or free_port()
        self.valkey_port = ports.get("valkey_port") or free_port()
        config = tmp / "config.yaml"
        self.proc = subprocess.Popen(
            [
                *SUPIE,
                "up",
                "--services",
                services,
                "--ws-port",
                str(self.ws_port),
                "--http-port",
                str(self.http_port),
                "--nats-port",
                str(self.nats_port),
                "--valkey-port",
                str(self.valkey_port),
                "--data-dir",
                str(self.data_dir),
                "--config",
                str(config),
                *extra,
            ],  # fmt: skip
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if predicate(line):
                    return line
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.1)
        raise AssertionError(f"not seen within {timeout}s; output:\n{self.output[-6000:]}")

    def wait_ready(self, timeout: float = 90) -> str:
        return self.wait_for(lambda line: line.startswith("Supie is ready"), timeout)

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def child(self, needle: str) -> psutil.Process:
        for p in self.children():
            try:
                if needle in " ".join(p.cmdline()):
                    return p
            except psutil.Error:
                continue
        raise AssertionError(f"no child matching {needle!r}")

    def healthz_ok(self) -> bool:
        try:
            resp = httpx.get(f"http://127.0.0.1:{self.http_port}/healthz", timeout=3)
        except httpx.HTTPError:
            return False
        return resp.status_code == 200 and resp.json().get("ok") is True

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Callable[..., Up]]:
    started: list[Up] = []

    def start(*extra: str, **kw: object) -> Up:
        stack = Up(tmp_path, *extra, **kw)  # type: ignore[arg-type]
        started.append(stack)
        return stack

    yield start
    for stack in started:
        stack.stop()


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    alive = procs
    while time.monotonic() < deadline:
        alive = [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return []
        time.sleep(0.1)
    return alive


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.3)
    return False


# -- pieces, in process --------------------------------------------------------------------------
def test_busy_port_names_the_port_its_use_and_the_holder() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        problems = busy_ports([PortClaim("ws", "0.0.0.0", port), PortClaim("http", "0.0.0.0", 0)])
    assert len(problems) == 1
    assert f"port {port} (ws) is already in use by pid {os.getpid()}" in problems[0]
    assert busy_ports([PortClaim("ws", "0.0.0.0", port)]) == []  # released: free again


def test_a_data_dir_lock_is_exclusive_and_names_its_holder(tmp_path: Path) -> None:
    first = DataDirLock(tmp_path)
    first.acquire()
    try:
        with pytest.raises(DataDirBusy) as err:
            DataDirLock(tmp_path).acquire()
        assert f"pid {os.getpid()}" in str(err.value) and str(tmp_path) in str(err.value)
    finally:
        first.release()
    with DataDirLock(tmp_path):  # released: the next stack gets it
        pass


def test_error_summary_picks_the_fatal_line() -> None:
    log = [
        "10:00:00.000 INFO    asr loading model",
        "10:00:00.100 ERROR   asr model load failed: no such file",
        "10:00:00.200 INFO    asr stopped",
    ]
    assert error_summary(log) == "10:00:00.100 ERROR   asr model load failed: no such file"
    assert error_summary([*log, "asr: invalid configuration: asr.beam_size: bad"]) == (
        "asr: invalid configuration: asr.beam_size: bad"
    )
    assert error_summary(["Traceback (most recent call last):", "OSError: boom"]) == "OSError: boom"
    assert error_summary([]) == "it printed nothing"


def test_exit_history_flags_three_exits_within_the_window() -> None:
    h = ExitHistory(threshold=3, window_s=60)
    for at in (0.0, 10.0):
        h.record(at)
        assert not h.looping()
    h.record(20.0)
    assert h.looping() and h.span_s() == 20.0
    h.record(200.0)  # the oldest two in the window are 10 and 20: 190 s apart
    assert not h.looping()


@pytest.mark.parametrize("checker", [check_in_process, check_by_subprocess])
async def test_both_config_checks_name_the_service_and_the_key(tmp_path: Path, checker) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "config.yaml"
    cfg.write_text("asr:\n  beam_size: wide\n")
    env = _env()
    problems = await check_configs(["gateway", "asr"], cfg, env, checker)
    assert len(problems) == 1 and problems[0].startswith(
        "asr: invalid configuration: asr.beam_size"
    )
    cfg.write_text("asr:\n  beam_size: 2\n")
    assert await check_configs(["gateway", "asr"], cfg, env, checker) == []


# -- refusals before anything starts ---------------------------------------------------------
def test_up_refuses_a_busy_port_naming_it_and_its_holder(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        for flag, label in (("--http-port", "http"), ("--nats-port", "embedded nats-server")):
            out = subprocess.run(
                [*SUPIE, "up", "--services", "gateway", flag, str(port),
                 "--data-dir", str(tmp_path / "data"), "--config", str(tmp_path / "c.yaml")],
                env=_env(), capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert out.returncode == 1, out
            assert f"port {port} ({label}) is already in use by pid {os.getpid()}" in out.stderr
            assert "Supie is ready" not in out.stdout


def test_up_validates_every_service_config_before_starting_anything(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("asr:\n  beam_size: wide\n")
    out = subprocess.run(
        [*SUPIE, "up", "--config", str(cfg), "--data-dir", str(tmp_path / "data"),
         "--ws-port", str(free_port()), "--http-port", str(free_port())],
        env=_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2, out
    assert "asr: invalid configuration: asr.beam_size" in out.stderr
    assert not (tmp_path / "data" / "nats").exists()  # nothing was started


# -- a running stack ---------------------------------------------------------------------------
@pytest.mark.slow  # kills and waits: `make test-slow`
@pytest.mark.timeout(150)
def test_a_second_stack_is_refused_and_sigkill_of_up_takes_every_child_down(
    up: Callable[..., Up], tmp_path: Path
) -> None:
    stack = up()
    ready = stack.wait_ready()
    assert f"ws://127.0.0.1:{stack.ws_port}/supie/v1/" in ready
    assert stack.output.count("Supie is ready") == 1

    # Same data dir on other ports: refused, naming the dir and the holder.
    other = subprocess.run(
        [*SUPIE, "up", "--services", "gateway", "--data-dir", str(stack.data_dir),
         "--ws-port", str(free_port()), "--http-port", str(free_port()),
         "--config", str(tmp_path / "c.yaml")],
        env=_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert other.returncode == 1
    assert f"data dir {stack.data_dir} is in use by another supie up (pid {stack.proc.pid})" in (
        other.stderr
    )
    # Its own ws port from another data dir: refused, naming our gateway as the holder.
    gateway = stack.child("supie_gateway")
    other = subprocess.run(
        [*SUPIE, "up", "--services", "gateway", "--data-dir", str(tmp_path / "other"),
         "--ws-port", str(stack.ws_port), "--http-port", str(free_port()),
         "--config", str(tmp_path / "c.yaml")],
        env=_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert other.returncode == 1
    assert f"port {stack.ws_port} (ws) is already in use by pid {gateway.pid}" in other.stderr
    assert stack.healthz_ok()  # the refused one disturbed nothing

    children = stack.children()
    names = " ".join(" ".join(p.cmdline()) for p in children)
    assert "nats-server" in names and "valkey-server" in names and "supie_gateway" in names
    stack.proc.kill()
    stack.proc.wait()
    left = _wait_gone(children, 20)
    assert left == [], f"orphans after SIGKILL of supie up: {left}"


@pytest.mark.timeout(150)
def test_sighup_stops_every_child(up: Callable[..., Up]) -> None:
    stack = up()
    stack.wait_ready()
    children = stack.children()
    assert len(children) == 3
    stack.proc.send_signal(signal.SIGHUP)
    assert stack.proc.wait(40) == 0
    assert _wait_gone(children, 10) == []
    stack.stop()
    assert "[up] stopped" in stack.output


@pytest.mark.slow  # kills and waits: `make test-slow`
@pytest.mark.timeout(150)
def test_a_crash_looping_service_is_named_with_its_error_within_30_s(
    up: Callable[..., Up], tmp_path: Path
) -> None:
    # A value every settings class accepts, but the service cannot start with.
    (tmp_path / "not-a-dir").write_text("")
    (tmp_path / "config.yaml").write_text(f"log:\n  file: {tmp_path / 'not-a-dir' / 'g.log'}\n")
    stack = up()
    started = time.monotonic()
    line = stack.wait_for(lambda line: "crash-looping" in line, 45)
    assert time.monotonic() - started < 40  # 30 s from the first start, with slack for imports
    assert line.startswith("[up] gateway is crash-looping (3 exits in ")
    assert "FileExistsError" in line and "not-a-dir" in line, line
    assert "Supie is ready" not in stack.output


@pytest.mark.timeout(180)
def test_killed_nats_and_valkey_come_back_on_the_same_port_with_their_data(
    up: Callable[..., Up],
) -> None:
    stack = up()
    stack.wait_ready()
    r = redis_sync.Redis(port=stack.valkey_port, decode_responses=True)
    assert r.config_get("appendonly") == {"appendonly": "yes"}
    assert r.config_get("appendfsync") == {"appendfsync": "everysec"}
    r.set("supie:test:survives", "yes")
    time.sleep(1.5)  # appendfsync everysec: on disk within a second

    for needle, name in (("valkey-server", "valkey-server"), ("nats-server", "nats-server")):
        before = stack.child(needle)
        before.kill()
        stack.wait_for(lambda line, n=name: line.startswith(f"[up] {n} exited with -9"), 20)
        stack.wait_for(lambda line, n=name: line.startswith(f"[up] {n} is back"), 30)
        after = stack.child(needle)
        assert after.pid != before.pid
        assert _wait(stack.healthz_ok, 60), f"/healthz not ok after {name} restart"

    r = redis_sync.Redis(port=stack.valkey_port, decode_responses=True)
    assert r.get("supie:test:survives") == "yes"
    assert (stack.data_dir / "nats" / "jetstream").exists()
    assert stack.output.count("Supie is ready") == 1
