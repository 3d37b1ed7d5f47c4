"""The mode router is one pure function; this table is its specification."""

from __future__ import annotations

import pytest
from supie_common.contracts import Subjects, Transcript
from supie_gateway.router import FinalizeMeeting, Publish, SwitchMode, ToDevice, route_transcript


def t(text: str, source: str = "asr", kind: str = "final") -> Transcript:
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
    )


def kinds(actions: list) -> list[str]:  # type: ignore[type-arg]
    out = []
    for a in actions:
        if isinstance(a, Publish):
            out.append(f"publish:{a.subject}")
        elif isinstance(a, ToDevice):
            out.append(f"device:{a.message['type']}")
        elif isinstance(a, SwitchMode):
            out.append(f"switch:{a.mode}")
        elif isinstance(a, FinalizeMeeting):
            out.append("finalize")
    return out


TABLE = [
    # mode, text, source, disable_tts, expected
    (None, "hello world", "asr", True, ["device:audio", "device:stt"]),
    (None, "hello world", "text", True, ["device:stt"]),
    (
        "meeting",
        "we decided to ship",
        "asr",
        True,
        ["device:audio", f"publish:{Subjects.MEETING_TRANSCRIPT}"],
    ),
    (
        "meeting",
        "we decided to ship",
        "asr",
        False,
        ["device:audio", f"publish:{Subjects.MEETING_TRANSCRIPT}", "device:stt"],
    ),
    ("meeting", "好的，结束会议", "asr", True, ["device:audio", "finalize"]),
    ("meeting", "Finalize meeting.", "text", True, ["finalize"]),
    (
        "working",
        "claim task two",
        "asr",
        True,
        ["device:audio", "device:stt", f"publish:{Subjects.WORKFLOW_INTENT}"],
    ),
    ("working", "完成任务一", "text", True, ["device:stt", f"publish:{Subjects.WORKFLOW_INTENT}"]),
    (
        "coding",
        "why did the build fail",
        "asr",
        True,
        ["device:audio", f"publish:{Subjects.CODING_TEXT}"],
    ),
    (None, "进入工作模式", "text", True, ["device:stt", "switch:working"]),
    (
        "meeting",
        "switch to working mode",
        "asr",
        True,
        ["device:audio", "device:stt", "switch:working"],
    ),
    ("coding", "Working mode!", "text", True, ["device:stt", "switch:working"]),
    (
        "working",
        "working mode",
        "text",
        True,
        ["device:stt", f"publish:{Subjects.WORKFLOW_INTENT}"],
    ),
    (None, "   ", "asr", True, []),
]


@pytest.mark.parametrize(("mode", "text", "source", "disable_tts", "expected"), TABLE)
def test_route_table(mode, text, source, disable_tts, expected) -> None:  # type: ignore[no-untyped-def]
    assert (
        kinds(route_transcript(mode, t(text, source), meeting_disable_tts=disable_tts)) == expected
    )


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
    assert all(a.message.get("partial") is True for a in actions)  # type: ignore[union-attr]


def test_mode_switch_echo_carries_the_intent() -> None:
    actions = route_transcript(None, t("进入工作模式", "text"))
    stt = next(a for a in actions if isinstance(a, ToDevice))
    assert stt.message["intent"] == "mode_switch" and stt.message["target_mode"] == "working"
