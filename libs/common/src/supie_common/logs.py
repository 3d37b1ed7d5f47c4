"""loguru, configured once at each entry point (SPEC §9).

``enqueue=True`` so a slow sink never blocks the event loop, messages cut to
``log.max_message_length`` (head + tail), no backtrace/diagnose (they leak locals, i.e. secrets),
stdlib loggers routed into loguru, optional JSON lines.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

from loguru import logger

if TYPE_CHECKING:
    from loguru import Record

    from .settings import LogSection

__all__ = ["setup_logging", "truncate_middle", "InterceptHandler", "logger"]


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
        frame, depth = logging.currentframe(), 2
        while frame is not None and frame.f_code.co_filename == logging.__file__:
            frame = frame.f_back
            depth += 1
        logger.opt(depth=depth, exception=record.exc_info).log(level, record.getMessage())


def setup_logging(settings: LogSection, service: str, *, sink: Any = None) -> None:
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
    target = sink if sink is not None else sys.stderr
    logger.add(
        target,
        level=settings.level,
        format=fmt,
        serialize=settings.json_lines,
        enqueue=True,
        backtrace=False,
        diagnose=False,
        colorize=False if sink is not None else None,
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
