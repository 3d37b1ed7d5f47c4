"""The mode router is one pure function; this table is its specification. Voice commands come
from the shared phrase table (``supie_common.commands``, tested on its own) through
``supie_gateway.voice``, which picks the intents the gateway acts on per mode."""

from __future__ import annotations

import pytest
from supie_common.contracts import Subjects, Transcript
from supie_common.contracts.device import MeetingCommandNotice
from supie_gateway.router import (
    FinalizeMeeting,
    Forward,
    SwitchMode,
    ToDevice,
    route_transcript,
)
from supie_gateway.voice import VoiceCommand, parse_voice_command


def t(
    text: str, source: str = "asr", kind: str = "final", meeting: str | None = None
) -> Transcript:
    return Transcript(
        device_id="d",
        session_id="s",
        gateway_id="g",
        stream_id="x",
        utterance_id="u",
        text=text,
        start_ms=0,
        end_ms=1,
        source=source,
        kind=kind,
        meeting_id=meeting,
    )


def kinds(actions: list) -> list[str]:  # type: ignore[type-arg]
    out = []
    for a in actions:
        if isinstance(a, Forward):
            out.append(f"request:{a.subject}")
        elif isinstance(a, ToDevice):
            msg = a.message
            tag = getattr(msg, "event", None) if msg.type in ("meeting", "audio") else None
            out.append(f"device:{msg.type}" + (f":{tag}" if tag == "command" else ""))
        elif isinstance(a, SwitchMode):
            out.append(f"switch:{a.mode}")
        elif isinstance(a, FinalizeMeeting):
            out.append(f"finalize:{a.source}")
    return out


MT, WI, CT = Subjects.MEETING_TRANSCRIPT, Subjects.WORKFLOW_INTENT, Subjects.CODING_TEXT
TABLE = [
    # mode, text, source, disable_tts, expected
    (None, "hello world", "asr", True, ["device:audio", "device:stt"]),
    (None, "hello world", "text", True, ["device:stt"]),
    ("meeting", "we decided to ship", "asr", True, ["device:audio", f"request:{MT}"]),
    (
        "meeting",
        "we decided to ship",
        "asr",
        False,
        ["device:audio", f"request:{MT}", "device:stt"],
    ),
    (
        "meeting",
        "好的，结束会议",
        "asr",
        True,
        ["device:audio", "device:meeting:command", "finalize:voice"],
    ),
    ("meeting", "Finalize meeting.", "text", True, ["device:meeting:command", "finalize:text"]),
    # negated or buried keywords are just speech (issue 10)
    ("meeting", "先别急着结束会议", "asr", True, ["device:audio", f"request:{MT}"]),
    (
        "meeting",
        "we should not end the meeting yet",
        "asr",
        True,
        ["device:audio", f"request:{MT}"],
    ),
    ("meeting", "我们开始总结一下上周的问题", "asr", True, ["device:audio", f"request:{MT}"]),
    ("meeting", "我们讨论一下新的工作模式怎么设计", "asr", True, ["device:audio", f"request:{MT}"]),
    ("working", "claim task two", "asr", True, ["device:audio", "device:stt", f"request:{WI}"]),
    ("working", "完成任务一", "text", True, ["device:stt", f"request:{WI}"]),
    ("working", "finalize meeting", "text", True, ["device:stt", f"request:{WI}"]),
    ("coding", "why did the build fail", "asr", True, ["device:audio", f"request:{CT}"]),
    (None, "进入工作模式", "text", True, ["device:stt", "switch:working"]),
    (
        "meeting",
        "switch to working mode",
        "asr",
        True,
        ["device:audio", "device:meeting:command", "device:stt", "switch:working"],
    ),
    ("coding", "Working mode!", "text", True, ["device:stt", "switch:working"]),
    ("working", "working mode", "text", True, ["device:stt", f"request:{WI}"]),
    (None, "   ", "asr", True, []),
]


@pytest.mark.parametrize(("mode", "text", "source", "disable_tts", "expected"), TABLE)
def test_route_table(mode, text, source, disable_tts, expected) -> None:  # type: ignore[no-untyped-def]
    actions = route_transcript(mode, t(text, source), meeting_disable_tts=disable_tts)
    assert kinds(actions) == expected


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (None, ["device:stt"]),
        ("working", ["device:stt"]),
        ("meeting", []),
        ("coding", ["device:stt"]),
    ],
)
def test_partials_are_shown_never_acted_on(mode, expected) -> None:  # type: ignore[no-untyped-def]
    actions = route_transcript(mode, t("finalize meeting", kind="partial"))
    assert kinds(actions) == expected
    assert all(a.message.partial is True for a in actions)  # type: ignore[union-attr]


def test_mode_switch_echo_carries_the_intent() -> None:
    actions = route_transcript(None, t("进入工作模式", "text"))
    stt = next(a for a in actions if isinstance(a, ToDevice))
    assert stt.message.intent == "mode_switch" and stt.message.target_mode == "working"  # type: ignore[attr-defined]


def test_finalize_is_announced_with_the_meeting_before_it_acts() -> None:
    actions = route_transcript("meeting", t("生成纪要", "text", meeting="m1"))
    notice = actions[0]
    assert isinstance(notice, ToDevice) and isinstance(notice.message, MeetingCommandNotice)
    assert notice.message.session_id == "m1" and notice.message.intent == "finalize"
    assert isinstance(actions[1], FinalizeMeeting)


def test_the_router_uses_the_command_parser_it_is_given() -> None:
    def parser(text: str, mode: object) -> VoiceCommand | None:
        return VoiceCommand("mode_switch", "coding") if text == "magic" else None

    assert kinds(route_transcript("meeting", t("magic", "text"), commands=parser)) == [
        "device:meeting:command",
        "device:stt",
        "switch:coding",
    ]


@pytest.mark.parametrize(
    ("text", "mode", "intent"),
    [
        ("结束会议", "meeting", "finalize"),
        ("好，生成纪要吧", "meeting", "finalize"),
        ("结束会议吧", "meeting", "finalize"),
        ("不要结束会议", "meeting", None),
        ("end the meeting", "meeting", "finalize"),
        ("please end the meeting", "meeting", "finalize"),
        ("don't end the meeting", "meeting", None),
        ("end the meeting", "working", None),
        ("完成第二个任务", "working", None),  # the workflow service's, not the gateway's
        ("切换到工作模式", None, "mode_switch"),
        ("别切换到工作模式", None, None),
        ("enter working mode", "coding", "mode_switch"),
        ("never enter working mode", "coding", None),
        ("coding mode", "working", "mode_switch"),
    ],
)
def test_the_gateway_acts_on_finalize_in_meetings_and_mode_switches_anywhere(
    text: str, mode: str | None, intent: str | None
) -> None:
    found = parse_voice_command(text, mode)  # type: ignore[arg-type]
    assert (found.intent if found else None) == intent
