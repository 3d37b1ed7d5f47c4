"""One task supervisor: every background task a service or connection starts is owned here,
named, logged when it fails, and cancelled on shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from loguru import logger

__all__ = ["TaskSet"]


class TaskSet:
    """Owns tasks until they finish. A failure is logged with the task's name; a failure of a
    *critical* task (a long-lived loop the process cannot work without) calls ``on_fatal``."""

    def __init__(self, owner: str, on_fatal: Callable[[str], None] | None = None) -> None:
        self.owner = owner
        self.on_fatal = on_fatal
        self._tasks: set[asyncio.Task[Any]] = set()
        self._critical: set[asyncio.Task[Any]] = set()
        self._closing = False

    def spawn(
        self, coro: Coroutine[Any, Any, Any], name: str, *, critical: bool = False
    ) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        if critical:
            self._critical.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        critical = task in self._critical
        self._critical.discard(task)
        if task.cancelled() or (self._closing and task.exception() is None):
            return  # shutting down: a loop that returns instead of raising is fine
        exc = task.exception()
        if exc is not None:
            logger.opt(exception=exc).error("{}: task {} failed", self.owner, task.get_name())
        elif critical:
            logger.error("{}: task {} ended, it must run for good", self.owner, task.get_name())
        else:
            return
        if critical and self.on_fatal is not None:
            self.on_fatal(f"task {task.get_name()} stopped")

    def __len__(self) -> int:
        return len(self._tasks)

    async def cancel_all(self, timeout_s: float = 10.0) -> None:
        """Cancel every task and wait until all have finished, at most ``timeout_s``.

        A cancellation can be swallowed (libraries that catch ``CancelledError`` around their
        own waits; ``wait_for`` on Python 3.11): the task then runs on as if nothing happened.
        Stragglers are cancelled again every second, and after ``timeout_s`` left behind with a
        warning naming them, so that shutdown is always bounded."""
        self._closing = True
        pending = set(self._tasks)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=min(1.0, deadline - loop.time()))
            if pending and loop.time() >= deadline:
                logger.warning(
                    "{}: tasks still running after {:.0f} s of shutdown: {}",
                    self.owner,
                    timeout_s,
                    sorted(t.get_name() for t in pending),
                )
                return
