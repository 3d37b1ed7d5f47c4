"""The meeting service's settings: the common sections plus ``meeting``."""

from __future__ import annotations

from pydantic import Field
from supie_common.settings import MeetingSection, SupieSettings

__all__ = ["MeetingSettings"]


class MeetingSettings(SupieSettings):
    meeting: MeetingSection = Field(default_factory=MeetingSection)
