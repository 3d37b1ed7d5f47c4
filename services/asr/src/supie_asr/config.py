"""Settings of the asr service: the common sections plus ``asr`` and ``meeting`` (for
``meeting.manual_listen_fallback_ms``)."""

from __future__ import annotations

from pydantic import Field
from supie_common.settings import AsrSection, MeetingSection, SupieSettings

__all__ = ["AsrSettings"]


class AsrSettings(SupieSettings):
    asr: AsrSection = Field(default_factory=AsrSection)
    meeting: MeetingSection = Field(default_factory=MeetingSection)
