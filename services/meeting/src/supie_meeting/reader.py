"""The read side of the archive for the HTTP API, on any :class:`~.archive.ArchiveStore`:
recent meetings, one meeting's detail, transcript pages sized by items *and* bytes."""

from __future__ import annotations

from typing import Any

from .archive import SHARD_SIZE, ArchiveStore
from .models import ArchivedMeeting, Segment

__all__ = ["ArchiveReader", "NotFound"]


class NotFound(LookupError):
    pass


def _segment_json(seg: Segment) -> dict[str, Any]:
    return seg.model_dump(by_alias=True, exclude_none=True)


def _segment_bytes(seg: Segment) -> int:
    # UTF-8 text plus the keys and punctuation around it: an upper bound of its JSON size
    return len(seg.text.encode()) * 2 + len(seg.tag or "") + len(seg.speaker_id or "") + 96


class ArchiveReader:
    def __init__(self, store: ArchiveStore) -> None:
        self.store = store

    async def main(self, session_id: str) -> ArchivedMeeting:
        main = await self.store.read_main(session_id)
        if main is None:
            raise NotFound(session_id)
        return main

    async def recent(
        self, limit: int, device_prefix: str | None, from_ts: int | None, to_ts: int | None
    ) -> list[dict[str, Any]]:
        prefix = device_prefix.lower() if device_prefix else None
        out = []
        for e in await self.store.read_index():
            ended = e.ended_at or e.started_at or 0
            if prefix and not (e.device_id or "").lower().startswith(prefix):
                continue
            if from_ts is not None and ended < from_ts:
                continue
            if to_ts is not None and ended > to_ts:
                continue
            out.append(e)
        out.sort(key=lambda e: e.sort_key, reverse=True)
        return [e.model_dump(by_alias=True, exclude_none=True) for e in out[:limit]]

    async def detail(self, session_id: str, preview: int) -> dict[str, Any]:
        main = await self.main(session_id)
        return {
            "sessionId": session_id,
            "summary": main.summary.model_dump(by_alias=True),
            "segmentsCount": main.total_segments,
            "deviceId": main.device_id,
            "startedAt": main.started_at,
            "endedAt": main.ended_at,
            "durationMs": main.duration_ms,
            "metrics": main.metrics.model_dump(by_alias=True),
            "transcriptPreview": [_segment_json(s) for s in main.inline_segments()[:preview]],
            "hasShards": main.shard_count > 0,
        }

    async def transcript(
        self, session_id: str, offset: int, limit: int, max_bytes: int
    ) -> dict[str, Any]:
        """Items ``offset..offset+limit``, stopping early when the page would exceed
        ``max_bytes`` (then ``truncated:true``; ``nextOffset`` says where to go on)."""
        main = await self.main(session_id)
        total = main.total_segments
        end = min(offset + limit, total)
        items: list[Segment] = []
        used = 0
        truncated = False
        inline = main.inline_segments()

        def take(chunk: list[Segment], lo: int, hi: int) -> bool:
            nonlocal used, truncated
            for seg in chunk[lo:hi]:
                size = _segment_bytes(seg)
                if items and used + size > max_bytes:
                    truncated = True
                    return False
                items.append(seg)
                used += size
            return True

        if main.shard_count == 0:
            take(inline, offset, end)
        else:
            k = offset // SHARD_SIZE
            while offset + len(items) < end and k < main.shard_count:
                base = k * SHARD_SIZE
                shard = await self.store.read_shard(session_id, k)
                # a lost shard: the preview still covers the first segments
                chunk = shard.segments if shard is not None else inline[base : base + SHARD_SIZE]
                lo = offset + len(items) - base
                if not take(chunk, lo, lo + end - offset - len(items)) or len(chunk) < SHARD_SIZE:
                    break
                k += 1
        next_offset = offset + len(items)
        page: dict[str, Any] = {
            "items": [_segment_json(s) for s in items],
            "total": total,
            "offset": offset,
            "limit": limit,
            "nextOffset": next_offset if next_offset < total else None,
        }
        if truncated:
            page["truncated"] = True
        return page
