"""loguru, configured once at each entry point (SPEC §9).

Sinks are queued so a slow terminal or disk never blocks the event loop. The console sink goes
through :class:`BackgroundWriter` (an in-process queue and a writer thread): loguru's own
``enqueue=True`` pickles every record into a pipe, which measured 74 µs per call and stalls of up
to 26 ms once the pipe filled behind a slow sink; the file sink keeps ``enqueue=True`` (its
rotation runs in loguru's worker). Messages are cut to ``log.max_message_length`` (head + tail);
no backtrace/diagnose (they print locals, i.e. secrets); stdlib loggers are routed into loguru;
JSON lines optional.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from loguru import logger

if TYPE_CHECKING:
    from loguru import Record

    from .settings import LogSection

__all__ = ["setup_logging", "truncate_middle", "InterceptHandler", "BackgroundWriter", "logger"]


def truncate_middle(text: str, limit: int) -> str:
    """Keep the head and tail of ``text`` so that the result has at most ``limit`` characters."""
    if len(text) <= limit:
        return text
    marker = f" …[{len(text) - limit} chars cut]… "
    keep = max(limit - len(marker), 2)
    head = keep // 2 + keep % 2
    tail = keep // 2
    return text[:head] + marker + text[len(text) - tail :]


class InterceptHandler(logging.Handler):
    """Send stdlib ``logging`` records to loguru (websockets, nats, uvicorn, faster-whisper...)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        frame: Any = logging.currentframe()
        depth = 2
        while frame is not None and frame.f_code.co_filename == logging.__file__:
            frame = frame.f_back
            depth += 1
        logger.opt(depth=depth, exception=record.exc_info).log(level, record.getMessage())


class BackgroundWriter:
    """A sink that hands lines to a daemon thread. ``enqueue=True`` alone still blocks callers
    once its pipe fills behind a slow terminal; this hand-off never blocks (it drops lines, and
    says how many, past ``max_backlog``).

    Cheap for the caller: a line is a ``deque.append`` (atomic, no lock), and the writer thread
    is woken only when it sleeps, and lets lines gather for :data:`GATHER_S` before each write.
    A ``queue.Queue`` took a lock and woke the thread for every line, which cost a busy service
    more than formatting the line (and the thread then fought the event loop for the GIL).
    """

    GATHER_S = 0.01

    def __init__(self, target: Any, max_backlog: int = 100_000) -> None:
        self.target = target
        self.max_backlog = max_backlog
        self.dropped = 0
        self._lines: deque[str] = deque()
        self._asleep = False
        self._wake = threading.Event()
        self._busy = False  # a batch taken off the deque and not written yet
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def write(self, message: str) -> None:
        if len(self._lines) >= self.max_backlog:
            self.dropped += 1
            return
        self._lines.append(message)
        if self._asleep:
            self._wake.set()

    def _run(self) -> None:
        while True:
            # Lines gather meanwhile; while they keep coming the thread stays awake and nobody
            # has to wake it (waking it per line cost more than the line).
            time.sleep(self.GATHER_S)
            if not self._lines:
                self._asleep = True
                # Checked again once ``_asleep`` is visible: a line appended before that saw
                # no sleeper and set nothing, so it must be seen here.
                if not self._lines:
                    self._wake.wait()
                self._wake.clear()
                self._asleep = False
                continue
            self._busy = True
            batch: list[str] = []
            while self._lines and len(batch) < 1000:
                batch.append(self._lines.popleft())
            if self.dropped:
                dropped, self.dropped = self.dropped, 0
                batch.insert(0, f"... {dropped} log lines dropped (log sink too slow)\n")
            try:
                self.target.write("".join(batch))
                if hasattr(self.target, "flush"):
                    self.target.flush()
            except Exception:  # noqa: S110 - a broken sink has nowhere left to report to
                pass
            finally:
                self._busy = False

    def drain(self, timeout_s: float = 5.0) -> None:
        """Wait until the backlog is written (tests, shutdown)."""
        deadline = time.monotonic() + timeout_s
        while (self._lines or self._busy) and time.monotonic() < deadline:
            time.sleep(0.01)


def setup_logging(settings: LogSection, service: str, *, sink: Any = None) -> BackgroundWriter:
    """Configure loguru for one process. Call once, from the entry point only."""
    limit = settings.max_message_length

    def patch(record: Record) -> None:
        record["message"] = truncate_middle(record["message"], limit)
        record["extra"].setdefault("service", service)

    logger.remove()
    logger.configure(patcher=patch)
    fmt = (
        "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
        "<cyan>{extra[service]}</cyan> {message}"
    )
    target = BackgroundWriter(sink if sink is not None else sys.stderr)
    logger.add(
        target.write,
        level=settings.level,
        format=fmt,
        serialize=settings.json_lines,
        enqueue=False,  # queued by BackgroundWriter instead, see the module docstring
        backtrace=False,
        diagnose=False,
        colorize=False,
    )
    if settings.file:
        logger.add(
            settings.file,
            level=settings.level,
            format=fmt,
            serialize=settings.json_lines,
            enqueue=True,
            backtrace=False,
            diagnose=False,
            rotation="10 MB",
            retention="30 days",
        )
    logging.basicConfig(handlers=[InterceptHandler()], level=logging.INFO, force=True)
    for noisy in ("websockets.server", "websockets.client", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return target
