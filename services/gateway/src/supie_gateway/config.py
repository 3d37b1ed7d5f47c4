"""Settings of the gateway process."""

from __future__ import annotations

from pydantic import Field
from supie_common.settings import (
    AsrSection,
    MeetingSection,
    ServerSection,
    SupieSettings,
    WorkflowSection,
)

__all__ = ["GatewaySettings"]


class GatewaySettings(SupieSettings):
    server: ServerSection = Field(default_factory=ServerSection)
    meeting: MeetingSection = Field(default_factory=MeetingSection)
    asr: AsrSection = Field(
        default_factory=AsrSection,
        description="read for heartbeat_timeout_ms, replay_s and the stream language",
    )
    workflow: WorkflowSection = Field(
        default_factory=WorkflowSection, description="read for group_of(device)"
    )
    services: list[str] = Field(
        default_factory=lambda: ["gateway", "asr", "meeting", "webhook"],
        description="services /healthz expects to answer",
    )
