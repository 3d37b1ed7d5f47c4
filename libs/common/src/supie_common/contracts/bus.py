"""Bus payloads: every message services exchange over NATS (except raw audio), as pydantic models.

Serialised with :func:`encode` (compact JSON, no null fields) and parsed with :func:`decode`.
Device-facing text travels as ready-made JSON frames (``frames: list[str]``) built from the
models in :mod:`.device` with ``to_frame``: the gateway sends them verbatim, so a frame is
serialised once, by the service that owns it.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from .device import (
    CodingMessage,
    ListenMode,
    MeetingMessage,
    Mode,
    ModeState,
    Task,
    WorkflowMessage,
    to_frame,
)
from .summary import Summary

__all__ = [
    "ApiReply",
    "AsrControl",
    "AsrEvent",
    "AsrOpenReply",
    "AsrOpenRequest",
    "Codec",
    "ConfigUpdated",
    "DeviceCommand",
    "DeviceConnected",
    "DeviceDelivered",
    "DeviceDisconnected",
    "DeviceHello",
    "DeviceInbound",
    "DeviceOutbound",
    "Envelope",
    "HealthPing",
    "HealthPong",
    "InboundReply",
    "MeetingApiRequest",
    "MeetingControl",
    "MeetingControlReply",
    "MeetingFinalized",
    "MeetingSegment",
    "MeetingSegmentAdded",
    "MeetingStateChanged",
    "MeetingStatus",
    "ModeChanged",
    "ServiceMessage",
    "Takeover",
    "Transcript",
    "WorkflowApiRequest",
    "WorkflowGroupChanged",
    "decode",
    "encode",
    "new_id",
    "now_ms",
]

Codec = Literal["opus", "pcm"]
MeetingStatus = Literal["active", "finalizing", "finalized"]


def new_id() -> str:
    """A random 32-hex id for sessions, streams, meetings, messages and events."""
    return uuid.uuid4().hex


def now_ms() -> int:
    return int(time.time() * 1000)


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


# -- device traffic -----------------------------------------------------------------------------

ServiceMessage = Annotated[
    MeetingMessage | WorkflowMessage | CodingMessage, Field(discriminator="type")
]
"""A device message owned by a mode service (already validated at the gateway's edge)."""


class DeviceInbound(Envelope):
    """A device message for its service, request/reply. Retries carry the same ``message_id``:
    the service applies a message id at most once (atomically with the change it makes)."""

    message_id: str = Field(default_factory=new_id, description="idempotency key of this message")
    mode: Mode | None = Field(default=None, description="connection mode when it arrived")
    group_key: str = Field(default="", description="the sender's group (workflow)")
    received_ms: int = Field(default_factory=now_ms)
    attempt: int = Field(default=1, ge=1)
    message: ServiceMessage


class InboundReply(_Model):
    """A service's answer to a :class:`DeviceInbound` or a routed :class:`Transcript`, sent only
    after the change is persisted. ``retry`` = not persisted (e.g. Redis down): ask again."""

    frames: list[str] = Field(default_factory=list, description="JSON text frames for the device")
    retry: bool = False
    error: str | None = None

    @classmethod
    def of(cls, *messages: BaseModel) -> InboundReply:
        return cls(frames=[to_frame(m) for m in messages])


class DeviceOutbound(_Model):
    """One thing for one device's socket, published on ``Subjects.device_out``."""

    frame: str | None = Field(default=None, description="a JSON text frame, sent verbatim")
    close: bool = Field(default=False, description="close the socket after sending the frame")
    close_delay_s: float = 0.0
    receipt: str | None = Field(
        default=None, description="publish DeviceDelivered(receipt) once the frame is written"
    )
    # Before the typed protocol: a dict sent as JSON. New code sends ``frame``.
    message: dict[str, Any] | None = None

    @classmethod
    def of(cls, message: BaseModel, *, receipt: str | None = None) -> DeviceOutbound:
        return cls(frame=to_frame(message), receipt=receipt)


class DeviceCommand(_Model):
    """An instruction for the gateway that holds a device (never forwarded to it)."""

    command: Literal["set_mode", "meeting_state", "close", "close_asr_stream"]
    mode: Mode | None = None
    meeting_id: str | None = None
    status: MeetingStatus | None = Field(default=None, description="meeting_state: the new one")
    reason: str | None = None


class DeviceConnected(Envelope):
    client_id: str | None = None
    protocol_version: int = 1
    group_key: str
    language: str | None = None
    ts_ms: int = Field(default_factory=now_ms)


class DeviceDisconnected(Envelope):
    reason: str = ""
    mode: Mode | None = None
    group_key: str = ""
    ts_ms: int = Field(default_factory=now_ms)


class DeviceHello(Envelope):
    """Every hello (repeated ones included): services may greet it (workflow snapshot)."""

    group_key: str
    mode: Mode | None = None
    ts_ms: int = Field(default_factory=now_ms)


class DeviceDelivered(Envelope):
    """A frame published with a ``receipt`` was written to the device's socket."""

    receipt: str
    ts_ms: int = Field(default_factory=now_ms)


class ModeChanged(Envelope):
    """A device entered or left a mode (after the gateway acked it)."""

    state: ModeState
    mode: Mode
    previous_mode: Mode | None = None
    meeting_id: str | None = Field(default=None, description="the meeting started or ended")
    listen_mode: ListenMode | None = None
    group_key: str = ""
    ts_ms: int = Field(default_factory=now_ms)


class Takeover(_Model):
    """A gateway accepted a connection for this device; any other holder must let go."""

    device_id: str
    gateway_id: str
    session_id: str
    ts_ms: int = Field(default_factory=now_ms)


# -- asr ----------------------------------------------------------------------------------------


class AsrOpenRequest(Envelope):
    stream_id: str = Field(default_factory=new_id)
    codec: Codec = "opus"
    sample_rate: int = 16000
    channels: int = 1
    frame_duration_ms: int = 60
    listen_mode: ListenMode = "auto"
    language: str | None = Field(
        default=None, description="asr.language_for(device); None = default"
    )
    mode: Mode | None = Field(default=None, description="routing context copied into transcripts")
    meeting_id: str | None = Field(default=None, description="set when the stream serves a meeting")
    resume_seq: int = Field(
        default=0, description="first sequence expected (re-open after fail-over: committed_seq)"
    )


class AsrOpenReply(_Model):
    ok: bool
    stream_id: str
    owner: str = Field(description="id of the asr replica that owns the stream")
    heartbeat_ms: int = 500
    error: str | None = None


class AsrControl(_Model):
    """Gateway -> owning asr replica. ``at_seq`` places a boundary in the audio (replays)."""

    action: Literal["listen_start", "listen_stop", "flush", "close", "route"]
    listen_mode: ListenMode | None = None
    mode: Mode | None = Field(default=None, description="route: new routing context")
    meeting_id: str | None = None
    at_seq: int | None = Field(default=None, description="apply when the stream reaches this seq")
    ts_ms: int = Field(default_factory=now_ms)


class Transcript(Envelope):
    """One recognised utterance (kind "final") or a partial hypothesis (kind "partial"), or
    typed text (source "text"). ``utterance_id`` is deterministic for ASR finals
    (``<stream_id>:<start_seq>``), so a re-transcribed utterance is recognised downstream."""

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
    mode: Mode | None = None
    ts_ms: int = Field(default_factory=now_ms)


class AsrEvent(_Model):
    """Owning asr replica -> gateway, on ``Subjects.asr_events(stream_id)``."""

    kind: Literal["heartbeat", "transcript", "error", "closed"]
    stream_id: str
    owner: str
    transcript: Transcript | None = None
    error: str | None = None
    frames: int = Field(default=0, description="next sequence the owner expects (received)")
    committed_seq: int = Field(
        default=0, description="every frame before this is fully handled: replay from here"
    )
    gaps: int = 0
    dropped_ms: int = 0
    ts_ms: int = Field(default_factory=now_ms)


# -- meeting ------------------------------------------------------------------------------------


class MeetingControl(Envelope):
    """Gateway (or API) -> meeting, request/reply: the meeting service owns meeting state.

    - ``start``: the device's active meeting, or a new one (repeated start is idempotent);
    - ``end`` / ``finalize``: finalize the device's active meeting (ACK frame in the reply);
    - ``state``: what the device's meeting is (on every connect: resume, or redeliver a summary
      that never reached the badge).
    """

    message_id: str = Field(default_factory=new_id)
    action: Literal["start", "end", "finalize", "state"]
    source: Literal["device", "mode_end", "voice", "text", "api", "console", "connect"] = "device"
    listen_mode: ListenMode | None = None


class MeetingControlReply(_Model):
    meeting_id: str | None = None
    status: MeetingStatus | None = Field(default=None, description="None: no meeting")
    started_at: int | None = None
    frames: list[str] = Field(default_factory=list, description="JSON text frames for the device")
    retry: bool = False
    error: str | None = None


class MeetingStateChanged(_Model):
    """A meeting changed state (however it happened): the gateway holding the device stops its
    audio on ``finalizing``; live views update."""

    meeting_id: str
    device_id: str
    status: MeetingStatus
    reason: str | None = None
    ts_ms: int = Field(default_factory=now_ms)


class MeetingSegment(_Model):
    ts: int
    text: str
    speaker_id: str | None = Field(default=None, alias="speakerId")
    tag: str | None = None
    utterance_id: str | None = Field(default=None, alias="utteranceId")


class MeetingSegmentAdded(_Model):
    """A segment was stored (``Subjects.meeting_live``): live transcript views."""

    meeting_id: str
    device_id: str
    index: int = Field(description="0-based position in the meeting")
    segment: MeetingSegment
    ts_ms: int = Field(default_factory=now_ms)


class MeetingApiRequest(_Model):
    """An HTTP API call answered by the meeting service over NATS (query params as given)."""

    op: str
    params: dict[str, Any] = Field(default_factory=dict)


class MeetingFinalized(_Model):
    """Durable event (JetStream) after a meeting is archived. ``event_id`` is stable per meeting."""

    event_id: str
    session_id: str
    device_id: str
    summary: Summary
    metrics: dict[str, Any] = Field(default_factory=dict)
    duration_ms: int
    started_at: int
    ended_at: int
    fence: int = Field(default=0, description="fencing token of the generation that wrote it")
    ts_ms: int = Field(default_factory=now_ms)


# -- workflow -----------------------------------------------------------------------------------


class WorkflowApiRequest(_Model):
    """An HTTP API call answered by the workflow service over NATS."""

    op: str
    params: dict[str, Any] = Field(default_factory=dict)
    body: dict[str, Any] = Field(default_factory=dict)


class WorkflowGroupChanged(_Model):
    """A group's task list changed (``Subjects.workflow_group``): live views."""

    group_key: str
    tasks: list[Task]
    op: str
    by: str = ""
    ts_ms: int = Field(default_factory=now_ms)


# -- shared replies and operations ---------------------------------------------------------------


class ApiReply(_Model):
    """Reply of a bus-backed HTTP route; ``status`` is the HTTP status the gateway returns."""

    status: int = 200
    success: bool = True
    data: Any = None
    error: str | None = None
    content_type: str | None = Field(
        default=None, description="non-JSON body (exports): data is the text, sent as is"
    )


class ConfigUpdated(_Model):
    """Configuration changed (device ``update_config`` or a changed file); every service reloads."""

    source: Literal["device", "file", "api"]
    changed_keys: list[str] = Field(default_factory=list)
    config_path: str | None = None
    ts_ms: int = Field(default_factory=now_ms)


class HealthPing(_Model):
    ts_ms: int = Field(default_factory=now_ms)


class HealthPong(_Model):
    service: str
    instance: str
    ok: bool = True
    detail: dict[str, Any] = Field(default_factory=dict)
