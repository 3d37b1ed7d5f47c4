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
import queue
import sys
import threading
import time
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
    says how many, past ``max_backlog``)."""

    def __init__(self, target: Any, max_backlog: int = 100_000) -> None:
        self.target = target
        self.max_backlog = max_backlog
        self.dropped = 0
        self._queue: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def write(self, message: str) -> None:
        if self._queue.qsize() >= self.max_backlog:
            self.dropped += 1
            return
        self._queue.put(message)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            # Write what has piled up in one call: fewer syscalls and GIL hand-offs.
            while len(batch) < 1000:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            taken = len(batch)
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
                for _ in range(taken):
                    self._queue.task_done()

    def drain(self, timeout_s: float = 5.0) -> None:
        """Wait until the backlog is written (tests, shutdown)."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
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
