"""Getting snapshots to badges: a changed group's online badges, greetings on connect/hello/mode
start (debounced per device across replicas), and the console's live view.

Snapshots of one group from different requests (and replicas) may overtake each other on their way
to a badge. So whoever sent a snapshot of version ``v`` checks, once the bus has it (flush), that
the group is still at ``v``; if not, it sends the group's current snapshot to every online badge
of the group, and checks again. The last snapshot each badge receives is then the group's latest:
a change that comes after the check publishes its own snapshot after ours.
"""

from __future__ import annotations

import asyncio

from loguru import logger
from nats.aio.client import Client as NATS
from redis.asyncio import Redis
from supie_common.contracts import (
    DeviceOutbound,
    Subjects,
    WorkflowGroupChanged,
    device_token,
    encode,
)
from supie_common.contracts.device import Task, WorkflowSnapshot
from supie_common.store import Presence

from .store import TaskStore

__all__ = ["Pusher", "SETTLE_ROUNDS"]

SETTLE_ROUNDS = 5  # a group still changing after this many re-sends gets them from later changes


def _frame(group: str, tasks: list[Task]) -> bytes:
    return encode(DeviceOutbound.of(WorkflowSnapshot(tasks=tasks, group_key=group)))


class Pusher:
    def __init__(self, nc: NATS, redis: Redis, store: TaskStore, presence: Presence) -> None:
        self.nc = nc
        self.redis = redis
        self.store = store
        self.presence = presence
        self.pushed = 0

    async def online(self, group: str) -> list[str]:
        return await self.presence.online_in_group(group)

    async def to_group(self, group: str, tasks: list[Task], *, exclude: str = "") -> int:
        """Publish the snapshot to the group's online badges (not ``exclude``: it has it in its
        reply). Returns how many got it."""
        data = _frame(group, tasks)
        devices = [d for d in await self.online(group) if d != exclude]
        for device in devices:
            await self.nc.publish(Subjects.device_out(device), data)
        self.pushed += len(devices)
        return len(devices)

    async def to_device(self, device_id: str, group: str, tasks: list[Task]) -> None:
        await self.nc.publish(Subjects.device_out(device_id), _frame(group, tasks))
        self.pushed += 1

    async def group_changed(self, group: str, tasks: list[Task], op: str, by: str) -> None:
        event = WorkflowGroupChanged(group_key=group, tasks=tasks, op=op, by=by)
        await self.nc.publish(Subjects.workflow_group(group), encode(event))

    async def settle(self, sent: dict[str, int]) -> None:
        """After snapshots of these group versions went out: re-send until each group is still
        at the version its badges last got from us."""
        if not sent:
            return
        await self.nc.flush()
        pending = dict(sent)
        for _ in range(SETTLE_ROUNDS):
            groups = list(pending)
            versions = await asyncio.gather(*(self.store.version(g) for g in groups))
            moved = {g: v for g, v in zip(groups, versions, strict=True) if v != pending[g]}
            if not moved:
                return
            pending = {}
            for g in moved:
                version, tasks = await self.store.snapshot(g)
                await self.to_group(g, tasks)
                pending[g] = version
            await self.nc.flush()
        logger.debug("groups {} still changing after {} re-sends", sorted(pending), SETTLE_ROUNDS)

    async def greet(self, device_id: str, group: str, source: str, debounce_ms: int) -> bool:
        """A snapshot for a badge that connected, said hello or entered working mode, unless
        another replica greeted it less than ``debounce_ms`` ago."""
        if debounce_ms > 0:
            key = f"supie:wf:{{d:{device_token(device_id)}}}:greeted"
            if not await self.redis.set(key, source, nx=True, px=debounce_ms):
                return False
        version, tasks = await self.store.snapshot(group)
        await self.to_device(device_id, group, tasks)
        logger.info(
            "[Workflow] op=snapshot source={} groups=[{}] count={} by={}",
            source,
            group,
            len(tasks),
            device_id,
        )
        await self.settle({group: version})
        return True
