"""The meeting API operations behind the web console (``MEETING_API``):

- ``search {q?, deviceId?, fromTs?, toTs?, limit?, offset?}``: the search index;
- ``active``: meetings in progress (device, started, status, segments so far), from Redis;
- ``live {sessionId, offset?, limit?}``: an active meeting's transcript so far (``status``
  ``archived`` and no items for one finalized long ago);
- ``export {sessionId, format}``: a finalized meeting as md / txt / vtt / json (a text body);
- ``speakers {sessionId}`` and ``rename_speaker {sessionId, speakerId, label, scope?}``.

Parameters arrive as query strings; a bad one is a 400 naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from redis.asyncio import Redis
from supie_common.contracts import ApiReply

from .api import BadParam, int_param, session_id_param
from .export import EXPORT_FORMATS, render_export
from .keys import MeetingKeys
from .models import MeetingMeta, Segment
from .reader import ArchiveReader
from .search import COUNT_CAP, MAX_QUERY_CHARS, SearchIndex, SearchQuery
from .speakers import MAX_LABEL_CHARS, MAX_SPEAKER_ID_CHARS, SpeakerLabels
from .state import MeetingState

__all__ = ["CONSOLE_OPS", "ConsoleApi"]

CONSOLE_OPS = frozenset({"search", "active", "live", "export", "speakers", "rename_speaker"})
MAX_ACTIVE = 500


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _text_param(params: dict[str, Any], name: str, limit: int) -> str | None:
    raw = params.get(name)
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise BadParam(f"{name}: expected a string")
    if len(raw) > limit:
        raise BadParam(f"{name}: at most {limit} characters")
    return raw


class ConsoleApi:
    def __init__(
        self,
        *,
        reader: ArchiveReader,
        state: MeetingState,
        redis: Redis,
        index: SearchIndex | None,
        max_bytes: Callable[[], int],
    ) -> None:
        self.reader = reader
        self.state = state
        self.redis = redis
        self.index = index
        self.speakers = SpeakerLabels(redis)
        self.max_bytes = max_bytes

    async def handle(self, op: str, params: dict[str, Any]) -> ApiReply:
        if op == "search":
            return await self._search(params)
        if op == "active":
            return await self._active()
        if op == "live":
            return await self._live(params)
        if op == "export":
            return await self._export(params)
        if op == "speakers":
            return await self._speakers(params)
        if op == "rename_speaker":
            return await self._rename(params)
        raise BadParam(f"op: unknown operation {op!r}")

    # -- search --------------------------------------------------------------------------------
    async def _search(self, params: dict[str, Any]) -> ApiReply:
        q = _text_param(params, "q", MAX_QUERY_CHARS) or ""
        device = _text_param(params, "deviceId", 128)
        limit = int_param(params, "limit", 20, low=1, high=100)
        offset = int_param(params, "offset", 0, low=0, high=10_000)
        from_ts = int_param(params, "fromTs", None, low=0)
        to_ts = int_param(params, "toTs", None, low=0)
        assert limit is not None and offset is not None
        prefix = device.strip() if device else ""
        query = SearchQuery(q, prefix or None, from_ts, to_ts, limit, offset)
        if self.index is None:
            return ApiReply(status=503, success=False, error="search unavailable on this replica")
        hits, total = await self.index.search(query)
        data = {
            "items": [h.as_json() for h in hits],
            "total": total,
            "totalCapped": bool(q.strip()) and total >= COUNT_CAP,  # matches: "1000+"
            "offset": offset,
            "limit": limit,
            "q": q,
        }
        if not self.index.ready.is_set():
            data["indexing"] = True  # the first sync is still running: more may match soon
        return ApiReply(data=data)

    # -- live state ----------------------------------------------------------------------------
    async def _active(self) -> ApiReply:
        live = (await self.state.live_meetings())[:MAX_ACTIVE]
        pipe = self.redis.pipeline(transaction=False)
        for m, _ in live:
            pipe.hgetall(MeetingKeys.meta(m))
            pipe.llen(MeetingKeys.segments(m))
        raw = await pipe.execute() if live else []
        items: list[dict[str, Any]] = []
        for i, (m, _) in enumerate(live):
            meta = MeetingMeta.from_hash({_s(k): _s(v) for k, v in (raw[2 * i] or {}).items()})
            if meta is None or meta.status == "finalized":
                continue
            items.append(
                {
                    "sessionId": m,
                    "deviceId": meta.device_id,
                    "status": meta.status,
                    "startedAt": meta.started_at,
                    "segmentsCount": int(raw[2 * i + 1] or 0),
                    "lastSegmentAt": meta.last_segment_at or None,
                }
            )
        items.sort(key=lambda e: e["startedAt"], reverse=True)
        return ApiReply(data={"items": items})

    async def _live(self, params: dict[str, Any]) -> ApiReply:
        sid = session_id_param(params)
        offset = int_param(params, "offset", 0, low=0)
        limit = int_param(params, "limit", 200, low=1, high=500)
        assert offset is not None and limit is not None
        meta = await self.state.meta(sid)
        if meta is None:
            # No live state (finalized a while ago): say so, so the page asks the archive
            # without a failed request first.
            main = await self.reader.store.read_main(sid)
            if main is None:
                return ApiReply(status=404, success=False, error="meeting not found")
            return ApiReply(
                data={
                    "sessionId": sid,
                    "deviceId": main.device_id,
                    "status": "archived",
                    "startedAt": main.started_at,
                    "items": [],
                    "total": main.total_segments,
                    "offset": offset,
                    "nextOffset": None,
                }
            )
        total = await self.state.segment_count(sid)
        budget = self.max_bytes() - 1024
        items: list[dict[str, Any]] = []
        used = 0
        for seg in await self.state.segments(sid, offset, offset + limit - 1):
            item = seg.model_dump(by_alias=True, exclude_none=True)
            size = len(seg.text.encode()) * 2 + 128
            if items and used + size > budget:
                break
            items.append(item)
            used += size
        nxt = offset + len(items)
        return ApiReply(
            data={
                "sessionId": sid,
                "deviceId": meta.device_id,
                "status": meta.status,
                "startedAt": meta.started_at,
                "items": items,
                "total": total,
                "offset": offset,
                "nextOffset": nxt if nxt < total else None,
            }
        )

    # -- archive -------------------------------------------------------------------------------
    async def _segments(self, sid: str) -> list[Segment]:
        main = await self.reader.main(sid)
        if main.shard_count == 0:
            return main.inline_segments()
        out: list[Segment] = []
        for k in range(main.shard_count):
            shard = await self.reader.store.read_shard(sid, k)
            if shard is None:  # a lost shard: the preview still has the first ones
                if k == 0:
                    out.extend(main.inline_segments())
                continue
            out.extend(shard.segments)
        return out

    async def _export(self, params: dict[str, Any]) -> ApiReply:
        sid = session_id_param(params)
        fmt = params.get("format") or "md"
        if fmt not in EXPORT_FORMATS:
            raise BadParam(f"format: expected one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
        main = await self.reader.store.read_main(sid)
        if main is None:
            status = await self.state.status(sid)
            if status in ("active", "finalizing"):
                return ApiReply(
                    status=409, success=False, error=f"meeting is {status}: export once finalized"
                )
            return ApiReply(status=404, success=False, error="meeting not found")
        segments = await self._segments(sid)
        labels = await self.speakers.labels(sid)
        body = render_export(str(fmt), main, segments, labels)
        if len(body.encode()) > self.max_bytes() - 1024:
            return ApiReply(
                status=413,
                success=False,
                error="export too large for one reply: use the paged transcript API",
            )
        return ApiReply(data=body, content_type=EXPORT_FORMATS[str(fmt)])

    # -- speakers ------------------------------------------------------------------------------
    async def _speaker_ids(self, sid: str) -> tuple[list[str], str | None]:
        """Speaker ids of a meeting (archived, else live) and its device."""
        main = await self.reader.store.read_main(sid)
        if main is not None:
            segments = await self._segments(sid)
            device: str | None = main.device_id
        else:
            meta = await self.state.meta(sid)
            if meta is None:
                return [], None
            segments = await self.state.segments(sid)
            device = meta.device_id
        seen: dict[str, None] = {}
        for seg in segments:
            if seg.speaker_id:
                seen.setdefault(seg.speaker_id, None)
        return list(seen), device

    async def _speakers(self, params: dict[str, Any]) -> ApiReply:
        sid = session_id_param(params)
        ids, device = await self._speaker_ids(sid)
        if device is None:
            return ApiReply(status=404, success=False, error="meeting not found")
        own, every = await self.speakers.scoped(sid)
        items = []
        for speaker in dict.fromkeys([*ids, *own]):
            if speaker in own:
                label, scope = own[speaker], "meeting"
            elif speaker in every:
                label, scope = every[speaker], "all"
            else:
                label, scope = speaker, None
            items.append({"speakerId": speaker, "label": label, "scope": scope})
        return ApiReply(data={"sessionId": sid, "deviceId": device, "items": items})

    async def _rename(self, params: dict[str, Any]) -> ApiReply:
        sid = session_id_param(params)
        speaker = _text_param(params, "speakerId", MAX_SPEAKER_ID_CHARS)
        if not speaker or not speaker.strip():
            raise BadParam("speakerId: required")
        label = _text_param(params, "label", MAX_LABEL_CHARS)
        if label is None:
            raise BadParam("label: required (empty to remove)")
        raw_scope = params.get("scope") or "meeting"
        if raw_scope not in ("meeting", "all"):
            raise BadParam(f"scope: expected meeting or all, got {str(raw_scope)[:20]!r}")
        scope: Literal["meeting", "all"] = "all" if raw_scope == "all" else "meeting"
        ids, device = await self._speaker_ids(sid)
        if device is None:
            return ApiReply(status=404, success=False, error="meeting not found")
        label = " ".join(label.split())
        await self.speakers.rename(sid, speaker.strip(), label, scope)
        return ApiReply(
            data={"sessionId": sid, "speakerId": speaker.strip(), "label": label, "scope": scope}
        )
