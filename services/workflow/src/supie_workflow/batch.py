"""Group commit for the task scripts: the changes requested while a round trip to Redis is under
way go together in the next one (pipelined, packed by :mod:`supie_common.resp`: each change
still its own atomic script, run in the order asked). A round trip costs far more CPU than a
command, so a busy replica pays that cost once per batch instead of once per change; an idle one
sends each change at once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError
from supie_common.resp import Arg, execute_pooled

__all__ = ["ChangeBatcher", "MAX_BATCH", "MAX_ROUND_TRIPS"]

MAX_BATCH = 64  # changes per round trip
MAX_ROUND_TRIPS = 4  # round trips under way at once


@dataclass
class _Change:
    keys: list[str]
    argv: list[str]
    presence_key: str
    online_since_ms: int
    done: asyncio.Future[tuple[Any, Any]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class ChangeBatcher:
    def __init__(self, redis: Redis | RedisCluster, script: str, sha: str) -> None:
        self.redis = redis
        # redis-py refuses EVALSHA in a cluster pipeline: there, one change per round trip.
        self.pipelined = not isinstance(redis, RedisCluster)
        self.script = script
        self.sha = sha
        self._queue: list[_Change] = []
        self._runners: set[asyncio.Task[None]] = set()
        self.round_trips = 0

    async def run(
        self, keys: list[str], argv: list[str], presence_key: str, online_since_ms: int
    ) -> tuple[Any, Any]:
        """The script's reply for one change, and the group's online members read right after
        it on the server."""
        if not self.pipelined:
            return await self._one(keys, argv, presence_key, online_since_ms)
        change = _Change(keys, argv, presence_key, online_since_ms)
        self._queue.append(change)
        if len(self._runners) < MAX_ROUND_TRIPS:
            task = asyncio.create_task(self._drain(), name="workflow-changes")
            self._runners.add(task)
            task.add_done_callback(self._runners.discard)
        return await asyncio.shield(change.done)

    async def _one(
        self, keys: list[str], argv: list[str], presence_key: str, online_since_ms: int
    ) -> tuple[Any, Any]:
        try:
            changed = await self.redis.evalsha(self.sha, len(keys), *keys, *argv)
        except NoScriptError:
            await self.redis.script_load(self.script)
            changed = await self.redis.evalsha(self.sha, len(keys), *keys, *argv)
        online = await self.redis.zrangebyscore(presence_key, online_since_ms, "+inf")
        self.round_trips += 2
        return changed, online

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            try:
                await self._send(batch)
            except BaseException as exc:
                for change in batch:
                    if not change.done.done():
                        change.done.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise

    async def _send(self, batch: list[_Change]) -> None:
        for _ in range(2):
            # EVALSHA by hand: a Script object in a pipeline asks SCRIPT EXISTS every time.
            commands: list[list[Arg]] = [
                ["EVALSHA", self.sha, len(c.keys), *c.keys, *c.argv] for c in batch
            ]
            # One presence read per group, after all of the batch's scripts: the changes of a
            # busy group share it (it is at least as fresh as a read right after each one).
            cutoffs: dict[str, int] = {}
            for c in batch:
                cutoffs[c.presence_key] = max(c.online_since_ms, cutoffs.get(c.presence_key, 0))
            for key, since in cutoffs.items():
                commands.append(["ZRANGEBYSCORE", key, since, "+inf"])
            replies = await execute_pooled(cast(Redis, self.redis), commands)
            self.round_trips += 1
            online = dict(zip(cutoffs, replies[len(batch) :], strict=True))
            missing: list[_Change] = []
            for c, changed in zip(batch, replies, strict=False):
                members = online[c.presence_key]
                if isinstance(changed, NoScriptError):
                    missing.append(c)  # not run at all (a restarted Redis): run it again
                elif isinstance(changed, Exception):
                    c.done.set_exception(changed)
                elif isinstance(members, Exception):
                    c.done.set_exception(members)
                else:
                    c.done.set_result((changed, members))
            if not missing:
                return
            await self.redis.script_load(self.script)
            batch = missing
        for c in batch:
            c.done.set_exception(NoScriptError("the task script could not be loaded"))

    async def aclose(self) -> None:
        for task in list(self._runners):
            task.cancel()
        await asyncio.gather(*self._runners, return_exceptions=True)
