"""The workflow service's settings: the common sections plus ``workflow`` and ``server`` (the
gateway's presence TTL decides which badges count as online)."""

from __future__ import annotations

from pydantic import Field
from supie_common.settings import ServerSection, SupieSettings, WorkflowSection

__all__ = ["WorkflowSettings"]


class WorkflowSettings(SupieSettings):
    workflow: WorkflowSection = Field(default_factory=WorkflowSection)
    server: ServerSection = Field(default_factory=ServerSection)
