"""The webhook service's settings: the common sections plus ``meeting`` (``meeting.webhook.*``)."""

from __future__ import annotations

from pydantic import Field
from supie_common.settings import DispatcherSection, MeetingSection, SupieSettings

__all__ = ["WebhookSettings"]


class WebhookSettings(SupieSettings):
    meeting: MeetingSection = Field(default_factory=MeetingSection)
    webhook: DispatcherSection = Field(default_factory=DispatcherSection)
