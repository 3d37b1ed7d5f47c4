"""Mode routing, in one place (SPEC §2): a pure function from (mode, final transcript) to what
happens next. Table-tested in ``tests/test_router.py``; run by :mod:`.transcripts` for every
final, on whichever gateway replica takes it from JetStream.

- any mode: a mode-switch command ("进入工作模式", "working mode") switches (announced first);
- meeting: to the meeting service (request/reply), never to chat; a finalize command announces
  itself (``MeetingCommandNotice``) and finalizes; ``stt`` echo only if ``meeting.disable_tts``
  is false;
- working: the ``stt`` line, then to the workflow service's intent recognition;
- coding: to the coding service;
- otherwise: back to the badge as ``stt``.
ASR utterances also get the ``audio``/``transcription`` push. Partial hypotheses are shown as
``stt`` with ``partial:true`` (outside meetings) and never acted on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel
from supie_common.contracts import Mode, Subjects, Transcript
from supie_common.contracts.device import AudioTranscription, MeetingCommandNotice, Stt

from .voice import VoiceCommand, parse_voice_command

__all__ = [
    "Action",
    "CommandParser",
    "FinalizeMeeting",
    "Forward",
    "SwitchMode",
    "ToDevice",
    "route_transcript",
]


@dataclass(frozen=True)
class ToDevice:
    """A frame for the badge (``device.<dev>.out``)."""

    message: BaseModel


@dataclass(frozen=True)
class Forward:
    """A request to the owning service; its reply frames go to the badge."""

    subject: str
    transcript: Transcript


@dataclass(frozen=True)
class SwitchMode:
    mode: Mode


@dataclass(frozen=True)
class FinalizeMeeting:
    source: str = "voice"


Action = ToDevice | Forward | SwitchMode | FinalizeMeeting
CommandParser = Callable[[str, Mode | None], VoiceCommand | None]


def _stt(t: Transcript, **extra: object) -> ToDevice:
    return ToDevice(Stt.model_validate({"text": t.text, "session_id": t.session_id, **extra}))


def route_transcript(
    mode: Mode | None,
    t: Transcript,
    *,
    meeting_disable_tts: bool = True,
    commands: CommandParser = parse_voice_command,
) -> list[Action]:
    """What to do with one transcript (an ASR utterance or typed text) in ``mode``."""
    text = t.text.strip()
    if not text:
        return []
    if t.kind == "partial":
        return [] if mode == "meeting" else [_stt(t, partial=True)]
    actions: list[Action] = []
    if t.source == "asr":
        actions.append(
            ToDevice(AudioTranscription(text=t.text, ts=t.ts_ms, session_id=t.session_id))
        )
    command = commands(text, mode)
    if command is not None and command.intent == "mode_switch" and command.target_mode != mode:
        target = command.target_mode
        assert target is not None
        if mode == "meeting":
            actions.append(
                ToDevice(
                    MeetingCommandNotice(
                        intent="mode_switch",
                        text=text,
                        target_mode=target,
                        session_id=t.meeting_id,
                    )
                )
            )
        actions.append(_stt(t, intent="mode_switch", target_mode=target))
        actions.append(SwitchMode(target))
        return actions
    if mode == "meeting":
        if command is not None and command.intent == "finalize":
            actions.append(
                ToDevice(
                    MeetingCommandNotice(intent="finalize", text=text, session_id=t.meeting_id)
                )
            )
            actions.append(FinalizeMeeting("voice" if t.source == "asr" else "text"))
            return actions
        actions.append(Forward(Subjects.MEETING_TRANSCRIPT, t))
        if not meeting_disable_tts:
            actions.append(_stt(t))
    elif mode == "working":
        actions.append(_stt(t))
        actions.append(Forward(Subjects.WORKFLOW_INTENT, t))
    elif mode == "coding":
        actions.append(Forward(Subjects.CODING_TEXT, t))
    else:
        actions.append(_stt(t))
    return actions
