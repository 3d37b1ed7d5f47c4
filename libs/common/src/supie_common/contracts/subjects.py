"""Bus subjects, queue groups, JetStream streams and audio headers: every name, declared once.

Version 1 of the bus contract: subjects start with ``supie.v1.``; a breaking change to a payload
gets a new version prefix rather than a silent edit. ``docs/subjects.md`` lists the same table for
humans and ``tests/test_common.py`` keeps the two in step.
"""

from __future__ import annotations

__all__ = ["CATALOG", "AudioHeaders", "Consumers", "Queues", "Streams", "Subjects", "device_token"]

_P = "supie.v1"
# Bytes allowed verbatim in a subject token made from a device id. Every other byte of the id's
# UTF-8 encoding ("_" itself included) becomes "_XX" (two hex digits). UTF-8 is a prefix code and
# every escape has the same width, so the mapping is injective for every Unicode id.
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789:-")


def device_token(device_id: str) -> str:
    """The NATS subject token for a (normalised) device id: reversible and collision-free."""
    if device_id.isascii() and all(ord(ch) in _SAFE for ch in device_id) and device_id:
        return device_id  # the common case (MAC addresses), without building anything
    raw = device_id.encode("utf-8", "surrogatepass")
    return "".join(chr(b) if b in _SAFE else f"_{b:02x}" for b in raw) or "_"


class Streams:
    """JetStream streams (created idempotently by their producers)."""

    EVENTS = "SUPIE_EVENTS"  # durable domain events: meeting.finalized -> webhook
    TRANSCRIPTS = "SUPIE_TRANSCRIPTS"  # ASR finals and typed text -> the gateway's mode router


class Subjects:
    """All subjects. Static methods build the per-device / per-stream / per-meeting ones."""

    # -- gateway <-> devices --------------------------------------------------------------------
    @staticmethod
    def device_out(device_id: str) -> str:
        """To the device's socket, via whichever gateway holds it: :class:`DeviceOutbound`."""
        return f"{_P}.device.{device_token(device_id)}.out"

    @staticmethod
    def device_audio_out(device_id: str) -> str:
        """Raw downlink audio (one Opus packet per message), framed by the gateway (v1/v2/v3)."""
        return f"{_P}.device.{device_token(device_id)}.audio"

    @staticmethod
    def device_command(device_id: str) -> str:
        """For the gateway holding the device (not sent to it): :class:`DeviceCommand`."""
        return f"{_P}.device.{device_token(device_id)}.command"

    @staticmethod
    def device_takeover(device_id: str) -> str:
        """A gateway accepted a new connection for the device: :class:`Takeover`."""
        return f"{_P}.device.{device_token(device_id)}.takeover"

    DEVICE_TAKEOVER_ALL = f"{_P}.device.*.takeover"

    DEVICE_CONNECTED = f"{_P}.presence.connected"  # DeviceConnected
    DEVICE_DISCONNECTED = f"{_P}.presence.disconnected"  # DeviceDisconnected
    DEVICE_HELLO = f"{_P}.presence.hello"  # DeviceHello (every hello, repeated ones included)
    DEVICE_DELIVERED = f"{_P}.presence.delivered"  # DeviceDelivered (receipts of marked frames)
    MODE_CHANGED = f"{_P}.mode.changed"  # ModeChanged

    # Device messages for a service: request/reply (DeviceInbound -> InboundReply), queue group per
    # service. The reply comes only after the service persisted the change; the gateway retries
    # (same message_id) until one does, within server.accept_timeout_s.
    MEETING_INBOUND = f"{_P}.meeting.inbound"  # {"type":"meeting",...}
    WORKFLOW_INBOUND = f"{_P}.workflow.inbound"  # {"type":"workflow",...}
    CODING_INBOUND = f"{_P}.coding.inbound"  # {"type":"coding",...}

    # -- transcripts -----------------------------------------------------------------------------
    @staticmethod
    def transcript_final(device_id: str) -> str:
        """JetStream (stream ``Streams.TRANSCRIPTS``): one final :class:`Transcript` (an ASR
        utterance or typed text), ``Nats-Msg-Id`` = utterance_id. Consumed by the gateway's mode
        router through the durable consumer ``Consumers.ROUTER``, whichever replica is alive."""
        return f"{_P}.transcripts.{device_token(device_id)}"

    TRANSCRIPTS_ALL = f"{_P}.transcripts.>"

    # Routed finals, request/reply (Transcript -> InboundReply), queue group per service: the
    # reply means the service persisted it; the router acks the JetStream message after it.
    MEETING_TRANSCRIPT = f"{_P}.meeting.transcript"
    WORKFLOW_INTENT = f"{_P}.workflow.intent"
    CODING_TEXT = f"{_P}.coding.text"

    # -- asr -------------------------------------------------------------------------------------
    ASR_OPEN = f"{_P}.asr.open"  # request/reply, queue "asr": AsrOpenRequest -> AsrOpenReply

    @staticmethod
    def asr_audio(stream_id: str) -> str:
        """Raw audio bytes for one stream; headers per :class:`AudioHeaders`."""
        return f"{_P}.asr.stream.{stream_id}.audio"

    @staticmethod
    def asr_control(stream_id: str) -> str:
        """Gateway -> owning asr replica: :class:`AsrControl`."""
        return f"{_P}.asr.stream.{stream_id}.control"

    @staticmethod
    def asr_events(stream_id: str) -> str:
        """Owning asr replica -> gateway: :class:`AsrEvent` (heartbeat, partial, error, closed)."""
        return f"{_P}.asr.stream.{stream_id}.events"

    # -- meeting ---------------------------------------------------------------------------------
    # request/reply, queue "meeting": MeetingControl -> MeetingControlReply (start, end, state)
    MEETING_CONTROL = f"{_P}.meeting.control"
    MEETING_API = f"{_P}.meeting.api"  # request/reply: MeetingApiRequest -> ApiReply

    @staticmethod
    def meeting_live(meeting_id: str) -> str:
        """Every segment as it is stored, for live views (console): :class:`MeetingSegmentAdded`."""
        return f"{_P}.meeting.live.{meeting_id}"

    MEETING_LIVE_ALL = f"{_P}.meeting.live.*"
    MEETING_STATE_CHANGED = f"{_P}.meeting.state"  # MeetingStateChanged (every replica, console)

    # -- workflow --------------------------------------------------------------------------------
    WORKFLOW_API = f"{_P}.workflow.api"  # request/reply: WorkflowApiRequest -> ApiReply

    @staticmethod
    def workflow_group(group_key: str) -> str:
        """A group's task list changed: :class:`WorkflowGroupChanged` (console live view)."""
        return f"{_P}.workflow.group.{device_token(group_key)}"

    WORKFLOW_GROUP_ALL = f"{_P}.workflow.group.*"

    # -- durable events (JetStream stream Streams.EVENTS) ----------------------------------------
    EVENTS_ALL = f"{_P}.events.>"
    MEETING_FINALIZED = f"{_P}.events.meeting.finalized"  # MeetingFinalized

    # -- operations ------------------------------------------------------------------------------
    CONFIG_UPDATED = f"{_P}.config.updated"  # ConfigUpdated, every replica of every service

    @staticmethod
    def health(service: str) -> str:
        """request/reply HealthPing -> HealthPong; one answer per service (queue group)."""
        return f"{_P}.health.{service}"

    # Kept for code written before the split (same value as Streams.EVENTS).
    EVENTS_STREAM = Streams.EVENTS


class Queues:
    """Queue-group names: replicas of one service share work."""

    ASR = "asr"
    MEETING = "meeting"
    WORKFLOW = "workflow"
    CODING = "coding"
    WEBHOOK = "webhook"
    HEALTH = "health"


class Consumers:
    """Durable JetStream consumer names (shared by the replicas of their service)."""

    ROUTER = "gateway-router"  # Streams.TRANSCRIPTS -> the mode router
    WEBHOOK = "webhook"  # Streams.EVENTS -> webhook delivery


class AudioHeaders:
    """NATS header names on raw audio messages (``Subjects.asr_audio``)."""

    STREAM = "Supie-Stream"
    DEVICE = "Supie-Device"
    SEQ = "Supie-Seq"  # per-stream frame sequence, from 0
    CODEC = "Supie-Codec"  # "opus" | "pcm"


# Every subject pattern with its payload (and reply, for request/reply) class names: what
# ``docs/subjects.md`` documents row by row; ``tests/test_contracts.py`` holds the three together.
# ``<dev>`` = device_token(device id), ``<stream>`` = an ASR stream id, ``<meeting>`` = a meeting
# id, ``<group>`` = device_token(group key), ``<service>`` = a service name.
CATALOG: tuple[tuple[str, str, str | None], ...] = (
    ("supie.v1.device.<dev>.out", "DeviceOutbound", None),
    ("supie.v1.device.<dev>.audio", "bytes", None),
    ("supie.v1.device.<dev>.command", "DeviceCommand", None),
    ("supie.v1.device.<dev>.takeover", "Takeover", None),
    ("supie.v1.device.*.takeover", "Takeover", None),
    ("supie.v1.presence.connected", "DeviceConnected", None),
    ("supie.v1.presence.disconnected", "DeviceDisconnected", None),
    ("supie.v1.presence.hello", "DeviceHello", None),
    ("supie.v1.presence.delivered", "DeviceDelivered", None),
    ("supie.v1.mode.changed", "ModeChanged", None),
    ("supie.v1.meeting.inbound", "DeviceInbound", "InboundReply"),
    ("supie.v1.workflow.inbound", "DeviceInbound", "InboundReply"),
    ("supie.v1.coding.inbound", "DeviceInbound", "InboundReply"),
    ("supie.v1.transcripts.<dev>", "Transcript", None),
    ("supie.v1.transcripts.>", "Transcript", None),
    ("supie.v1.meeting.transcript", "Transcript", "InboundReply"),
    ("supie.v1.workflow.intent", "Transcript", "InboundReply"),
    ("supie.v1.coding.text", "Transcript", "InboundReply"),
    ("supie.v1.asr.open", "AsrOpenRequest", "AsrOpenReply"),
    ("supie.v1.asr.stream.<stream>.audio", "bytes", None),
    ("supie.v1.asr.stream.<stream>.control", "AsrControl", None),
    ("supie.v1.asr.stream.<stream>.events", "AsrEvent", None),
    ("supie.v1.meeting.control", "MeetingControl", "MeetingControlReply"),
    ("supie.v1.meeting.api", "MeetingApiRequest", "ApiReply"),
    ("supie.v1.meeting.live.<meeting>", "MeetingSegmentAdded", None),
    ("supie.v1.meeting.live.*", "MeetingSegmentAdded", None),
    ("supie.v1.meeting.state", "MeetingStateChanged", None),
    ("supie.v1.workflow.api", "WorkflowApiRequest", "ApiReply"),
    ("supie.v1.workflow.group.<group>", "WorkflowGroupChanged", None),
    ("supie.v1.workflow.group.*", "WorkflowGroupChanged", None),
    ("supie.v1.events.>", "MeetingFinalized", None),
    ("supie.v1.events.meeting.finalized", "MeetingFinalized", None),
    ("supie.v1.config.updated", "ConfigUpdated", None),
    ("supie.v1.health.<service>", "HealthPing", "HealthPong"),
)
