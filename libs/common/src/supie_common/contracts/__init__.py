"""Every bus subject and payload of Supie, and every device message, declared once.

- :mod:`.subjects`: subjects, queue groups, streams, consumers, audio headers, ``device_token``;
- :mod:`.bus`: payloads services exchange over NATS;
- :mod:`.device`: the device protocol (device -> server and server -> device messages);
- :mod:`.summary`: the 7-field meeting summary.

``docs/subjects.md`` lists the bus side for humans and ``docs/protocol.md`` the device side; tests
keep both in step with this package. This package imports nothing else from Supie.
"""

from __future__ import annotations

from .bus import (
    ApiReply,
    AsrControl,
    AsrEvent,
    AsrOpenReply,
    AsrOpenRequest,
    Codec,
    ConfigUpdated,
    DeviceCommand,
    DeviceConnected,
    DeviceDelivered,
    DeviceDisconnected,
    DeviceHello,
    DeviceInbound,
    DeviceOutbound,
    Envelope,
    HealthPing,
    HealthPong,
    InboundReply,
    MeetingApiRequest,
    MeetingControl,
    MeetingControlReply,
    MeetingFinalized,
    MeetingSegment,
    MeetingSegmentAdded,
    MeetingStateChanged,
    MeetingStatus,
    ModeChanged,
    ServiceMessage,
    Takeover,
    Transcript,
    WorkflowApiRequest,
    WorkflowGroupChanged,
    decode,
    encode,
    new_id,
    now_ms,
)
from .device import ErrorCode, ListenMode, Mode, to_frame
from .subjects import AudioHeaders, Consumers, Queues, Streams, Subjects, device_token
from .summary import Summary

__all__ = [
    "ApiReply",
    "AsrControl",
    "AsrEvent",
    "AsrOpenReply",
    "AsrOpenRequest",
    "AudioHeaders",
    "Codec",
    "ConfigUpdated",
    "Consumers",
    "DeviceCommand",
    "DeviceConnected",
    "DeviceDelivered",
    "DeviceDisconnected",
    "DeviceHello",
    "DeviceInbound",
    "DeviceOutbound",
    "Envelope",
    "ErrorCode",
    "HealthPing",
    "HealthPong",
    "InboundReply",
    "ListenMode",
    "MeetingApiRequest",
    "MeetingControl",
    "MeetingControlReply",
    "MeetingFinalized",
    "MeetingSegment",
    "MeetingSegmentAdded",
    "MeetingStateChanged",
    "MeetingStatus",
    "Mode",
    "ModeChanged",
    "Queues",
    "ServiceMessage",
    "Streams",
    "Subjects",
    "Summary",
    "Takeover",
    "Transcript",
    "WorkflowApiRequest",
    "WorkflowGroupChanged",
    "decode",
    "device_token",
    "encode",
    "new_id",
    "now_ms",
    "to_frame",
]
