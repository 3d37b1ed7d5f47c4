"""The coding service's settings: the common sections plus ``coding``, ``workflow`` (device groups:
insights also go to the other badges of the sender's group) and ``server`` (presence TTL)."""

from __future__ import annotations

from pydantic import Field
from supie_common.settings import CodingSection, ServerSection, SupieSettings, WorkflowSection

__all__ = ["CodingSettings"]


class CodingSettings(SupieSettings):
    coding: CodingSection = Field(default_factory=CodingSection)
    workflow: WorkflowSection = Field(default_factory=WorkflowSection)
    server: ServerSection = Field(default_factory=ServerSection)
