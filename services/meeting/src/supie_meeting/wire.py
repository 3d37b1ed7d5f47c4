"""The meeting device messages, typed, and kept within a byte budget.

Every frame the service sends is built here from the models in
``supie_common.contracts.device`` and serialised with ``to_frame``. Transcript frames are sized by
bytes: a push that would not fit one bus message is split into several (:func:`push_frames`), a
tail that must fit one reply is trimmed to its newest items with ``truncated:true``
(:func:`tail_frame`), and a single item too large for any message has its text cut.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from supie_common.contracts import ErrorCode, to_frame
from supie_common.contracts.device import (
    MeetingError,
    MeetingFinalizeAck,
    MeetingSnippetAck,
    MeetingSummaryMessage,
    MeetingTranscriptPush,
    TranscriptItem,
)

from .models import Segment, SummaryRecord
from .snippets import cut_utf8

__all__ = [
    "FRAME_OVERHEAD",
    "embedded_size",
    "error_frame",
    "finalize_ack_frame",
    "push_frames",
    "snippet_ack_frame",
    "summary_frame",
    "tail_frame",
    "wire_item",
]

# Bytes of a transcript frame besides its items (type, phase, sessionId, flags, the envelope it
# travels in): generous, so that estimates never exceed the budget.
FRAME_OVERHEAD = 512


def wire_item(seg: Segment) -> TranscriptItem:
    """A segment as the firmware reads it: ``{ts, text, speakerId?, tag?}``."""
    return TranscriptItem(ts=seg.ts, text=seg.text, speaker_id=seg.speaker_id, tag=seg.tag)


def embedded_size(frame: str) -> int:
    """Bytes a frame takes once embedded as a JSON string in a bus payload (quotes escaped)."""
    return len(json.dumps(frame, ensure_ascii=False).encode())


def _item_size(item: TranscriptItem) -> int:
    return embedded_size(to_frame(item)) + 1  # + the comma


def _fit_item(item: TranscriptItem, budget: int) -> tuple[TranscriptItem, bool]:
    """The item, its text cut when the item alone would not fit ``budget``."""
    size = _item_size(item)
    if size + FRAME_OVERHEAD <= budget:
        return item, False
    # Escaping at most doubles a byte (\" \\ \n): keep half of what is left, UTF-8 safe.
    room = max(0, (budget - FRAME_OVERHEAD - (size - len(item.text.encode()))) // 2)
    return item.model_copy(update={"text": cut_utf8(item.text, room)}), True


def push_frames(
    meeting_id: str,
    segments: Sequence[Segment],
    total: int,
    *,
    budget: int,
    final: bool | None = None,
) -> list[str]:
    """The live push of ``segments`` as one frame, or several when one would exceed
    ``budget`` bytes (each a ``phase:"transcript"`` with the same ``totalSegments``). An empty
    push is one frame with no items."""
    chunks: list[list[TranscriptItem]] = [[]]
    truncated: list[bool] = [False]
    used = FRAME_OVERHEAD
    for seg in segments:
        item, cut = _fit_item(wire_item(seg), budget)
        size = _item_size(item)
        if chunks[-1] and used + size > budget:
            chunks.append([])
            truncated.append(False)
            used = FRAME_OVERHEAD
        chunks[-1].append(item)
        truncated[-1] = truncated[-1] or cut
        used += size
    return [
        to_frame(
            MeetingTranscriptPush(
                session_id=meeting_id,
                items=items,
                total_segments=total,
                final=final,
                truncated=True if cut else None,
            )
        )
        for items, cut in zip(chunks, truncated, strict=True)
    ]


def tail_frame(
    meeting_id: str,
    segments: Sequence[Segment],
    total: int,
    *,
    budget: int,
    resumed: bool | None = None,
    final: bool | None = None,
) -> str:
    """One transcript frame with the newest of ``segments`` that fit ``budget`` bytes;
    ``truncated:true`` when some were left out or cut."""
    kept: list[TranscriptItem] = []
    used = FRAME_OVERHEAD
    truncated = False
    for seg in reversed(segments):
        item, cut = _fit_item(wire_item(seg), budget)
        size = _item_size(item)
        if used + size > budget:
            truncated = True
            break
        kept.append(item)
        truncated = truncated or cut
        used += size
    kept.reverse()
    return to_frame(
        MeetingTranscriptPush(
            session_id=meeting_id,
            items=kept,
            total_segments=total,
            resumed=resumed,
            final=final,
            truncated=True if truncated else None,
        )
    )


def summary_frame(
    meeting_id: str,
    record: SummaryRecord,
    *,
    checkpoint: bool = False,
    idempotent: bool = False,
    redelivered: bool = False,
) -> str:
    s = record.summary
    return to_frame(
        MeetingSummaryMessage(
            session_id=meeting_id,
            title=s.title,
            duration=s.duration,
            bullets=s.bullets,
            decisions=s.decisions,
            actions=s.actions,
            risks=s.risks,
            next_steps=s.next_steps,
            checkpoint=checkpoint,
            bullets_length=len(s.bullets),
            source_segments=record.source_segments,
            idempotent=True if idempotent else None,
            redelivered=True if redelivered else None,
        )
    )


def finalize_ack_frame(
    meeting_id: str, started_at: int, pending: int, *, idempotent: bool = False
) -> str:
    return to_frame(
        MeetingFinalizeAck(
            session_id=meeting_id,
            started_at=started_at,
            pending_count=pending,
            idempotent=True if idempotent else None,
        )
    )


def snippet_ack_frame(
    meeting_id: str,
    *,
    accepted: int = 0,
    duplicates: int = 0,
    dropped: int = 0,
    reason: str | None = None,
    ignored: bool = False,
) -> str:
    if ignored:
        return to_frame(MeetingSnippetAck(session_id=meeting_id, ignored=True, reason="finalizing"))
    return to_frame(
        MeetingSnippetAck(
            session_id=meeting_id,
            accepted=accepted,
            duplicates=duplicates or None,
            dropped=dropped or None,
            reason=reason if dropped else None,
        )
    )


def error_frame(code: ErrorCode, message: str, *, phase: str | None = None) -> str:
    return to_frame(MeetingError(code=code, message=message, phase=phase))
