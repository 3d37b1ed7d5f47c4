"""A live meeting's timers, run by the replica holding its lease.

The lease (``SET NX PX meeting.lease_ms``, renewed every third of it) decides who runs a meeting's
loop; any replica's scanner adopts a meeting whose lease lapsed. The loop only waits and sends:

- every ``transcript_push_interval_ms`` the items since the last push (split to fit a bus
  message), read when a cycle starts, so a changed interval applies from the next cycle;
- every ``checkpoint_interval_min`` a checkpoint summary, computed in its own task under
  ``checkpoint_deadline_s``: a slow LLM never delays a push or a lease renewal;
- every :data:`GONE_CHECK_S` (at most half of ``abandon_after_s``), whether the device has been
  gone for ``abandon_after_s``; then the meeting is finalized with ``reason:"abandoned"``,
  exactly like a requested finalize.

A device is gone from its last ``DeviceDisconnected`` (of its current session) until it connects
again; as a safety net for a gateway that died without saying so, also from when its presence
entry (renewed by the gateway) disappeared, once this replica has seen it, until it is back. A
segment stored after that moment proves the device is there after all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from loguru import logger
from redis.exceptions import RedisError
from supie_common.contracts import Summary, now_ms
from supie_common.settings import MeetingSection
from supie_common.store import K, Lease

from .keys import MeetingKeys
from .models import SummaryRecord
from .outbox import Outbox
from .state import MeetingState
from .summarizer import Summarizer
from .wire import push_frames, summary_frame

__all__ = ["GONE_CHECK_S", "MeetingTimers"]

Abandon = Callable[[str, str], Awaitable[None]]
GONE_CHECK_S = 5.0  # how often the lease holder looks whether the device is gone


class MeetingTimers:
    def __init__(
        self,
        *,
        state: MeetingState,
        outbox: Outbox,
        summarizer: Summarizer,
        config: Callable[[], MeetingSection],
        holder: str,
        spawn: Callable[..., asyncio.Task[None]],
        abandon: Abandon,
    ) -> None:
        self.state = state
        self.outbox = outbox
        self.summarizer = summarizer
        self.config = config
        self.holder = holder
        self.spawn = spawn
        self.abandon = abandon
        self.loops: dict[str, asyncio.Task[None]] = {}
        self._leases: dict[str, Lease] = {}
        self._checkpoints: dict[str, asyncio.Task[None]] = {}
        self._stopping = False

    async def adopt(self, m: str) -> bool:
        """Run the meeting's timers here if nobody holds its lease."""
        if m in self.loops or self._stopping:
            return m in self.loops
        lease = Lease(
            self.state.redis, MeetingKeys.lease(m), self.config().lease_ms, holder=self.holder
        )
        if not await lease.acquire() or m in self.loops:
            return False
        self._leases[m] = lease
        self.loops[m] = self.spawn(self._loop(m, lease), f"meeting-timer-{m}")
        logger.info("meeting {}: timers running here (lease acquired)", m)
        return True

    def stop(self, m: str) -> None:
        """The meeting is no longer active: its loop and checkpoint stop (the lease expires)."""
        for tasks in (self.loops, self._checkpoints):
            task = tasks.pop(m, None)
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        self._leases.pop(m, None)

    async def release_all(self) -> None:
        """Shutdown: stop every loop and hand the leases back, so another replica adopts the
        meetings at its next scan rather than after the leases lapse."""
        self._stopping = True
        leases = list(self._leases.values())
        tasks = [*self.loops.values(), *self._checkpoints.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for lease in leases:
            with contextlib.suppress(RedisError, OSError):
                await lease.release()
        self.loops.clear()
        self._checkpoints.clear()
        self._leases.clear()

    # -- the loop ---------------------------------------------------------------------------------
    async def _loop(self, m: str, lease: Lease) -> None:
        try:
            meta = await self.state.meta(m)
            if meta is None or meta.status != "active":
                return
            device = meta.device_id
            loop = asyncio.get_running_loop()
            renew_every = lease.ttl_ms / 3000
            next_renew = loop.time() + renew_every
            next_push = loop.time() + self.config().push_interval_ms / 1000
            next_check = loop.time()
            presence_seen = False
            while True:
                await asyncio.sleep(max(0.0, min(next_renew, next_push) - loop.time()))
                now = loop.time()
                try:
                    if now >= next_renew:
                        next_renew = now + renew_every
                        if not await lease.renew():
                            logger.warning("meeting {}: lease lost, timers stop here", m)
                            return
                    if now >= next_check:
                        next_check = now + min(GONE_CHECK_S, self.config().abandon_after_s / 2)
                        presence_seen, gone = await self._gone(m, device, presence_seen)
                        if gone:
                            logger.info("meeting {}: device {} gone, finalizing", m, device)
                            await self.abandon(m, device)
                            return
                    if now >= next_push:
                        next_push = now + self.config().push_interval_ms / 1000
                        if not await self._push(m, device):
                            return  # finalizing or gone: timers stop
                except RedisError as exc:
                    logger.warning("meeting {}: timer cycle failed ({}), retrying", m, exc)
        finally:
            if self.loops.get(m) is asyncio.current_task():
                self.loops.pop(m, None)
                self._leases.pop(m, None)

    async def _gone(self, m: str, device: str, presence_seen: bool) -> tuple[bool, bool]:
        """(presence seen, abandoned?) for the meeting's device."""
        entry = await self.state.device(device)
        now = now_ms()
        present = bool(await self.state.redis.exists(K.presence(device)))
        gone_since = int(entry.get("gone_since") or 0)
        if present:
            if gone_since and entry.get("gone_by") == "absent":
                await self.state.presence(device, "back", "", now)
            return True, False
        if not gone_since:
            if presence_seen:  # it was there and went without a disconnect event
                await self.state.presence(device, "absent", "", now)
                logger.info("device {}: presence entry gone", device)
            return False, False
        if now - gone_since < self.config().abandon_after_s * 1000:
            return presence_seen, False
        meta = await self.state.meta(m)
        # Speech or snippets stored since it "left" prove it is there (via some gateway).
        return presence_seen, meta is not None and meta.last_segment_at <= gone_since

    async def _push(self, m: str, device: str) -> bool:
        cfg = self.config()
        taken = await self.state.take_push(m, cfg.max_pending)
        if taken is None:
            return False
        total, items = taken
        items.sort(key=lambda s: s.ts)  # replicas may append out of order
        frames = push_frames(m, items, total, budget=self.outbox.budget)
        for frame in frames:
            await self.outbox.frame(device, frame)
        logger.info(
            "meeting {} transcript pushed items={} total={} frames={}, next interval={}ms",
            m,
            len(items),
            total,
            len(frames),
            cfg.push_interval_ms,
        )
        await self._maybe_checkpoint(m, device)
        return True

    async def _maybe_checkpoint(self, m: str, device: str) -> None:
        cfg = self.config()
        if cfg.checkpoint_interval_min <= 0 or m in self._checkpoints:
            return
        meta = await self.state.meta(m)
        if (
            meta is None
            or now_ms() - meta.last_checkpoint_at < cfg.checkpoint_interval_min * 60_000
        ):
            return
        task = self.spawn(self._checkpoint(m, device, meta.started_at), f"checkpoint-{m}")
        self._checkpoints[m] = task

    async def _checkpoint(self, m: str, device: str, started_at: int) -> None:
        try:
            segments = sorted(await self.state.segments(m), key=lambda s: s.ts)
            now = now_ms()
            result = await self.summarizer.summarize(segments, now - started_at, checkpoint=True)
            count = await self.state.mark_checkpoint(m, now)
            if count == 0:
                return  # finalize won the race: the final summary supersedes this one
            record = SummaryRecord(
                summary=Summary.model_validate(result.summary.model_dump()),
                source_segments=len(segments),
            )
            await self.outbox.frame(device, summary_frame(m, record, checkpoint=True))
            logger.info(
                "meeting {} checkpoint summary #{} ({} segments, {})",
                m,
                count,
                len(segments),
                result.source,
            )
        except RedisError as exc:
            logger.warning("meeting {}: checkpoint skipped ({})", m, exc)
        finally:
            if self._checkpoints.get(m) is asyncio.current_task():
                self._checkpoints.pop(m, None)
