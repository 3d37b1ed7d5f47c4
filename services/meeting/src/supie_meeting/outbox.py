"""Everything the meeting service publishes, bounded below the connection's ``max_payload``.

Frames for a badge go to ``device.<dev>.out`` (a summary with a ``receipt``, so the gateway
confirms it reached the socket); every state transition goes out twice, as
``MeetingStateChanged`` (live views, every replica) and as ``DeviceCommand(meeting_state)`` for
the gateway holding the device; the durable ``meeting.finalized`` event goes to JetStream with a
stable ``Nats-Msg-Id``. A payload over the limit is never sent (NATS would close the
connection): it is logged and dropped, and the builders in :mod:`.wire` make sure that does not
happen to anything a badge needs.
"""

from __future__ import annotations

from loguru import logger
from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext
from pydantic import BaseModel
from supie_common.contracts import (
    DeviceCommand,
    DeviceOutbound,
    MeetingFinalized,
    MeetingSegmentAdded,
    MeetingStateChanged,
    MeetingStatus,
    Subjects,
    encode,
)

from .models import Segment

__all__ = ["Outbox", "PAYLOAD_HEADROOM", "summary_receipt", "receipt_meeting"]

# Room left under max_payload for headers, the subject and a reply inbox.
PAYLOAD_HEADROOM = 4096
_RECEIPT = "meeting-summary:"


def summary_receipt(meeting_id: str) -> str:
    """The receipt a final summary is published with (``DeviceDelivered`` names it)."""
    return f"{_RECEIPT}{meeting_id}"


def receipt_meeting(receipt: str) -> str | None:
    """The meeting a summary receipt is about, or None for someone else's receipt."""
    return receipt[len(_RECEIPT) :] if receipt.startswith(_RECEIPT) else None


class Outbox:
    def __init__(self, nc: NATS, js: JetStreamContext) -> None:
        self.nc = nc
        self.js = js

    @property
    def budget(self) -> int:
        """Bytes one payload may take (frames are sized against this)."""
        return max(self.nc.max_payload - PAYLOAD_HEADROOM, 16 * 1024)

    def fits(self, data: bytes, what: str) -> bool:
        if len(data) <= self.nc.max_payload - 512:
            return True
        logger.error("not publishing {}: {} bytes is over the bus limit", what, len(data))
        return False

    async def _publish(self, subject: str, payload: BaseModel, what: str) -> None:
        data = encode(payload)
        if self.fits(data, what):
            await self.nc.publish(subject, data)

    async def frame(self, device_id: str, frame: str, *, receipt: str | None = None) -> None:
        await self._publish(
            Subjects.device_out(device_id),
            DeviceOutbound(frame=frame, receipt=receipt),
            f"a frame for {device_id}",
        )

    async def frames(self, device_id: str, frames: list[str]) -> None:
        for f in frames:
            await self.frame(device_id, f)

    async def state_changed(
        self, meeting_id: str, device_id: str, status: MeetingStatus, reason: str | None = None
    ) -> None:
        await self._publish(
            Subjects.MEETING_STATE_CHANGED,
            MeetingStateChanged(
                meeting_id=meeting_id, device_id=device_id, status=status, reason=reason
            ),
            "a meeting state change",
        )
        await self._publish(
            Subjects.device_command(device_id),
            DeviceCommand(
                command="meeting_state", meeting_id=meeting_id, status=status, reason=reason
            ),
            "a meeting_state command",
        )

    async def segment_added(
        self, meeting_id: str, device_id: str, index: int, segment: Segment
    ) -> None:
        await self._publish(
            Subjects.meeting_live(meeting_id),
            MeetingSegmentAdded(
                meeting_id=meeting_id, device_id=device_id, index=index, segment=segment
            ),
            "a live segment",
        )

    async def finalized(self, event: MeetingFinalized) -> None:
        """Durable (JetStream acks it); the same event id is deduplicated by the stream."""
        data = encode(event)
        if self.fits(data, f"meeting.finalized of {event.session_id}"):
            await self.js.publish(
                Subjects.MEETING_FINALIZED, data, headers={"Nats-Msg-Id": event.event_id}
            )
