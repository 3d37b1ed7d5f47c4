"""Settings of the gateway process.

The gateway reads a few keys of the ``asr`` and ``workflow`` sections; it validates only those
(views that ignore the rest), so that a bad ``asr.beam_size`` stops the asr service that reads
it, not the gateway. Each service validates its own section in full.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from supie_common.settings import (
    AsrSection,
    MeetingSection,
    ServerSection,
    SupieSettings,
    WorkflowSection,
    pick_language,
)

__all__ = ["AsrView", "GatewaySettings", "WorkflowView"]


def _default(section: type[BaseModel], key: str) -> Any:
    return section.model_fields[key].default


class AsrView(BaseModel):
    """``asr``: what the gateway's ASR link reads."""

    model_config = ConfigDict(extra="ignore")

    language: str | None = Field(default=_default(AsrSection, "language"), description="null: auto")
    device_languages: dict[str, str] = Field(default_factory=dict)
    heartbeat_timeout_ms: int = Field(
        default=_default(AsrSection, "heartbeat_timeout_ms"),
        ge=200,
        description="re-open a stream after this without a heartbeat from its owner",
    )
    replay_s: float = Field(
        default=_default(AsrSection, "replay_s"),
        ge=0,
        description="audio kept (from the owner's committed_seq) for a re-open",
    )

    def language_for(self, device_id: str) -> str:
        """The same rule as :meth:`AsrSection.language_for` (the asr service validates the
        codes; an unknown one is refused there, at start)."""
        lowered = {k.lower(): v.strip().lower() for k, v in self.device_languages.items()}
        return pick_language(lowered, (self.language or "auto").strip().lower(), device_id)


class WorkflowView(BaseModel):
    """``workflow``: the device -> group mapping (presence and events carry the group)."""

    model_config = ConfigDict(extra="ignore")

    device_groups: dict[str, str] = Field(default_factory=dict)

    def group_of(self, device_id: str) -> str:
        """The same rule as :meth:`WorkflowSection.group_of`."""
        return WorkflowSection(device_groups=self.device_groups).group_of(device_id)


class GatewaySettings(SupieSettings):
    server: ServerSection = Field(default_factory=ServerSection)
    meeting: MeetingSection = Field(default_factory=MeetingSection)
    asr: AsrView = Field(default_factory=AsrView)
    workflow: WorkflowView = Field(default_factory=WorkflowView)
    services: list[str] = Field(
        default_factory=lambda: ["gateway", "asr", "meeting", "workflow", "coding", "webhook"],
        description="services /healthz expects to answer",
    )
