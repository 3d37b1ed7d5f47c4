"""Getting snapshots to badges: a changed group's online badges, greetings on connect/hello/mode
start (debounced per device across replicas), and the console's live view.

Snapshots of one group from different requests (and replicas) may overtake each other on their way
to a badge. Two rules make the last snapshot every badge holds the group's latest:

1. within a replica, snapshots of a group go out in version order: an older push is dropped once
   a newer one went out, and a reply carries the newest snapshot this replica has seen;
2. whoever sent a snapshot of version ``v`` checks, once the bus has it (flush), that the group is
   still at ``v``. If not, a newer snapshot from another replica may have been overtaken by ours:
   the group is marked for a *resync*, which sends the current snapshot to every online badge of
   the group as soon as the group has been quiet for :data:`QUIET_S` (or busy for
   :data:`MAX_WAIT_S`), then checks again. While a group keeps changing, every change brings its
   own fresh snapshot; the resync only fixes the end of a burst: one snapshot per burst, not one
   per change.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from functools import lru_cache

from loguru import logger
from nats.aio.client import Client as NATS
from redis.asyncio import Redis
from supie_common.contracts import Subjects, device_token, now_ms

from .store import Snapshot, TaskStore, encode_value

__all__ = [
    "FlushBatcher",
    "LATEST_TTL_S",
    "MAX_WAIT_S",
    "Pusher",
    "QUIET_S",
    "device_out",
    "group_changed_payload",
]

QUIET_S = 0.05  # a group unchanged this long is "quiet"
MAX_WAIT_S = 1.0  # a group busy this long is resynced anyway
CHECK_GATHER_S = 0.01  # how long version checks gather before one round trip for them all
_LATEST_GROUPS = 4096  # newest snapshots remembered per replica (the busiest groups)
LATEST_TTL_S = 2.0  # how long a remembered snapshot orders later ones


@lru_cache(maxsize=65536)
def device_out(device_id: str) -> str:
    return Subjects.device_out(device_id)


def group_changed_payload(snapshot: Snapshot, op: str, by: str) -> bytes:
    """``encode(WorkflowGroupChanged(...))`` without parsing the tasks into models and encoding
    them again: the task texts are the stored ones (readers decode it with the model)."""
    return (
        f'{{"group_key":{encode_value(snapshot.group)},"tasks":[{",".join(snapshot.items)}],'
        f'"op":{encode_value(op)},"by":{encode_value(by)},"ts_ms":{now_ms()}}}'
    ).encode()


class FlushBatcher:
    """``await nc.flush()`` shared by everyone waiting: each caller waits for one flush that
    started after it called (so its earlier publishes are at the server), and concurrent callers
    share it instead of sending one PING each."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self._next: asyncio.Future[None] | None = None
        self._runner: asyncio.Task[None] | None = None

    async def __call__(self) -> None:
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        waiting = self._next
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run(), name="workflow-flush")
        await asyncio.shield(waiting)

    async def _run(self) -> None:
        while self._next is not None:
            current, self._next = self._next, None
            try:
                await self.nc.flush(timeout=5)
            except Exception as exc:
                current.set_exception(exc)
            else:
                current.set_result(None)


class Pusher:
    def __init__(self, nc: NATS, redis: Redis, store: TaskStore) -> None:
        self.nc = nc
        self.redis = redis
        self.store = store
        self.pushed = 0
        self.resyncs = 0
        self.flush = FlushBatcher(nc)
        self._latest: OrderedDict[str, tuple[Snapshot, float]] = OrderedDict()
        self._dirty: dict[str, tuple[int, float]] = {}  # group -> (version seen, since)
        self._wake = asyncio.Event()
        self._to_check: dict[str, int] = {}  # group -> newest version sent since the last check
        self._checker: asyncio.Task[None] | None = None

    def newest(self, snapshot: Snapshot) -> Snapshot:
        """``snapshot``, or a newer one of its group this replica saw in the last
        :data:`LATEST_TTL_S` (only near-simultaneous snapshots need ordering; a version from
        long ago is not trusted: Redis may have been emptied meanwhile)."""
        now = time.monotonic()
        known = self._latest.get(snapshot.group)
        if known is not None and known[0].version > snapshot.version:
            if now - known[1] < LATEST_TTL_S:
                return known[0]
        self._latest[snapshot.group] = (snapshot, now)
        self._latest.move_to_end(snapshot.group)
        if len(self._latest) > _LATEST_GROUPS:
            self._latest.popitem(last=False)
        return snapshot

    async def to_group(
        self,
        snapshot: Snapshot,
        online: list[str] | None = None,
        *,
        exclude: str = "",
        force: bool = False,
    ) -> int:
        """The snapshot to the group's online badges (not ``exclude``: it has it in its reply),
        unless this replica already sent a newer one. Returns how many got it."""
        if online is None:
            online = await self.store.online(snapshot.group)
        newest = self.newest(snapshot)
        if newest is not snapshot and not force:
            return 0
        snapshot = newest
        data = snapshot.outbound
        devices = [d for d in online if d != exclude]
        # publish() only buffers: nothing yields between these, so no other snapshot of this
        # group from this replica lands in between.
        for device in devices:
            await self.nc.publish(device_out(device), data)
        self.pushed += len(devices)
        return len(devices)

    async def to_device(self, device_id: str, snapshot: Snapshot) -> None:
        snapshot = self.newest(snapshot)
        await self.nc.publish(device_out(device_id), snapshot.outbound)
        self.pushed += 1

    async def group_changed(self, snapshot: Snapshot, op: str, by: str) -> None:
        await self.nc.publish(
            Subjects.workflow_group(snapshot.group), group_changed_payload(snapshot, op, by)
        )

    def check(self, sent: dict[str, int]) -> None:
        """After snapshots of these group versions went out: have the groups that moved on
        marked for a resync. Batched: one flush and one read of the versions for every request
        that sent something meanwhile; nobody waits for it."""
        for group, version in sent.items():
            self._to_check[group] = max(version, self._to_check.get(group, 0))
        if self._checker is None or self._checker.done():
            self._checker = asyncio.create_task(self._check_batches(), name="workflow-check")

    async def _check_batches(self) -> None:
        while self._to_check:
            # Let a few requests' checks gather: one flush and one read for all of them. A
            # resync waits for QUIET_S anyway, so a later check delays nothing that matters.
            await asyncio.sleep(CHECK_GATHER_S)
            batch, self._to_check = self._to_check, {}
            try:
                await self.flush()  # what we sent is at the server: compare with now
                versions = await self.store.versions(list(batch))
            except Exception as exc:  # NATS or Redis away: assume the worst, resync them
                logger.debug("[Workflow] version check failed ({})", type(exc).__name__)
                versions = [-1] * len(batch)
            now = time.monotonic()
            for (group, sent), version in zip(batch.items(), versions, strict=True):
                if version != sent and group not in self._dirty:
                    self._dirty[group] = (version, now)
                    self._wake.set()

    async def aclose(self) -> None:
        """Stop the background check and flush (the resync loop is the service's task)."""
        for task in (self._checker, self.flush._runner):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def resync_loop(self) -> None:
        """Runs for the service's life: resyncs groups marked by :meth:`check`."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._dirty:
                await asyncio.sleep(QUIET_S)
                try:
                    await self._resync_round()
                except Exception as exc:  # Redis away: the groups stay marked, try again
                    logger.warning("[Workflow] resync failed ({})", type(exc).__name__)
                    await asyncio.sleep(1.0)

    async def _resync_round(self) -> None:
        groups = list(self._dirty)
        versions = await self.store.versions(groups)
        now = time.monotonic()
        due: list[str] = []
        for g, v in zip(groups, versions, strict=True):
            seen, since = self._dirty[g]
            if v == seen or now - since > MAX_WAIT_S:
                due.append(g)
            else:
                self._dirty[g] = (v, since)  # still busy: its changes bring fresh snapshots
        sent: dict[str, int] = {}
        for g in due:
            snapshot = await self.store.snapshot(g)
            await self.to_group(snapshot, force=True)
            sent[g] = snapshot.version
            del self._dirty[g]
        if due:
            self.resyncs += len(due)
            logger.debug("[Workflow] resync groups={}", sorted(due))
            self.check(sent)

    async def greet(self, device_id: str, group: str, source: str, debounce_ms: int) -> bool:
        """A snapshot for a badge that connected, said hello or entered working mode, unless
        another replica greeted it less than ``debounce_ms`` ago."""
        if debounce_ms > 0:
            key = f"supie:wf:{{d:{device_token(device_id)}}}:greeted"
            if not await self.redis.set(key, source, nx=True, px=debounce_ms):
                return False
        snapshot = await self.store.snapshot(group)
        await self.to_device(device_id, snapshot)
        logger.info(
            "[Workflow] op=snapshot source={} groups=[{}] count={} by={}",
            source,
            group,
            len(snapshot.items),
            device_id,
        )
        self.check({group: snapshot.version})
        return True
