"""Every bus subject and payload of Supie, declared once.

Version 1 of the bus contract. Subjects start with ``supie.v1.``; a breaking change to a payload
gets a new version prefix rather than a silent edit. ``docs/subjects.md`` lists the same table for
humans; ``tests/test_contracts.py`` checks that the two agree.

Audio frames travel as raw bytes with NATS headers (see :class:`AudioHeaders`), never as JSON.
Everything else is a pydantic model serialised with :func:`encode` / :func:`decode`.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "VERSION",
    "Subjects",
    "Queues",
    "device_token",
    "new_id",
    "now_ms",
    "encode",
    "decode",
    "AudioHeaders",
    "Envelope",
    "DeviceInbound",
    "DeviceOutbound",
    "DeviceCommand",
    "DeviceConnected",
    "DeviceDisconnected",
    "ModeChanged",
    "Takeover",
    "AsrOpenRequest",
    "AsrOpenReply",
    "AsrControl",
    "AsrEvent",
    "Transcript",
    "MeetingFinalizeRequest",
    "MeetingApiRequest",
    "ApiReply",
    "MeetingFinalized",
    "ConfigUpdated",
    "HealthPing",
    "HealthPong",
]

VERSION = 1
_P = "supie.v1"

# Characters allowed verbatim in a subject token built from a device id. Anything else (".", "*",
# ">", whitespace, ...) is escaped as "_XX" so that any device id maps to exactly one token.
_TOKEN_SAFE = re.compile(r"[A-Za-z0-9:\-]")


def device_token(device_id: str) -> str:
    """Return the NATS subject token for a (normalised) device id; reversible and collision-free."""
    return "".join(ch if _TOKEN_SAFE.match(ch) else f"_{ord(ch):02x}" for ch in device_id) or "_"


def new_id() -> str:
    """A short random id for sessions, streams, meetings and events."""
    return uuid.uuid4().hex


def now_ms() -> int:
    return int(time.time() * 1000)


class Subjects:
    """All subjects. Methods build the per-device / per-stream ones."""

    # -- gateway <-> devices --------------------------------------------------------------------
    @staticmethod
    def device_out(device_id: str) -> str:
        """Anything published here is delivered to the device's socket, whichever gateway holds it.
        Payload: :class:`DeviceOutbound` (JSON message or audio for the device)."""
        return f"{_P}.device.{device_token(device_id)}.out"

    @staticmethod
    def device_audio_out(device_id: str) -> str:
        """Raw downlink audio (one Opus packet per message) for the device; the gateway frames it
        with the device's binary protocol version (1, 2 or 3)."""
        return f"{_P}.device.{device_token(device_id)}.audio"

    @staticmethod
    def device_command(device_id: str) -> str:
        """Instructions for the gateway holding the device (not forwarded to the device).
        Payload: :class:`DeviceCommand`."""
        return f"{_P}.device.{device_token(device_id)}.command"

    @staticmethod
    def device_takeover(device_id: str) -> str:
        """Published by a gateway that accepted a new connection for the device.
        Payload: :class:`Takeover`."""
        return f"{_P}.device.{device_token(device_id)}.takeover"

    DEVICE_OUT_ALL = f"{_P}.device.*.out"
    DEVICE_COMMAND_ALL = f"{_P}.device.*.command"
    DEVICE_TAKEOVER_ALL = f"{_P}.device.*.takeover"

    DEVICE_CONNECTED = f"{_P}.presence.connected"  # DeviceConnected
    DEVICE_DISCONNECTED = f"{_P}.presence.disconnected"  # DeviceDisconnected
    MODE_CHANGED = f"{_P}.mode.changed"  # ModeChanged

    # Device messages routed to a service (payload: DeviceInbound, queue groups per service).
    MEETING_INBOUND = f"{_P}.meeting.inbound"  # {"type":"meeting",...}
    WORKFLOW_INBOUND = f"{_P}.workflow.inbound"  # {"type":"workflow",...}
    CODING_INBOUND = f"{_P}.coding.inbound"  # {"type":"coding",...}

    # Final transcripts routed by the gateway's mode router (payload: Transcript).
    MEETING_TRANSCRIPT = f"{_P}.meeting.transcript"
    WORKFLOW_INTENT = f"{_P}.workflow.intent"
    CODING_TEXT = f"{_P}.coding.text"

    # -- asr -------------------------------------------------------------------------------------
    ASR_OPEN = f"{_P}.asr.open"  # request/reply, queue group "asr": AsrOpenRequest -> AsrOpenReply

    @staticmethod
    def asr_audio(stream_id: str) -> str:
        """Raw audio bytes for one stream; headers per :class:`AudioHeaders`."""
        return f"{_P}.asr.stream.{stream_id}.audio"

    @staticmethod
    def asr_control(stream_id: str) -> str:
        """Gateway -> owning asr replica: :class:`AsrControl` (listen start/stop, flush, close)."""
        return f"{_P}.asr.stream.{stream_id}.control"

    @staticmethod
    def asr_events(stream_id: str) -> str:
        """Owning asr replica -> gateway: :class:`AsrEvent` (heartbeat, partial, final, error)."""
        return f"{_P}.asr.stream.{stream_id}.events"

    # -- meeting ---------------------------------------------------------------------------------
    MEETING_FINALIZE = f"{_P}.meeting.finalize"  # request/reply: MeetingFinalizeRequest
    MEETING_API = f"{_P}.meeting.api"  # request/reply: MeetingApiRequest -> ApiReply

    # -- durable events (JetStream stream EVENTS_STREAM) -----------------------------------------
    EVENTS_STREAM = "SUPIE_EVENTS"
    EVENTS_ALL = f"{_P}.events.>"
    MEETING_FINALIZED = f"{_P}.events.meeting.finalized"  # MeetingFinalized

    # -- operations ------------------------------------------------------------------------------
    CONFIG_UPDATED = f"{_P}.config.updated"  # ConfigUpdated, every replica of every service

    @staticmethod
    def health(service: str) -> str:
        """request/reply HealthPing -> HealthPong; one answer per service (queue group)."""
        return f"{_P}.health.{service}"


class Queues:
    """Queue-group names: replicas of one service share work."""

    ASR = "asr"
    MEETING = "meeting"
    WORKFLOW = "workflow"
    CODING = "coding"
    WEBHOOK = "webhook"
    HEALTH = "health"


class AudioHeaders:
    """NATS header names on raw audio messages (``Subjects.asr_audio``)."""

    STREAM = "Supie-Stream"
    DEVICE = "Supie-Device"
    SEQ = "Supie-Seq"  # per-stream frame sequence, from 0
    CODEC = "Supie-Codec"  # "opus" | "pcm"


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


M = TypeVar("M", bound=BaseModel)


def encode(model: BaseModel) -> bytes:
    """Compact JSON bytes of a payload model."""
    return model.model_dump_json(by_alias=True, exclude_none=True).encode()


def decode(model: type[M], data: bytes) -> M:
    """Parse and validate a payload; raises ``pydantic.ValidationError`` on a malformed one."""
    return model.model_validate_json(data)


class Envelope(_Model):
    """Who a device-related payload concerns. Embedded in most payloads below."""

    device_id: str = Field(description="normalised device id (lower-case MAC or alias)")
    session_id: str = Field(description="the WebSocket session id sent in the hello")
    gateway_id: str = Field(description="id of the gateway replica holding the socket")


class DeviceInbound(Envelope):
    """A JSON message from a device, forwarded verbatim to the service that owns its type."""

    mode: str | None = Field(default=None, description="connection mode when it arrived")
    meeting_id: str | None = Field(default=None, description="active meeting, in meeting mode")
    received_ms: int = Field(default_factory=now_ms)
    message: dict[str, Any]


class DeviceOutbound(_Model):
    """Something for one device. Exactly one of ``message`` (JSON text frame) or ``close``."""

    message: dict[str, Any] | None = None
    close: bool = Field(default=False, description="close the socket after sending message")
    close_delay_s: float = 0.0


class DeviceCommand(_Model):
    """An instruction for the gateway that holds a device."""

    command: Literal["close_asr_stream", "set_mode"]
    mode: str | None = None
    meeting_id: str | None = None
    reason: str | None = None


class DeviceConnected(Envelope):
    client_id: str | None = None
    protocol_version: int = 1
    group_key: str
    ts_ms: int = Field(default_factory=now_ms)


class DeviceDisconnected(Envelope):
    reason: str = ""
    mode: str | None = None
    ts_ms: int = Field(default_factory=now_ms)


class ModeChanged(Envelope):
    """A device entered or left a mode (after the gateway acked it)."""

    state: Literal["start", "end"]
    mode: Literal["meeting", "working", "coding"]
    previous_mode: str | None = None
    meeting_id: str | None = Field(default=None, description="the meeting started or ended")
    listen_mode: str | None = None
    ts_ms: int = Field(default_factory=now_ms)


class Takeover(_Model):
    """A gateway accepted a connection for this device; any other holder must let go."""

    device_id: str
    gateway_id: str
    session_id: str
    ts_ms: int = Field(default_factory=now_ms)


class AsrOpenRequest(Envelope):
    stream_id: str = Field(default_factory=new_id)
    codec: Literal["opus", "pcm"] = "opus"
    sample_rate: int = 16000
    channels: int = 1
    frame_duration_ms: int = 60
    listen_mode: Literal["auto", "manual", "realtime"] = "auto"
    language: str | None = None
    meeting_id: str | None = Field(default=None, description="set when the stream serves a meeting")
    resume_seq: int = Field(
        default=0, description="first sequence expected (re-open after fail-over)"
    )


class AsrOpenReply(_Model):
    ok: bool
    stream_id: str
    owner: str = Field(description="id of the asr replica that owns the stream")
    heartbeat_ms: int = 500
    error: str | None = None


class AsrControl(_Model):
    """Gateway -> owning asr replica."""

    action: Literal["listen_start", "listen_stop", "flush", "close"]
    listen_mode: Literal["auto", "manual", "realtime"] | None = None
    ts_ms: int = Field(default_factory=now_ms)


class Transcript(Envelope):
    """One recognised utterance (kind "final") or a partial hypothesis (kind "partial")."""

    stream_id: str
    utterance_id: str
    kind: Literal["partial", "final"] = "final"
    text: str
    language: str = "en"
    start_ms: int = Field(description="utterance start, ms since the stream opened")
    end_ms: int = Field(description="utterance end, ms since the stream opened")
    audio_ms: int = 0
    compute_ms: int = 0
    meeting_id: str | None = None
    source: Literal["asr", "text"] = "asr"
    mode: str | None = None
    ts_ms: int = Field(default_factory=now_ms)


class AsrEvent(_Model):
    """Owning asr replica -> gateway, on ``Subjects.asr_events(stream_id)``."""

    kind: Literal["heartbeat", "transcript", "error", "closed"]
    stream_id: str
    owner: str
    transcript: Transcript | None = None
    error: str | None = None
    frames: int = 0
    gaps: int = 0
    dropped_ms: int = 0
    ts_ms: int = Field(default_factory=now_ms)


class MeetingFinalizeRequest(_Model):
    """HTTP or internal finalize of a meeting (devices finalize through MEETING_INBOUND)."""

    session_id: str | None = Field(default=None, description="meeting id; or device_id's active")
    device_id: str | None = None
    source: str = "api"


class MeetingApiRequest(_Model):
    """An HTTP API call answered by the meeting service over NATS."""

    op: Literal["recent", "detail", "transcript", "finalize"]
    params: dict[str, Any] = Field(default_factory=dict)


class ApiReply(_Model):
    """Reply of a bus-backed HTTP route; ``status`` is the HTTP status the gateway returns."""

    status: int = 200
    success: bool = True
    data: Any = None
    error: str | None = None


class MeetingFinalized(_Model):
    """Durable event (JetStream) after a meeting is archived. ``event_id`` is stable per meeting."""

    event_id: str
    session_id: str
    device_id: str
    summary: dict[str, Any]
    metrics: dict[str, Any] = Field(default_factory=dict)
    duration_ms: int
    started_at: int
    ended_at: int
    ts_ms: int = Field(default_factory=now_ms)


class ConfigUpdated(_Model):
    """Configuration changed (device ``update_config`` or a changed file); every service reloads."""

    source: Literal["device", "file", "api"]
    changed_keys: list[str] = Field(default_factory=list)
    config_path: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    ts_ms: int = Field(default_factory=now_ms)


class HealthPing(_Model):
    ts_ms: int = Field(default_factory=now_ms)


class HealthPong(_Model):
    service: str
    instance: str
    ok: bool = True
    detail: dict[str, Any] = Field(default_factory=dict)
