"""Redis commands from concurrent handlers, sent together: one pipeline per round trip.

Under load a replica handles hundreds of messages at once, each needing one script call. Sent one
by one, the client library's per-command cost and a round trip each bound the rate; queued and
flushed as one non-transactional pipeline they share both. Each command stays atomic on its own
(a Lua call is), and a handler awaits its own result only, so nothing about ordering changes for
a device: the gateway hands a device's messages over one at a time.

A few flushers run at once, so a slow round trip does not hold up the queue behind it.

Callers either await a reply (:meth:`Batcher.call`) or hand over a continuation that the flusher
runs with it (:meth:`Batcher.submit`): the hot path (a log line) then needs no task of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from loguru import logger
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

__all__ = ["Batcher", "BatcherStopped", "Then"]

# A continuation: (reply, error) -> None, or an awaitable the flusher awaits (e.g. a publish).
Then = Callable[[Any, BaseException | None], Awaitable[None] | None]

MAX_BATCH = 256
FLUSHERS = 4


class BatcherStopped(RedisError):
    """A call after the batcher stopped (the service is shutting down)."""


class Batcher:
    """``await batcher.call(lambda pipe: pipe.evalsha(...))`` -> that command's reply."""

    def __init__(self, redis: Redis, *, max_batch: int = MAX_BATCH) -> None:
        self.redis = redis
        self.max_batch = max_batch
        self._queue: list[tuple[Callable[[Pipeline], Any], Then]] = []
        self._ready = asyncio.Event()
        self._running = False

    def submit(self, add: Callable[[Pipeline], Any], then: Then) -> None:
        """Queue one command (``add`` puts exactly one on the pipeline); ``then(reply, error)``
        runs in the flusher once it is answered (keep it short: it delays the batch's others)."""
        if not self._running:
            raise BatcherStopped("the Redis batcher is not running")
        self._queue.append((add, then))
        self._ready.set()

    async def call(self, add: Callable[[Pipeline], Any]) -> Any:
        """Queue one command and wait for its reply; a Redis error for it is raised here."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def then(reply: Any, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(reply)

        self.submit(add, then)
        return await future

    async def run(self) -> None:
        """The flushers; run as one owned task for as long as the service runs."""
        workers = [asyncio.create_task(self._flusher()) for _ in range(FLUSHERS)]
        self._running = True
        try:
            await asyncio.gather(*workers)
        finally:
            self._running = False
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            queued, self._queue = self._queue, []
            for _, then in queued:
                _abandon(_run_then(then, None, BatcherStopped("the Redis batcher stopped")))

    async def _flusher(self) -> None:
        while True:
            while not self._queue:
                self._ready.clear()
                await self._ready.wait()
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            pipe = self.redis.pipeline(transaction=False)
            for add, _ in batch:
                add(pipe)
            try:
                results = await pipe.execute(raise_on_error=False)
            except asyncio.CancelledError:
                for _, then in batch:
                    _abandon(_run_then(then, None, BatcherStopped("the Redis batcher stopped")))
                raise
            except Exception as exc:  # the connection failed: every caller learns it
                results = [exc] * len(batch)
            finally:
                await pipe.reset()
            for (_, then), result in zip(batch, results, strict=True):
                error = result if isinstance(result, Exception) else None
                pending = _run_then(then, None if error else result, error)
                if pending is not None:
                    try:
                        await pending
                    except Exception:
                        logger.exception("coding: a Redis reply's continuation failed")


def _abandon(pending: Awaitable[None] | None) -> None:
    """Stopping: a continuation's follow-up (a reply) is not awaited any more."""
    if pending is not None and hasattr(pending, "close"):
        pending.close()


def _run_then(then: Then, reply: Any, error: BaseException | None) -> Awaitable[None] | None:
    try:
        return then(reply, error)
    except Exception:
        logger.exception("coding: a Redis reply's continuation failed")
        return None
