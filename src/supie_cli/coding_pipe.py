"""``supie coding pipe``: stream a real command's output to a badge's coding service.

    pytest -x 2>&1 | supie coding pipe --device aa:bb:cc:dd:ee:01
    supie coding pipe --device aa:bb:cc:dd:ee:01 -- cargo test

It connects to the gateway as the badge (the firmware protocol: headers, ``hello``), enters
coding mode, sends ``coding start``, one ``log`` per output line (its level guessed from the
line), a ``step`` with the exit status at the end, then ``stop``, and prints the insights and the
summary the service sends back on stderr. The output itself passes through to stdout.

The exit status: with ``-- COMMAND`` the pipe runs the command and knows it (and exits with it).
Reading stdin it cannot see the status of the command before the ``|``: it uses a last line
``exit status N`` (``cmd; echo "exit status $?"``) when there is one, else guesses it from the
output (``fail`` when an error line was seen).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from supie_common.device_client import DeviceClient, firmware_hello

__all__ = [
    "PipeResult",
    "build_parser",
    "exit_status_of",
    "guess_level",
    "main",
    "pipe_lines",
    "run_pipe",
]

DEFAULT_URL = "ws://127.0.0.1:8004/supie/v1/"
MAX_LINE_CHARS = 4000  # the service keeps 512; the rest would only cost frame bytes
WINDOW = 64  # coding messages in flight before the pipe waits for their acks
ACK_TIMEOUT_S = 35.0  # a little over the gateway's accept timeout (it answers UNAVAILABLE)

_ERROR = re.compile(
    r"^(?:E |FAIL\b|FAILED\b|ERROR\b|error(?:\[E\d+\])?:|fatal(?: error)?:|panic:|Traceback \(|"
    r"thread '.*' panicked|npm ERR!|npm error|✕|×|✗|●|Killed$|--- FAIL|make: \*\*\*|"
    r"\[ERROR\]|FAILURE:)"
    r"|\b(?:error|fatal error)(?:\[\w+\])?: |: error TS\d+|\): error TS\d+"
    r"|^\S+?:\d+(?::\d+)?: (?:fatal )?error\b"
    r"|\b[A-Z]\w*(?:Error|Exception): "
    r"|\bOut of memory\b|\bheap out of memory\b|\bSegmentation fault\b"
    r"|\b[1-9]\d* (?:failed|errors?)\b|\btest result: FAILED\b|\.\.\. FAILED$"
)
_WARN = re.compile(
    r"^(?:warning|WARNING|Warning|WARN)\b|: warning:|\bwarning: |\d+:\d+ +warning +"
    r"|\b\w*Warning: |^\[WARN(?:ING)?\]|^\S+?:\d+:\d+: [A-Z]{1,4}\d{2,4} "
)
_ZERO = re.compile(r"\b0 (?:failed|errors?)\b")
_EXIT = re.compile(r"^(?:exit (?:status|code)|exited with(?: code| status)?) (-?\d+)\.?$", re.I)
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def guess_level(line: str) -> str:
    """``error`` | ``warn`` | ``info`` for one output line (colours ignored)."""
    text = _CONTROL.sub("", line).strip()
    if not text:
        return "info"
    if _ERROR.search(_ZERO.sub("", text)):  # "0 failed" is good news
        return "error"
    if _WARN.search(text):
        return "warn"
    return "info"


def exit_status_of(line: str) -> int | None:
    """The status in a trailing ``exit status N`` line, else None."""
    m = _EXIT.match(_CONTROL.sub("", line).strip())
    return int(m.group(1)) if m else None


@dataclass
class PipeResult:
    sent: int = 0  # log lines sent
    errors: int = 0  # lines guessed as errors
    status: str = "ok"  # the step status sent at the end
    exit_code: int | None = None
    insights: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)  # error answers from the server


class _Window:
    """At most ``size`` coding messages unanswered; every ack or error frees one slot."""

    def __init__(self, size: int, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.free = asyncio.Semaphore(size)
        self.pending = 0
        self.idle = asyncio.Event()
        self.idle.set()

    async def take(self) -> None:
        await asyncio.wait_for(self.free.acquire(), self.timeout_s)
        self.pending += 1
        self.idle.clear()

    def answered(self) -> None:
        if self.pending:
            self.pending -= 1
            self.free.release()
        if not self.pending:
            self.idle.set()

    async def drain(self) -> None:
        """Until every message sent was answered (TimeoutError past the timeout)."""
        await asyncio.wait_for(self.idle.wait(), self.timeout_s)


async def _reader(
    client: DeviceClient,
    window: _Window,
    result: PipeResult,
    show: Callable[[dict[str, Any]], None],
) -> None:
    while True:
        msg = await client.inbox.get()
        mtype = msg.get("type")
        if mtype == "coding" and msg.get("event") in ("insight", "summary") and "status" not in msg:
            result.insights.append(msg)
            show(msg)
        elif mtype == "coding" and "status" in msg:
            if msg.get("status") == "error":
                result.rejected.append(msg)
            window.answered()
        elif mtype == "error":
            result.rejected.append(msg)


async def pipe_lines(
    url: str,
    device_id: str,
    lines: AsyncIterator[str],
    *,
    step: str = "pipe",
    exit_code: Callable[[], int | None] | None = None,
    token: str | None = None,
    wait_s: float = 5.0,
    echo: Callable[[str], None] | None = None,
    show: Callable[[dict[str, Any]], None] | None = None,
    ack_timeout_s: float = ACK_TIMEOUT_S,
) -> PipeResult:
    """Send ``lines`` as the badge ``device_id``; ``exit_code()`` (called after the last line)
    gives the status of the step when known. Waits up to ``wait_s`` for the summary."""
    result = PipeResult()
    window = _Window(WINDOW, ack_timeout_s)
    client = DeviceClient(url, device_id, token=token)
    await client.connect()
    reader: asyncio.Task[None] | None = None
    try:
        await client.hello(firmware_hello())
        await client.send_json({"type": "mode", "state": "start", "mode": "coding"})
        ack = await client.expect("mode", timeout=10)
        if ack.get("status") != "ok":
            raise OSError(f"coding mode refused: {ack.get('message') or ack}")
        reader = asyncio.create_task(_reader(client, window, result, show or (lambda _m: None)))

        async def send(message: dict[str, Any]) -> None:
            await window.take()
            await client.send_json({"type": "coding", **message})

        await send({"event": "start"})
        last_status: int | None = None
        async for raw in lines:
            line = raw.rstrip("\r\n")
            if echo is not None:
                echo(line)
            # a progress bar redraws with \r: only its last state is worth a line
            line = line.rsplit("\r", 1)[-1].strip()
            if not line:
                continue
            status = exit_status_of(line)
            if status is not None:
                last_status = status
                continue
            level = guess_level(line)
            result.errors += level == "error"
            await send({"event": "log", "level": level, "text": line[:MAX_LINE_CHARS]})
            result.sent += 1
        code = exit_code() if exit_code is not None else None
        result.exit_code = code if code is not None else last_status
        if result.exit_code is not None:
            result.status = "ok" if result.exit_code == 0 else "fail"
            name = f"{step[:180]} (exit {result.exit_code})"
        else:
            result.status = "fail" if result.errors else "ok"
            name = step[:200]
        await send({"event": "step", "name": name, "status": result.status})
        await send({"event": "stop"})
        await window.drain()
        deadline = asyncio.get_running_loop().time() + wait_s
        while not any(m.get("event") == "summary" for m in result.insights):
            if asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(0.05)
    finally:
        if reader is not None:
            reader.cancel()
        await client.close()
    return result


async def _stdin_lines() -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    stream = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stream), sys.stdin)
    while True:
        raw = await stream.readline()
        if not raw:
            return
        yield raw.decode("utf-8", "replace")


class _Command:
    """A command whose stdout and stderr are read as one stream of lines."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self.proc: asyncio.subprocess.Process | None = None

    async def lines(self) -> AsyncIterator[str]:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            limit=1 << 20,
        )
        assert self.proc.stdout is not None
        while True:
            raw = await self.proc.stdout.readline()
            if not raw:
                break
            yield raw.decode("utf-8", "replace")
        await self.proc.wait()

    def exit_code(self) -> int | None:
        return self.proc.returncode if self.proc is not None else None


def _show(msg: dict[str, Any]) -> None:
    label = "summary" if msg.get("event") == "summary" else "insight"
    sender = f" from {msg['from']}" if msg.get("from") else ""
    print(f"── coding {label}{sender} (phase {msg.get('phase')}) ──", file=sys.stderr)
    for key, title in (
        ("insights", "•"),
        ("risks", "! "),
        ("actions", "→"),
        ("nextSteps", "»"),
    ):
        for item in msg.get(key) or []:
            print(f"  {title} {item}", file=sys.stderr)
    sys.stderr.flush()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="supie coding pipe",
        description="Stream a command's output to the coding service as a badge's log lines.",
    )
    parser.add_argument("--device", required=True, help="the badge (device id) to act as")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"gateway WebSocket ({DEFAULT_URL})")
    parser.add_argument("--token", default=None, help="device token, when auth is on")
    parser.add_argument("--step", default=None, help="step name (default: the command, or pipe)")
    parser.add_argument("--wait", type=float, default=5.0, help="seconds to wait for the summary")
    parser.add_argument("--quiet", action="store_true", help="do not pass the output through")
    parser.add_argument("--json", action="store_true", help="print what came back as JSON lines")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    return parser


def run_pipe(argv: Sequence[str]) -> int:
    """The command line. Exit status: the command's (command mode), else 0, or 1 when the
    gateway could not be reached or refused the messages."""
    args = build_parser().parse_args(list(argv))
    command = [a for a in args.command if a != "--"] if args.command else []
    step = args.step or (" ".join(command)[:200] if command else "pipe")
    echo = None if args.quiet else (lambda line: print(line, flush=True))
    show = (
        (lambda m: print(json.dumps(m, ensure_ascii=False), file=sys.stderr))
        if args.json
        else _show
    )

    async def go() -> int:
        runner = _Command(command) if command else None
        source = runner.lines() if runner is not None else _stdin_lines()
        try:
            result = await pipe_lines(
                args.url,
                args.device,
                source,
                step=step,
                exit_code=runner.exit_code if runner is not None else None,
                token=args.token,
                wait_s=args.wait,
                echo=echo,
                show=show,
            )
        except (OSError, TimeoutError) as exc:
            print(f"supie coding pipe: {args.url}: {exc or type(exc).__name__}", file=sys.stderr)
            return 1
        for problem in result.rejected[:3]:
            print(f"supie coding pipe: server said {json.dumps(problem)}", file=sys.stderr)
        if runner is not None and result.exit_code is not None:
            return result.exit_code
        return 1 if result.rejected and not result.insights else 0

    return asyncio.run(go())


def main(argv: Sequence[str] | None = None) -> None:
    raise SystemExit(run_pipe(sys.argv[1:] if argv is None else argv))
