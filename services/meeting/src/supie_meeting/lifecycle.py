"""``meeting.control``: the one place that says which meeting a device has.

- ``start``: the device's active meeting, or a new one (its id derived from the request's
  ``message_id``, so a retried start lands on the same meeting);
- ``end`` / ``finalize``: finalize the active meeting (:class:`~.finalize.Finalizer`);
- ``state`` (every connect, any gateway): the active meeting with its transcript tail
  (``resumed:true``), or the summary of the last meeting if it never reached the badge (no
  ``DeviceDelivered`` for it) within ``redeliver_summary_s`` (``redelivered:true``).

It also keeps the device's presence (connected / gone since) from the gateways' events, and
marks a summary delivered when its receipt comes back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from loguru import logger
from supie_common.contracts import (
    DeviceConnected,
    DeviceDelivered,
    DeviceDisconnected,
    MeetingControl,
    MeetingControlReply,
    now_ms,
)
from supie_common.errors import ServiceUnavailable
from supie_common.settings import MeetingSection

from .archive import ArchiveStore
from .finalize import TAIL_ITEMS, Finalizer
from .outbox import Outbox, receipt_meeting
from .state import MeetingState
from .timers import MeetingTimers
from .wire import summary_frame, tail_frame

__all__ = ["CLAIM_ATTEMPTS", "Lifecycle", "meeting_id_for"]

CLAIM_ATTEMPTS = 5  # concurrent starts for one device: each retry sees the winner


def meeting_id_for(device_id: str, message_id: str) -> str:
    """The id of the meeting a start request creates: the same for its retries."""
    return hashlib.sha1(f"{device_id}\n{message_id}".encode(), usedforsecurity=False).hexdigest()[
        :32
    ]


class Lifecycle:
    def __init__(
        self,
        *,
        state: MeetingState,
        outbox: Outbox,
        archive: ArchiveStore,
        finalizer: Finalizer,
        timers: MeetingTimers,
        config: Callable[[], MeetingSection],
    ) -> None:
        self.state = state
        self.outbox = outbox
        self.archive = archive
        self.finalizer = finalizer
        self.timers = timers
        self.config = config

    async def control(self, c: MeetingControl) -> MeetingControlReply:
        if c.action == "start":
            return await self.start(c)
        if c.action == "state":
            return await self.state_of(c)
        ans = await self.finalizer.for_device(c.device_id, c.message_id, c.source)
        return MeetingControlReply(
            meeting_id=ans.meeting_id,
            status=ans.status,
            started_at=ans.started_at,
            frames=ans.frames,
        )

    async def start(self, c: MeetingControl) -> MeetingControlReply:
        device = c.device_id
        for _ in range(CLAIM_ATTEMPTS):
            current = await self.state.device_meeting(device)
            if current is not None:
                meta = await self.state.meta(current)
                if meta is not None and meta.status == "active":
                    await self.timers.adopt(current)
                    return MeetingControlReply(
                        meeting_id=current, status="active", started_at=meta.started_at
                    )
                if meta is None and await self.archive.read_main(current) is None:
                    # claimed by a start that died before creating it: finish that start
                    return await self._create(current, device, c.source)
            new = meeting_id_for(device, c.message_id)
            if new == current:  # our own earlier attempt, already finalized: not reused
                new = meeting_id_for(device, f"{c.message_id}:{now_ms()}")
            await self.state.register(new, now_ms())
            if await self.state.claim(device, current, new) == new:
                return await self._create(new, device, c.source)
        raise ServiceUnavailable(f"device {device}: meeting start kept racing")

    async def _create(self, m: str, device: str, source: str) -> MeetingControlReply:
        now = now_ms()
        await self.state.register(m, now)
        created = await self.state.create(m, device, now, source)
        if created.created:
            logger.info("meeting {} started for device {}", m, device)
            await self.outbox.state_changed(m, device, "active")
        await self.timers.adopt(m)
        return MeetingControlReply(meeting_id=m, status="active", started_at=created.started_at)

    async def state_of(self, c: MeetingControl) -> MeetingControlReply:
        device = c.device_id
        await self.state.presence(device, "up", c.session_id, now_ms())
        current = await self.state.device_meeting(device)
        meta = await self.state.meta(current) if current else None
        if current is not None and meta is not None and meta.status == "active":
            tail = await self.state.segments(current, -TAIL_ITEMS, -1)
            total = await self.state.segment_count(current)
            await self.timers.adopt(current)
            frame = tail_frame(current, tail, total, budget=self.outbox.budget, resumed=True)
            logger.info("device {} resumes meeting {}", device, current)
            return MeetingControlReply(
                meeting_id=current, status="active", started_at=meta.started_at, frames=[frame]
            )
        if current is not None and meta is not None and meta.status == "finalizing":
            return MeetingControlReply(
                meeting_id=current, status="finalizing", started_at=meta.started_at
            )
        return MeetingControlReply(frames=await self._undelivered_summary(device, c.message_id))

    async def _undelivered_summary(self, device: str, message_id: str) -> list[str]:
        entry = await self.state.device(device)
        m = entry.get("last_finalized")
        ended = int(entry.get("last_finalized_at") or 0)
        if not m or now_ms() - ended > self.config().redeliver_summary_s * 1000:
            return []
        meta = await self.state.meta(m)
        if meta is None or meta.summary_delivered:
            return []
        # Once per summary (a retry of this same request gets it again): the reply's frames go
        # straight to the socket that asked.
        if not await self.state.mark_once(m, "redelivered_by", message_id):
            meta = await self.state.meta(m)
            if meta is None or meta.redelivered_by != message_id:
                return []
        record = await self.state.stored_summary(m)
        if record is None:
            return []
        logger.info("device {}: summary of meeting {} redelivered", device, m)
        return [summary_frame(m, record, redelivered=True)]

    # -- presence and receipts (events) ----------------------------------------------------------
    async def connected(self, ev: DeviceConnected) -> None:
        await self.state.presence(ev.device_id, "up", ev.session_id, ev.ts_ms)

    async def disconnected(self, ev: DeviceDisconnected) -> None:
        await self.state.presence(ev.device_id, "down", ev.session_id, ev.ts_ms)

    async def delivered(self, ev: DeviceDelivered) -> None:
        m = receipt_meeting(ev.receipt)
        if m and await self.state.mark_once(m, "summary_delivered"):
            logger.debug("meeting {}: summary reached device {}", m, ev.device_id)
