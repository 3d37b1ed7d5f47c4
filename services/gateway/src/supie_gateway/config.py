"""Settings of the gateway process."""

from __future__ import annotations

from pydantic import Field
from supie_common.settings import MeetingSection, ServerSection, SupieSettings

__all__ = ["GatewaySettings"]


class GatewaySettings(SupieSettings):
    server: ServerSection = Field(default_factory=ServerSection)
    meeting: MeetingSection = Field(default_factory=MeetingSection)
    services: list[str] = Field(
        default_factory=lambda: ["gateway", "asr", "meeting", "webhook"],
        description="services /healthz expects to answer",
    )
