"""The protocol state of one device socket: plain data, no behaviour beyond small helpers.

Everything a connection's collaborators (mode controller, idle policy, outbox, state store) read
or change lives here, so none of them needs the connection itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from supie_common.contracts import ListenMode, MeetingStatus, Mode, new_id

__all__ = ["DeviceSession"]


@dataclass(slots=True, eq=False)
class DeviceSession:
    device_id: str
    gateway_id: str
    client_id: str | None = None
    protocol_version: int = 1
    group_key: str = ""
    session_id: str = field(default_factory=new_id)
    # hello
    hello_done: bool = False
    audio_format: str = "opus"
    frame_duration: int = 60
    # mode: working/coding are the gateway's own; the meeting is the meeting service's, told to
    # us in its replies and in DeviceCommand(meeting_state): never decided here.
    mode: Mode | None = None
    meeting_id: str | None = None
    meeting_status: MeetingStatus | None = None
    listen_mode: ListenMode = "auto"
    # timers (time.monotonic())
    last_voice: float = field(default_factory=time.monotonic)  # layer 1: voice or a message
    last_inbound: float = field(default_factory=time.monotonic)  # layer 2: anything at all
    last_sent: float = field(default_factory=time.monotonic)  # app keepalive
    idle_warned: bool = False
    hard_warned_at: float | None = None
    closing: bool = False

    def envelope(self) -> dict[str, str]:
        """The :class:`~supie_common.contracts.Envelope` fields of this socket."""
        return {
            "device_id": self.device_id,
            "session_id": self.session_id,
            "gateway_id": self.gateway_id,
        }

    @property
    def active_meeting(self) -> str | None:
        """The meeting whose audio and text this socket carries, if any."""
        if self.mode == "meeting" and self.meeting_status == "active":
            return self.meeting_id
        return None

    @property
    def drops_audio(self) -> bool:
        """In meeting mode without an active meeting (finalizing, finalized, none yet)."""
        return self.mode == "meeting" and self.meeting_status != "active"

    def touch_voice(self) -> None:
        """Voice or a message: the no-voice timer starts again."""
        self.last_voice = time.monotonic()
        self.idle_warned = False
