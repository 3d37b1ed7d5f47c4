"""Redis commands from concurrent handlers, sent together: one pipeline per round trip (group
commit). Used by the coding service (every log line) and the meeting service (every state
change: a burst of finalizes shares its round trips).

Under load a replica handles hundreds of messages at once, each needing one script call. Sent one
by one, the client library's per-command cost and a round trip each bound the rate; queued and
flushed as one non-transactional pipeline they share both. Each command stays atomic on its own
(a Lua call is), and a handler awaits its own result only, so nothing about ordering changes for
a device: the gateway hands a device's messages over one at a time.

Two flushers run at once, so a slow round trip does not hold up the queue behind it. More only
make the batches smaller: a batch costs a write, a read and its bookkeeping whatever its size, so
under load fewer, larger batches are cheaper per command.

Callers either await a reply (:meth:`Batcher.call`) or hand over a continuation that the flusher
runs with it (:meth:`Batcher.submit`): the hot path (a log line) then needs no task of its own.

On a single server a batch is packed by :mod:`supie_common.resp` and written on the flusher's
connection, and the replies are read back raw: redis-py's ``Pipeline`` (a command object per
call, generic argument encoding, reply callbacks) cost more CPU per log line than everything
else the service does. The replies are what Redis sends (``SET NX`` answers ``"OK"`` or
``None``), which is all the callers use. A cluster client routes each command by its keys, so
there a batch stays a redis-py pipeline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from loguru import logger
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

from .resp import Arg, execute

__all__ = ["Batcher", "BatcherStopped", "Then"]

# A continuation: (reply, error) -> None, or an awaitable the flusher awaits (e.g. a publish).
Then = Callable[[Any, BaseException | None], Awaitable[None] | None]
Command = Sequence[Arg]

MAX_BATCH = 256
FLUSHERS = 2


class BatcherStopped(RedisError):
    """A call after the batcher stopped (the service is shutting down)."""


class Batcher:
    """``await batcher.call("EVALSHA", sha, 1, key, arg)`` -> that command's reply."""

    def __init__(self, redis: Redis, *, max_batch: int = MAX_BATCH) -> None:
        self.redis = redis
        self.max_batch = max_batch
        self._queue: list[tuple[Command, Then]] = []
        self._direct = not isinstance(redis, RedisCluster)
        self._ready = asyncio.Event()
        self._running = False

    def submit(self, command: Command, then: Then) -> None:
        """Queue one command (its arguments, name first); ``then(reply, error)`` runs in the
        flusher once it is answered (keep it short: it delays the batch's others)."""
        if not self._running:
            raise BatcherStopped("the Redis batcher is not running")
        self._queue.append((command, then))
        self._ready.set()

    async def call(self, *command: Arg) -> Any:
        """Queue one command and wait for its reply; a Redis error for it is raised here."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def then(reply: Any, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(reply)

        self.submit(command, then)
        return await future

    async def script(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """``EVALSHA`` of a registered script; a Redis that does not know it (restarted, or
        flushed) is given it, then asked once more."""
        try:
            return await self.call("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.redis.script_load(script.script)
            return await self.call("EVALSHA", script.sha, len(keys), *keys, *args)

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
        # On one server each flusher keeps a connection of the pool for as long as it runs (a
        # checkout per batch cost as much as reading the batch's replies); a dropped connection
        # reconnects on the next write. Taken at the first batch: Redis may be down at start.
        held: list[Connection] = []
        try:
            while True:
                await self._flush(held)
        finally:
            for conn in held:
                await self.redis.connection_pool.release(conn)

    async def _flush(self, held: list[Connection]) -> None:
        """Send one batch and run its continuations."""
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
        commands = [command for command, _ in batch]
        try:
            if self._direct:
                if not held:
                    held.append(await self.redis.connection_pool.get_connection())
                results = await execute(held[0], commands)
            else:
                results = await self._execute_pipeline(commands)
        except asyncio.CancelledError:
            for _, then in batch:
                _abandon(_run_then(then, None, BatcherStopped("the Redis batcher stopped")))
            raise
        except Exception as exc:  # the connection failed: every caller learns it
            results = [exc] * len(batch)
        for (_, then), result in zip(batch, results, strict=True):
            error = result if isinstance(result, Exception) else None
            pending = _run_then(then, None if error else result, error)
            if pending is not None:
                try:
                    await pending
                except Exception:
                    logger.exception("a Redis reply's continuation failed")

    async def _execute_pipeline(self, commands: list[Command]) -> list[Any]:
        pipe = self.redis.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        try:
            return list(await pipe.execute(raise_on_error=False))
        finally:
            await pipe.reset()


def _abandon(pending: Awaitable[None] | None) -> None:
    """Stopping: a continuation's follow-up (a reply) is not awaited any more."""
    if pending is not None and hasattr(pending, "close"):
        pending.close()


def _run_then(then: Then, reply: Any, error: BaseException | None) -> Awaitable[None] | None:
    try:
        return then(reply, error)
    except Exception:
        logger.exception("a Redis reply's continuation failed")
        return None
