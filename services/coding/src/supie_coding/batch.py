"""Redis commands from concurrent handlers, sent together: one pipeline per round trip.

Under load a replica handles hundreds of messages at once, each needing one script call. Sent one
by one, the client library's per-command cost and a round trip each bound the rate; queued and
flushed as one non-transactional pipeline they share both. Each command stays atomic on its own
(a Lua call is), and a handler awaits its own result only, so nothing about ordering changes for
a device: the gateway hands a device's messages over one at a time.

A few flushers run at once, so a slow round trip does not hold up the queue behind it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

__all__ = ["Batcher", "BatcherStopped"]

MAX_BATCH = 256
FLUSHERS = 4


class BatcherStopped(RedisError):
    """A call after the batcher stopped (the service is shutting down)."""


class Batcher:
    """``await batcher.call(lambda pipe: pipe.evalsha(...))`` -> that command's reply."""

    def __init__(self, redis: Redis, *, max_batch: int = MAX_BATCH) -> None:
        self.redis = redis
        self.max_batch = max_batch
        self._queue: list[tuple[Callable[[Pipeline], Any], asyncio.Future[Any]]] = []
        self._ready = asyncio.Event()
        self._running = False

    async def call(self, add: Callable[[Pipeline], Any]) -> Any:
        """Queue one command (``add`` puts exactly one on the pipeline) and wait for its reply;
        a Redis error for this command is raised here."""
        if not self._running:
            raise BatcherStopped("the Redis batcher is not running")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((add, future))
        self._ready.set()
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
            for _, future in self._queue:
                if not future.done():
                    future.cancel()

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
                for _, future in batch:
                    future.cancel()
                raise
            except Exception as exc:  # the connection failed: every caller learns it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            finally:
                await pipe.reset()
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
