"""The meeting summary contract (SPEC §5): exactly seven fields, limits included.

Producers (an LLM, the local summarizer) go through the meeting service's normaliser, which
makes any output fit this model; the model itself is what the badge, the archive, the HTTP API
and the webhook all carry.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "LIST_FIELDS",
    "MAX_BULLETS",
    "MAX_ITEMS",
    "MAX_TITLE",
    "SUMMARY_FIELDS",
    "Summary",
]

MAX_TITLE = 30
MAX_BULLETS = 6
MAX_ITEMS = 4
LIST_FIELDS = ("bullets", "decisions", "actions", "risks", "nextSteps")
SUMMARY_FIELDS = ("title", "duration", *LIST_FIELDS)
DURATION_PATTERN = re.compile(r"^\d{2,}:[0-5]\d:[0-5]\d$")


class Summary(BaseModel):
    """Seven fields, always present. Extra wire fields (checkpoint, ...) are added on send."""

    model_config = ConfigDict(populate_by_name=True)

    title: str = Field(max_length=MAX_TITLE)
    duration: str = Field(pattern=DURATION_PATTERN.pattern, description="HH:MM:SS")
    bullets: list[str] = Field(default_factory=list, max_length=MAX_BULLETS)
    decisions: list[str] = Field(default_factory=list, max_length=MAX_ITEMS)
    actions: list[str] = Field(default_factory=list, max_length=MAX_ITEMS)
    risks: list[str] = Field(default_factory=list, max_length=MAX_ITEMS)
    next_steps: list[str] = Field(default_factory=list, max_length=MAX_ITEMS, alias="nextSteps")
