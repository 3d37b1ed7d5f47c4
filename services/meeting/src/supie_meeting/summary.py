"""The meeting summary contract (SPEC §5) and the normaliser every producer's output goes through.

Whatever a producer returns (an LLM's JSON, the local summarizer's lists, nothing at all), the
device always gets exactly seven fields, arrays never null, limits and dedup applied.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field

__all__ = [
    "Summary",
    "SUMMARY_FIELDS",
    "LIST_FIELDS",
    "MAX_TITLE",
    "MAX_BULLETS",
    "MAX_ITEMS",
    "format_duration",
    "normalize_summary",
    "is_weak",
]

MAX_TITLE = 30
MAX_BULLETS = 6
MAX_ITEMS = 4
MAX_ITEM_CHARS = 120
LIST_FIELDS = ("bullets", "decisions", "actions", "risks", "nextSteps")
SUMMARY_FIELDS = ("title", "duration", *LIST_FIELDS)
_DURATION = re.compile(r"^\d{2,}:[0-5]\d:[0-5]\d$")
_SPACE = re.compile(r"\s+")
_DEDUP_STRIP = re.compile(r"[\s\W_]+", re.UNICODE)


class Summary(BaseModel):
    """Seven fields, always present. Extra wire fields (checkpoint, ...) are added on send."""

    title: str = Field(max_length=MAX_TITLE)
    duration: str = Field(pattern=_DURATION.pattern)
    bullets: list[str] = Field(default_factory=list, max_length=MAX_BULLETS)
    decisions: list[str] = Field(default_factory=list, max_length=MAX_ITEMS)
    actions: list[str] = Field(default_factory=list, max_length=MAX_ITEMS)
    risks: list[str] = Field(default_factory=list, max_length=MAX_ITEMS)
    nextSteps: list[str] = Field(default_factory=list, max_length=MAX_ITEMS)  # noqa: N815


def format_duration(ms: int) -> str:
    """``HH:MM:SS`` (hours may exceed 99 for absurd inputs; never negative)."""
    total = max(0, int(ms)) // 1000
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


def _clean_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        # {"owner": "Ann", "task": "ship"} style items: keep their text values, in order.
        value = " ".join(str(v) for v in value.values() if isinstance(v, str | int | float))
    elif not isinstance(value, str):
        value = str(value)
    text = _SPACE.sub(" ", value).strip().lstrip("-•*· ").strip()
    if len(text) > MAX_ITEM_CHARS:
        text = text[: MAX_ITEM_CHARS - 1].rstrip() + "…"
    return text


def _clean_list(value: Any, limit: int) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        return []
    out: list[str] = []
    seen: set[str] = set()
    for item in value:
        text = _clean_text(item)
        key = _DEDUP_STRIP.sub("", text.lower())
        if not text or not key or key in seen:
            continue
        seen.add(key)
        out.append(text)
        if len(out) >= limit:
            break
    return out


def _clean_title(value: Any, fallback: str) -> str:
    title = _clean_text(value) or fallback
    if len(title) > MAX_TITLE:
        title = title[: MAX_TITLE - 1].rstrip() + "…"
    return title


def normalize_summary(
    raw: Any,
    duration_ms: int,
    *,
    min_duration_ms: int = 5000,
    fallback_title: str = "Meeting notes",
) -> Summary:
    """Coerce any producer output into the contract: strings only, deduplicated, capped."""
    data = raw if isinstance(raw, dict) else {}
    limits = {"bullets": MAX_BULLETS}
    lists = {f: _clean_list(data.get(f), limits.get(f, MAX_ITEMS)) for f in LIST_FIELDS}
    if "nextSteps" not in data and "next_steps" in data:  # a common LLM spelling
        lists["nextSteps"] = _clean_list(data.get("next_steps"), MAX_ITEMS)
    return Summary(
        title=_clean_title(data.get("title"), fallback_title),
        duration=format_duration(max(duration_ms, min_duration_ms)),
        **lists,
    )


def is_weak(summary: Summary, source_segments: int) -> bool:
    """A summary not worth keeping over the local one: nothing in it although people spoke."""
    if source_segments == 0:
        return False
    return not summary.bullets and not any(getattr(summary, f) for f in LIST_FIELDS[1:])
