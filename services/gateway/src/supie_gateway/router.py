"""Mode routing, in one place (SPEC §2): a pure function from (connection mode, final
transcript) to what happens next. Table-tested in ``tests/test_router.py``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from supie_common.contracts import Subjects, Transcript

__all__ = [
    "Publish",
    "ToDevice",
    "SwitchMode",
    "FinalizeMeeting",
    "Action",
    "route_transcript",
    "is_working_mode_shortcut",
    "is_finalize_keyword",
]


@dataclass(frozen=True)
class Publish:
    subject: str
    transcript: Transcript


@dataclass(frozen=True)
class ToDevice:
    message: dict[str, Any] = field(hash=False)


@dataclass(frozen=True)
class SwitchMode:
    mode: str


@dataclass(frozen=True)
class FinalizeMeeting:
    source: str = "voice"


Action = Publish | ToDevice | SwitchMode | FinalizeMeeting

_WORKING_SHORTCUTS = (
    "进入工作模式",
    "切换到工作模式",
    "工作模式",
    "working mode",
    "enter working mode",
    "switch to working mode",
    "start working mode",
)
_FINALIZE_KEYWORDS = (
    "结束会议",
    "停止录制",
    "开始总结",
    "出个纪要",
    "生成纪要",
    "结束一下会议",
    "结束本次会议",
    "finalize meeting",
    "finalise meeting",
    "stop recording",
    "start summary",
    "make a summary",
    "generate minutes",
    "end the meeting",
    "end meeting",
)
_PUNCT = re.compile(r"[\s,.!?;:，。！？；：、\"'“”‘’]+")


def _norm(text: str) -> str:
    return _PUNCT.sub(" ", text.lower()).strip()


def is_working_mode_shortcut(text: str) -> bool:
    norm = _norm(text)
    return any(k in norm for k in _WORKING_SHORTCUTS)


def is_finalize_keyword(text: str) -> bool:
    norm = _norm(text)
    return any(k in norm for k in _FINALIZE_KEYWORDS)


def _stt(t: Transcript, **extra: Any) -> ToDevice:
    return ToDevice({"type": "stt", "text": t.text, "session_id": t.session_id, **extra})


def _transcription(t: Transcript) -> ToDevice:
    return ToDevice(
        {
            "type": "audio",
            "event": "transcription",
            "text": t.text,
            "ts": t.ts_ms,
            "session_id": t.session_id,
        }
    )


def route_transcript(
    mode: str | None, t: Transcript, *, meeting_disable_tts: bool = True
) -> list[Action]:
    """What to do with one transcript (final ASR utterance or typed text) in ``mode``.

    - any mode: "进入工作模式" / "working mode" switches to working mode (no echo to chat);
    - meeting: to the meeting service, never to chat; finalize keywords finalize; ``stt`` echo
      only when ``meeting.disable_tts`` is false;
    - working: to intent recognition (never dropped) plus the ``stt`` line;
    - coding: to the coding service;
    - otherwise: back to the device as ``stt``.
    ASR utterances also get the ``audio``/``transcription`` push. Partial hypotheses (when the
    asr service sends them) are only shown as ``stt`` with ``partial:true``, outside meetings.
    """
    text = t.text.strip()
    if not text:
        return []
    if t.kind == "partial":  # a hypothesis while speaking: shown, never acted on
        return [] if mode == "meeting" else [_stt(t, partial=True)]
    actions: list[Action] = []
    if t.source == "asr":
        actions.append(_transcription(t))
    if mode != "working" and is_working_mode_shortcut(text):
        actions.append(_stt(t, intent="mode_switch", target_mode="working"))
        actions.append(SwitchMode("working"))
        return actions
    if mode == "meeting":
        if is_finalize_keyword(text):
            actions.append(FinalizeMeeting("voice"))
            return actions
        actions.append(Publish(Subjects.MEETING_TRANSCRIPT, t))
        if not meeting_disable_tts:
            actions.append(_stt(t))
    elif mode == "working":
        actions.append(_stt(t))
        actions.append(Publish(Subjects.WORKFLOW_INTENT, t))
    elif mode == "coding":
        actions.append(Publish(Subjects.CODING_TEXT, t))
    else:
        actions.append(_stt(t))
    return actions
