"""Voice (and typed) commands the gateway's router acts on: finalize in meeting mode, a mode
switch in any mode. Working-mode intents (assign / complete / refresh) are the workflow
service's: its finals go there whole.

The phrase table is ``supie_common.commands`` (one table for meeting and working mode, written
alongside this module); until it is on main, a small stand-in with the same rules answers: the
utterance *is* the command (keyword at its start or end, short), with no negation before it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from supie_common.contracts import Mode

__all__ = ["VoiceCommand", "parse_voice_command"]


@dataclass(frozen=True, slots=True)
class VoiceCommand:
    intent: str  # "finalize" | "mode_switch"
    target_mode: Mode | None = None
    keyword: str = ""


_MAX_EXTRA_CJK = 6  # characters around the keyword in a short Chinese utterance
_MAX_EXTRA_WORDS = 3
_NEGATIONS_ZH = ("先别", "不要", "别", "不用", "不", "没", "勿")
# Apostrophes are punctuation to _norm: "don't" arrives as "don t".
_NEGATIONS_EN = ("don", "dont", "do not", "not", "never", "no", "shouldn", "won", "didn")
_FINALIZE = (
    "结束会议",
    "结束本次会议",
    "生成纪要",
    "出个纪要",
    "停止录制",
    "finalize meeting",
    "finalise meeting",
    "finalize the meeting",
    "end the meeting",
    "end meeting",
    "stop recording",
    "generate minutes",
)
_SWITCH: tuple[tuple[str, Mode], ...] = (
    ("进入工作模式", "working"),
    ("切换到工作模式", "working"),
    ("工作模式", "working"),
    ("switch to working mode", "working"),
    ("enter working mode", "working"),
    ("working mode", "working"),
    ("进入会议模式", "meeting"),
    ("会议模式", "meeting"),
    ("meeting mode", "meeting"),
    ("进入编程模式", "coding"),
    ("编程模式", "coding"),
    ("coding mode", "coding"),
)
_PUNCT = re.compile(r"[\s,.!?;:，。！？；：、\"'“”‘’~…]+")


def _norm(text: str) -> str:
    return _PUNCT.sub(" ", text.lower()).strip()


def _is_cjk(keyword: str) -> bool:
    return not keyword.isascii()


def _matches(norm: str, keyword: str) -> bool:
    """The keyword at the start or the end of a short utterance, not negated."""
    if _is_cjk(keyword):
        compact = norm.replace(" ", "")
        if not (compact.startswith(keyword) or compact.endswith(keyword)):
            return False
        if len(compact) - len(keyword) > _MAX_EXTRA_CJK:
            return False
        before = compact[: compact.rfind(keyword)] if compact.endswith(keyword) else ""
        return not any(n in before for n in _NEGATIONS_ZH)
    padded = f" {norm} "
    kw = f" {keyword} "
    if not (padded.startswith(kw) or padded.endswith(kw)):
        return False
    words = norm.split()
    if len(words) - len(keyword.split()) > _MAX_EXTRA_WORDS:
        return False
    before = padded[: padded.rfind(kw)] if padded.endswith(kw) else ""
    return not any(f" {n} " in f" {before} " for n in _NEGATIONS_EN)


def _stand_in(text: str, mode: Mode | None) -> VoiceCommand | None:
    norm = _norm(text)
    if not norm:
        return None
    for keyword, target in _SWITCH:
        if _matches(norm, keyword):
            return VoiceCommand("mode_switch", target, keyword)
    if mode == "meeting":
        for keyword in _FINALIZE:
            if _matches(norm, keyword):
                return VoiceCommand("finalize", None, keyword)
    return None


def _shared_table() -> Any:
    try:
        from supie_common import commands  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return None
    return commands


_COMMANDS = _shared_table()


def parse_voice_command(text: str, mode: Mode | None) -> VoiceCommand | None:
    """The command ``text`` is in ``mode`` (finalize only in meeting mode), else None."""
    if _COMMANDS is None:
        return _stand_in(text, mode)
    intents = _COMMANDS.MEETING_INTENTS if mode == "meeting" else _COMMANDS.WORKING_INTENTS
    found = _COMMANDS.parse_command(text, intents)
    if found is None:
        return None
    intent = str(getattr(found.intent, "value", found.intent))
    if intent == "finalize" and mode == "meeting":
        return VoiceCommand("finalize", None, str(getattr(found, "keyword", "")))
    if intent == "mode_switch" and found.target_mode:
        return VoiceCommand("mode_switch", found.target_mode, str(getattr(found, "keyword", "")))
    return None
