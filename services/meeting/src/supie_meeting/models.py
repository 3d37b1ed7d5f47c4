"""Typed records of the meeting service: what lives in Redis and what the archive holds.

- :data:`Segment`: one transcript line (the bus contract's ``MeetingSegment``);
- :class:`MeetingMeta`: a live meeting's Redis hash, parsed;
- :class:`SummaryRecord`: the committed final summary, with the fence of the generation that
  wrote it (the one summary the badge, the archive, the event and the API all carry);
- :class:`FinalizeMetrics`: the metrics line and the event's ``metrics``;
- :class:`ArchivedMeeting`, :class:`SegmentPreview`, :class:`Shard`, :class:`IndexEntry`: the
  archive's files (the seed's layout, camelCase on disk).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias, cast

from pydantic import BaseModel, ConfigDict, Field
from supie_common.contracts import MeetingSegment, MeetingStatus, Summary

__all__ = [
    "ArchivedMeeting",
    "FINALIZE_STEPS",
    "FinalizeMetrics",
    "IndexEntry",
    "MeetingMeta",
    "Segment",
    "SegmentPreview",
    "Shard",
    "SummaryRecord",
]

Segment: TypeAlias = MeetingSegment

# Steps of a finalize after its summary is committed, each marked in the meta hash once done, so
# a generation that takes over (or a stalled one that wakes up) does not repeat them.
FINALIZE_STEPS = ("summary_sent", "archived", "metrics_logged", "event_published")


def _int(raw: dict[str, str], key: str) -> int:
    try:
        return int(raw.get(key) or 0)
    except ValueError:
        return 0


@dataclass(frozen=True)
class MeetingMeta:
    meeting_id: str
    device_id: str
    status: MeetingStatus
    started_at: int
    finalize_at: int
    finalize_source: str
    finalize_reason: str
    checkpoints: int
    last_checkpoint_at: int
    last_segment_at: int
    generations: int
    commits: int
    steps: frozenset[str]
    summary_delivered: bool
    redelivered_by: str

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> MeetingMeta | None:
        status = raw.get("status")
        if status not in ("active", "finalizing", "finalized"):
            return None
        return cls(
            meeting_id=raw.get("meeting_id", ""),
            device_id=raw.get("device_id", ""),
            status=cast(MeetingStatus, status),
            started_at=_int(raw, "started_at"),
            finalize_at=_int(raw, "finalize_at"),
            finalize_source=raw.get("finalize_source", ""),
            finalize_reason=raw.get("finalize_reason", ""),
            checkpoints=_int(raw, "checkpoints"),
            last_checkpoint_at=_int(raw, "last_checkpoint_at"),
            last_segment_at=_int(raw, "last_segment_at"),
            generations=_int(raw, "generations"),
            commits=_int(raw, "commits"),
            steps=frozenset(s for s in FINALIZE_STEPS if raw.get(s) == "1"),
            summary_delivered=raw.get("summary_delivered") == "1",
            redelivered_by=raw.get("redelivered_by", ""),
        )

    @property
    def ended_at(self) -> int:
        return self.finalize_at or self.started_at

    @property
    def duration_ms(self) -> int:
        return max(self.ended_at - self.started_at, 0)


class _Record(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class SummaryRecord(_Record):
    """The final summary as committed in Redis (compare-and-set on ``fence``)."""

    summary: Summary
    source_segments: int
    source: Literal["llm", "local"] = "local"
    llm_elapsed_ms: int = 0
    elapsed_ms: int = 0
    fallback_reason: str | None = None
    fence: int = 0
    committed_at: int = 0


class FinalizeMetrics(_Record):
    """One finalize, as ``metrics.log`` and the ``meeting.finalized`` event report it."""

    segments_count: int = Field(default=0, alias="segmentsCount")
    checkpoint_count: int = Field(default=0, alias="checkpointCount")
    llm_elapsed_ms: int = Field(default=0, alias="llmElapsedMs")
    summary_elapsed_ms: int = Field(default=0, alias="summaryElapsedMs")
    summary_source: str = Field(default="local", alias="summarySource")
    empty_bullets: bool = Field(default=True, alias="emptyBullets")
    bullets_length: int = Field(default=0, alias="bulletsLength")
    finalize_source: str = Field(default="", alias="finalizeSource")
    reason: str = Field(default="requested", description="requested | abandoned")
    fence: int = 0
    generations: int = 0

    def line(self, session_id: str) -> str:
        fields = self.model_dump(by_alias=True)
        return f"[Meeting Metrics] sessionId={session_id}, " + ", ".join(
            f"{k}={v}" for k, v in fields.items()
        )


class SegmentPreview(_Record):
    """``segments`` of a main file whose segments live in shards."""

    preview: Literal[True] = True
    total_count: int = Field(alias="totalCount")
    shard_count: int = Field(alias="shardCount")
    segments: list[Segment]


class ArchivedMeeting(_Record):
    """``<sessionId>.json``: the meeting, its summary and its segments (inline or a preview)."""

    session_id: str = Field(alias="sessionId")
    device_id: str = Field(alias="deviceId")
    started_at: int = Field(alias="startedAt")
    ended_at: int = Field(alias="endedAt")
    duration_ms: int = Field(alias="durationMs")
    summary: Summary
    metrics: FinalizeMetrics = Field(default_factory=FinalizeMetrics)
    bullets_length: int = Field(default=0, alias="bulletsLength")
    source_segments: int = Field(default=0, alias="sourceSegments")
    segments_count: int = Field(default=0, alias="segmentsCount")
    fence: int = 0
    segments: list[Segment] | SegmentPreview = Field(default_factory=list)

    def inline_segments(self) -> list[Segment]:
        """The segments in the main file (all of them, or the preview's first ones)."""
        segs = self.segments
        return segs.segments if isinstance(segs, SegmentPreview) else segs

    @property
    def total_segments(self) -> int:
        segs = self.segments
        return segs.total_count if isinstance(segs, SegmentPreview) else len(segs)

    @property
    def shard_count(self) -> int:
        segs = self.segments
        return segs.shard_count if isinstance(segs, SegmentPreview) else 0


class Shard(_Record):
    """``segments/<sessionId>_shard_K.json``."""

    session_id: str = Field(alias="sessionId")
    shard: int
    offset: int
    segments: list[Segment]


class IndexEntry(_Record):
    """One line of ``index.json``."""

    session_id: str = Field(alias="sessionId")
    device_id: str | None = Field(default=None, alias="deviceId")
    title: str = ""
    started_at: int | None = Field(default=None, alias="startedAt")
    ended_at: int | None = Field(default=None, alias="endedAt")
    duration_ms: int | None = Field(default=None, alias="durationMs")
    bullets_length: int = Field(default=0, alias="bulletsLength")
    segments_count: int = Field(default=0, alias="segmentsCount")
    preview: bool = False
    total_count: int = Field(default=0, alias="totalCount")
    shard_count: int = Field(default=0, alias="shardCount")

    @property
    def sort_key(self) -> tuple[int, str]:
        return (self.ended_at or self.started_at or 0, self.session_id)
