"""A finalized meeting as a file: Markdown (title, time, device, the summary's sections, the
transcript), plain text and WebVTT transcripts with timestamps, or JSON (everything).

Pure functions over an :class:`~.models.ArchivedMeeting`, its full segment list and the speaker
labels in force; timestamps are relative to the meeting's start (``HH:MM:SS``). A WebVTT cue runs
until the next segment starts (at most :data:`CUE_MAX_MS`, at least :data:`CUE_MIN_MS`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from .models import ArchivedMeeting, Segment

__all__ = [
    "CUE_MAX_MS",
    "CUE_MIN_MS",
    "EXPORT_FORMATS",
    "clock",
    "render_export",
    "vtt_time",
]

CUE_MAX_MS = 8000
CUE_MIN_MS = 500
EXPORT_FORMATS: dict[str, str] = {
    "md": "text/markdown; charset=utf-8",
    "txt": "text/plain; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
    "json": "application/json; charset=utf-8",
}
_SECTIONS = (
    ("bullets", "Summary"),
    ("decisions", "Decisions"),
    ("actions", "Actions"),
    ("risks", "Risks"),
    ("next_steps", "Next steps"),
)


def clock(ms: int) -> str:
    """``HH:MM:SS`` of a non-negative offset."""
    s = max(ms, 0) // 1000
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def vtt_time(ms: int) -> str:
    """``HH:MM:SS.mmm``, as WebVTT wants it."""
    ms = max(ms, 0)
    return f"{clock(ms)}.{ms % 1000:03d}"


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _speaker(seg: Segment, labels: Mapping[str, str]) -> str:
    sid = seg.speaker_id or ""
    return labels.get(sid) or sid or "?"


def _offset(seg: Segment, started_at: int) -> int:
    return max(seg.ts - started_at, 0)


def _markdown(main: ArchivedMeeting, segments: Sequence[Segment], labels: Mapping[str, str]) -> str:
    s = main.summary
    out = [
        f"# {_one_line(s.title) or main.session_id}",
        "",
        f"- **Time:** {_when(main.started_at)} – {_when(main.ended_at)}",
        f"- **Duration:** {s.duration}",
        f"- **Device:** {main.device_id}",
        f"- **Session:** {main.session_id}",
        "",
    ]
    for attr, heading in _SECTIONS:
        items: list[str] = getattr(s, attr)
        out.append(f"## {heading}")
        out.append("")
        out.extend(f"- {_one_line(i)}" for i in items) if items else out.append("_none_")
        out.append("")
    out.append("## Transcript")
    out.append("")
    for seg in segments:
        stamp = clock(_offset(seg, main.started_at))
        out.append(f"- `{stamp}` **{_speaker(seg, labels)}:** {_one_line(seg.text)}")
    return "\n".join(out).rstrip() + "\n"


def _text(main: ArchivedMeeting, segments: Sequence[Segment], labels: Mapping[str, str]) -> str:
    s = main.summary
    out = [
        _one_line(s.title) or main.session_id,
        f"{_when(main.started_at)}  ({s.duration})  device {main.device_id}",
        "",
    ]
    for seg in segments:
        stamp = clock(_offset(seg, main.started_at))
        out.append(f"[{stamp}] {_speaker(seg, labels)}: {_one_line(seg.text)}")
    return "\n".join(out).rstrip() + "\n"


def _vtt_escape(text: str) -> str:
    # a cue payload must not hold "-->" nor raw markup characters
    text = _one_line(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text or "…"


def _vtt(main: ArchivedMeeting, segments: Sequence[Segment], labels: Mapping[str, str]) -> str:
    out = ["WEBVTT", ""]
    starts = [_offset(seg, main.started_at) for seg in segments]
    floor = 0
    for i, seg in enumerate(segments):
        start = max(starts[i], floor)  # cues in order even if clocks disagree
        nxt = starts[i + 1] if i + 1 < len(segments) else start + CUE_MAX_MS
        end = min(max(nxt, start + CUE_MIN_MS), start + CUE_MAX_MS)
        floor = start
        voice = _vtt_escape(_speaker(seg, labels)).replace(" ", "\u00a0")
        out += [str(i + 1), f"{vtt_time(start)} --> {vtt_time(end)}"]
        out += [f"<v {voice}>{_vtt_escape(seg.text)}", ""]
    return "\n".join(out)


def _json(main: ArchivedMeeting, segments: Sequence[Segment], labels: Mapping[str, str]) -> str:
    body: dict[str, Any] = {
        "sessionId": main.session_id,
        "deviceId": main.device_id,
        "startedAt": main.started_at,
        "endedAt": main.ended_at,
        "durationMs": main.duration_ms,
        "summary": main.summary.model_dump(by_alias=True),
        "speakers": dict(labels),
        "segments": [
            {
                **seg.model_dump(by_alias=True, exclude_none=True),
                "offsetMs": _offset(seg, main.started_at),
                "speaker": _speaker(seg, labels),
            }
            for seg in segments
        ],
    }
    return json.dumps(body, ensure_ascii=False, indent=1)


_RENDER = {"md": _markdown, "txt": _text, "vtt": _vtt, "json": _json}


def render_export(
    fmt: str, main: ArchivedMeeting, segments: Sequence[Segment], labels: Mapping[str, str]
) -> str:
    """The meeting in ``fmt`` (one of :data:`EXPORT_FORMATS`)."""
    return _RENDER[fmt](main, segments, labels)
