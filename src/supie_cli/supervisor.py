"""Supervised child processes for ``supie up``: each is restarted with backoff when it dies, dies
with ``supie up`` however that ends (``PR_SET_PDEATHSIG``), says when it is ready by its own
means (a readiness line from *its* output, or a listening socket owned by *its* pid, never an
answer that another stack could give), and is reported, with the reason, when it crash-loops."""

from __future__ import annotations

import asyncio
import collections
import re
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil
from supie_common.embedded import die_with_parent
from supie_common.logs import BackgroundWriter

__all__ = ["Console", "ExitHistory", "error_summary", "Child", "ServiceChild", "ServerChild"]

_LOG_LEVEL = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} (?P<level>[A-Z]+)\b")
_QUIET_LEVELS = {"TRACE", "DEBUG", "INFO", "SUCCESS"}
_SUMMARY_MAX = 500


class Console:
    """``supie up``'s own output: children's lines prefixed with their name, its own with
    ``[up]``; handed to a writer thread so a slow terminal never stalls supervision."""

    def __init__(self, target: object) -> None:
        self._writer = BackgroundWriter(target)

    def line(self, prefix: str, text: str) -> None:
        self._writer.write(f"[{prefix}] {text.rstrip()}\n")

    def say(self, text: str) -> None:
        self.line("up", text)

    def raw(self, text: str) -> None:
        self._writer.write(text.rstrip("\n") + "\n")

    def drain(self) -> None:
        self._writer.drain()


def error_summary(lines: Sequence[str]) -> str:
    """Why a process died, from the last lines it printed: its final line when that is not an
    ordinary log line (a ``SystemExit`` message, a traceback's last line), else its last
    ERROR/CRITICAL log line, else its last line."""
    kept = [line.strip() for line in lines if line.strip()]
    if not kept:
        return "it printed nothing"
    last = kept[-1]
    match = _LOG_LEVEL.match(last)
    if match is None or match["level"] not in _QUIET_LEVELS:
        return last[:_SUMMARY_MAX]
    for line in reversed(kept):
        found = _LOG_LEVEL.match(line)
        if found is not None and found["level"] in ("ERROR", "CRITICAL"):
            return line[:_SUMMARY_MAX]
    return last[:_SUMMARY_MAX]


class ExitHistory:
    """Exit times of one child: ``threshold`` exits within ``window_s`` is a crash loop."""

    def __init__(self, threshold: int = 3, window_s: float = 60.0) -> None:
        self.threshold = threshold
        self.window_s = window_s
        self._exits: collections.deque[float] = collections.deque(maxlen=threshold)

    def record(self, at: float) -> None:
        self._exits.append(at)

    def looping(self) -> bool:
        return (
            len(self._exits) == self.threshold and self._exits[-1] - self._exits[0] <= self.window_s
        )

    def span_s(self) -> float:
        return self._exits[-1] - self._exits[0] if self._exits else 0.0

    def clear(self) -> None:
        self._exits.clear()


class Child:
    """One supervised process. Subclasses say how its output is kept and when it is ready."""

    #: A run this long counts as healthy: the backoff and the crash-loop history start over.
    stable_after_s = 30.0
    first_backoff_s = 0.5
    max_backoff_s = 10.0

    def __init__(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], console: Console
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.console = console
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.ready = asyncio.Event()  # the current run is ready
        self.ever_ready = asyncio.Event()
        self.history = ExitHistory()
        self._loop_reported = False
        self._stopping = asyncio.Event()
        self._tail: collections.deque[str] = collections.deque(maxlen=40)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    # -- what subclasses decide ----------------------------------------------------------------
    async def _spawn(self) -> asyncio.subprocess.Process:
        raise NotImplementedError

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        """Until the process ends: keep its output and set :attr:`ready` when it is."""
        raise NotImplementedError

    async def _last_lines(self) -> list[str]:
        return list(self._tail)

    # -- supervision ---------------------------------------------------------------------------
    async def run(self) -> None:
        backoff = self.first_backoff_s
        while not self._stopping.is_set():
            started = time.monotonic()
            self._tail.clear()
            self.ready.clear()
            try:
                self.proc = proc = await self._spawn()
            except OSError as exc:
                self.console.say(f"{self.name} cannot start: {exc}")
                code: int | None = None
            else:
                await self._watch(proc)
                code = await proc.wait()
            self.ready.clear()
            if self._stopping.is_set():
                return
            now = time.monotonic()
            if now - started > self.stable_after_s:
                backoff = self.first_backoff_s
                self.history.clear()
                self._loop_reported = False
            self.history.record(now)
            self.restarts += 1
            self.console.say(f"{self.name} exited with {code}; restarting in {backoff:.1f}s")
            if self.history.looping() and not self._loop_reported:
                self._loop_reported = True
                why = error_summary(await self._last_lines())
                self.console.say(
                    f"{self.name} is crash-looping ({self.history.threshold} exits in "
                    f"{self.history.span_s():.0f} s): {why}"
                )
            try:
                await asyncio.wait_for(self._stopping.wait(), backoff)
            except TimeoutError:
                pass
            backoff = min(backoff * 2, self.max_backoff_s)

    def _became_ready(self) -> None:
        if self.ready.is_set():
            return
        self.ready.set()
        if self.ever_ready.is_set():
            self.console.say(f"{self.name} is back (pid {self.pid})")
        self.ever_ready.set()

    async def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (so it drains), SIGKILL after ``timeout_s``; no restart after this."""
        self._stopping.set()
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        try:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), timeout_s)
        except ProcessLookupError:
            return
        except TimeoutError:
            self.console.say(f"{self.name} did not stop in {timeout_s:.0f}s; killing it")
            proc.kill()
            await proc.wait()


class ServiceChild(Child):
    """``python -m supie_<name>``: its output is echoed with a ``[name]`` prefix; it is ready
    when it logs ``<name> started as <name>-...`` (after it subscribed its health endpoint)."""

    def __init__(self, name: str, python: str, env: Mapping[str, str], console: Console) -> None:
        super().__init__(name, [python, "-m", f"supie_{name}"], env, console)
        self._ready_mark = f"{name} started as {name}-"

    async def _spawn(self) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # a terminal's ^C reaches supie up only; it stops us in order
            preexec_fn=die_with_parent(),
            limit=1 << 20,
        )

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            try:
                raw = await proc.stdout.readline()
            except ValueError:  # a line past the limit: take what is there
                raw = await proc.stdout.read(1 << 20)
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip()
            self._tail.append(line)
            self.console.line(self.name, line)
            if self._ready_mark in line:
                self._became_ready()


class ServerChild(Child):
    """An embedded server (nats-server, valkey-server): output to its log file in its data dir;
    ready when a socket listening on its port belongs to its pid."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        port: int,
        log_path: Path,
        console: Console,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(name, argv, env or {}, console)
        self.port = port
        self.log_path = log_path

    async def _spawn(self) -> asyncio.subprocess.Process:
        await asyncio.to_thread(self.log_path.parent.mkdir, parents=True, exist_ok=True)
        log = await asyncio.to_thread(open, self.log_path, "ab")
        try:
            return await asyncio.create_subprocess_exec(
                *self.argv,
                env=self.env or None,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        finally:
            log.close()

    def _listening(self, pid: int) -> bool:
        try:
            conns = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.Error:
            return False
        return any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.port for c in conns)

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        while proc.returncode is None:
            if not self.ready.is_set() and await asyncio.to_thread(self._listening, proc.pid):
                self._became_ready()
            try:
                await asyncio.wait_for(proc.wait(), 0.05 if not self.ready.is_set() else 5.0)
            except TimeoutError:
                pass

    async def _last_lines(self) -> list[str]:
        def tail() -> list[str]:
            try:
                with self.log_path.open("rb") as f:
                    f.seek(0, 2)
                    f.seek(max(0, f.tell() - 8192))
                    return f.read().decode(errors="replace").splitlines()[-20:]
            except OSError:
                return []

        return await asyncio.to_thread(tail)
