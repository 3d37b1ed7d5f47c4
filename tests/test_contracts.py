"""libs/common contracts: subjects and their documentation, device tokens, the typed device
protocol and its edge parser."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import supie_common.contracts as contracts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from supie_common.contracts import Subjects, Transcript, device_token, encode
from supie_common.contracts import device as dm
from supie_common.contracts.subjects import CATALOG
from supie_common.device_codec import parse_device_message
from supie_common.errors import ProtocolError

ROOT = Path(__file__).resolve().parents[1]
SAFE = re.compile(r"^[A-Za-z0-9:\-_]+$")


def _all_subject_patterns() -> list[str]:
    out = [
        v
        for k, v in vars(Subjects).items()
        if k.isupper() and isinstance(v, str) and v.startswith("supie.")
    ]
    placeholders = {
        "device_out": "<dev>",
        "device_audio_out": "<dev>",
        "device_command": "<dev>",
        "device_takeover": "<dev>",
        "transcript_final": "<dev>",
        "asr_audio": "<stream>",
        "asr_control": "<stream>",
        "asr_events": "<stream>",
        "meeting_live": "<meeting>",
        "workflow_group": "<group>",
        "health": "<service>",
    }
    for name, value in vars(Subjects).items():
        if isinstance(value, staticmethod):
            marker = "PLACEHOLDER0"
            out.append(getattr(Subjects, name)(marker).replace(marker, placeholders[name]))
    return out


def test_every_subject_is_in_the_catalog() -> None:
    catalogued = {row[0] for row in CATALOG}
    for pattern in _all_subject_patterns():
        assert pattern in catalogued, f"{pattern} is not in contracts.subjects.CATALOG"


def test_every_catalog_row_is_documented_with_its_payload() -> None:
    doc = (ROOT / "docs" / "subjects.md").read_text()
    rows = [line for line in doc.splitlines() if line.startswith("| `supie.")]
    for pattern, payload, reply in CATALOG:
        matching = [r for r in rows if r.startswith(f"| `{pattern}` |")]
        assert matching, f"{pattern} has no row in docs/subjects.md"
        row = matching[0]
        assert f"`{payload}`" in row, f"{pattern}: the row must name its payload {payload}"
        if reply:
            assert f"→ `{reply}`" in row, f"{pattern}: the row must name its reply {reply}"
        for name in (payload, reply):
            if name and name != "bytes":
                assert hasattr(contracts, name), f"{name} is not exported by contracts"


def test_contracts_export_list_is_sorted_and_complete() -> None:
    names = contracts.__all__
    assert names == sorted(names, key=lambda n: (n[0].islower(), n))
    for name in names:
        assert hasattr(contracts, name)


# -- device tokens ---------------------------------------------------------------------------


def _untoken(token: str) -> str:
    """The inverse of device_token (proves it loses nothing)."""
    out = bytearray()
    i = 0
    while i < len(token):
        if token[i] == "_":
            out.append(int(token[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(ord(token[i]))
            i += 1
    return out.decode("utf-8", "surrogatepass")


def test_regression_tokens_that_used_to_collide() -> None:
    # "ӣd" (U+04E3 + "d") and "丽" (U+4E3D) both became "_4e3d"
    assert device_token("ӣd") != device_token("丽")
    assert device_token("a_5fb") != device_token("a_b")
    assert device_token("aa:bb:cc:dd:ee:ff") == "aa:bb:cc:dd:ee:ff"


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_device_token_is_injective_and_a_valid_subject_token(a: str, b: str) -> None:
    ta, tb = device_token(a), device_token(b)
    assert SAFE.match(ta), ta
    assert _untoken(ta) == a
    assert (ta == tb) == (a == b)


# -- the typed device protocol ---------------------------------------------------------------

GOOD: list[tuple[dict[str, Any], type]] = [
    (
        {
            "type": "hello",
            "version": 1,
            "features": {"mcp": True},
            "transport": "websocket",
            "audio_params": {
                "format": "opus",
                "sample_rate": 16000,
                "channels": 1,
                "frame_duration": 60,
            },
        },
        dm.Hello,
    ),
    ({"type": "hello"}, dm.Hello),
    ({"type": "listen", "state": "start", "mode": "manual"}, dm.Listen),
    ({"type": "listen", "state": "detect", "text": "你好小智"}, dm.Listen),
    ({"type": "abort", "reason": "wake_word_detected"}, dm.Abort),
    ({"type": "mode", "state": "start", "mode": "working"}, dm.ModeRequest),
    ({"type": "ping"}, dm.Ping),
    ({"type": "keepalive"}, dm.Ping),
    ({"type": "server", "action": "update_config", "content": {"secret": "s"}}, dm.ServerRequest),
    ({"type": "config_update", "config": {"a": 1}}, dm.LegacyConfigUpdate),
    ({"type": "goodbye", "session_id": "x"}, dm.Goodbye),
    ({"type": "iot", "descriptors": []}, dm.FirmwareChatter),
    ({"type": "mcp", "payload": {"jsonrpc": "2.0"}}, dm.FirmwareChatter),
    (
        {"type": "meeting", "phase": "snippet", "items": [{"tag": "需求", "text": "登录页"}]},
        dm.MeetingSnippet,
    ),
    ({"type": "meeting", "phase": "finalize"}, dm.MeetingFinalize),
    ({"type": "workflow", "event": "update", "tasks": []}, dm.WorkflowUpdate),
    (
        {"type": "workflow", "event": "update", "tasks": [{"id": "t1", "assignees": ["a"]}]},
        dm.WorkflowUpdate,
    ),
    ({"type": "workflow", "event": "list"}, dm.WorkflowList),
    ({"type": "workflow", "event": "complete", "ids": ["t1"]}, dm.WorkflowComplete),
    ({"type": "workflow", "event": "delete", "ids": ["t1"]}, dm.WorkflowDelete),
    ({"type": "workflow", "event": "assign", "id": "t1"}, dm.WorkflowAssign),
    ({"type": "coding", "event": "start"}, dm.CodingStart),
    ({"type": "coding", "event": "phase", "name": "build"}, dm.CodingPhase),
    ({"type": "coding", "event": "log", "level": "WARNING", "text": "x"}, dm.CodingLog),
    ({"type": "coding", "event": "step", "name": "pytest", "status": "fail"}, dm.CodingStep),
]


@pytest.mark.parametrize(("raw", "model"), GOOD, ids=lambda v: str(v)[:40])
def test_every_firmware_message_parses_into_its_model(raw: dict[str, Any], model: type) -> None:
    parsed = parse_device_message(json.dumps(raw, ensure_ascii=False))
    assert type(parsed) is model


BAD: list[tuple[str, dm.ErrorCode, str | None, str]] = [
    ("not json", dm.ErrorCode.BAD_JSON, None, "not valid JSON"),
    ("[1, 2]", dm.ErrorCode.BAD_JSON, "type", "JSON object"),
    ('{"x": 1}', dm.ErrorCode.SCHEMA_INVALID, "type", "type: required"),
    ('{"type": "dance"}', dm.ErrorCode.UNKNOWN_TYPE, "type", "unknown message type"),
    ('{"type": "listen", "state": "sing"}', dm.ErrorCode.SCHEMA_INVALID, "state", "'start'"),
    ('{"type": "mode", "state": "start"}', dm.ErrorCode.SCHEMA_INVALID, "mode", "mode: required"),
    ('{"type": "meeting"}', dm.ErrorCode.SCHEMA_INVALID, "phase", "phase: required"),
    ('{"type": "meeting", "phase": "x"}', dm.ErrorCode.SCHEMA_INVALID, "phase", "'snippet'"),
    (
        '{"type":"meeting","phase":"snippet","items":[{"tag":"a","text":" "}]}',
        dm.ErrorCode.SCHEMA_INVALID,
        "items[0].text",
        "non-empty string",
    ),
    (
        '{"type":"workflow","event":"update","tasks":[{"id":"t","priority":7}]}',
        dm.ErrorCode.SCHEMA_INVALID,
        "tasks[0].priority",
        "tasks[0].priority: must be an integer 0..3",
    ),
    (
        '{"type":"workflow","event":"update","tasks":[{"id":"t","priority":true}]}',
        dm.ErrorCode.SCHEMA_INVALID,
        "tasks[0].priority",
        "must be an integer 0..3",
    ),
    (
        '{"type":"workflow","event":"delete","ids":[]}',
        dm.ErrorCode.SCHEMA_INVALID,
        "ids",
        "at least 1",
    ),
    ('{"type":"coding","event":"phase"}', dm.ErrorCode.SCHEMA_INVALID, "phase", "phase: required"),
    (
        '{"type":"hello","audio_params":{"format":"mp3"}}',
        dm.ErrorCode.SCHEMA_INVALID,
        "audio_params.format",
        "'opus' or 'pcm'",
    ),
]


@pytest.mark.parametrize(("text", "code", "field", "words"), BAD, ids=lambda v: str(v)[:40])
def test_bad_messages_get_an_error_naming_the_field(
    text: str, code: dm.ErrorCode, field: str | None, words: str
) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_device_message(text)
    assert info.value.code == code
    assert info.value.field == field
    assert words in info.value.message


def test_deep_json_is_refused_before_it_is_parsed() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_device_message("[" * 2000 + "]" * 2000)
    assert info.value.code == dm.ErrorCode.BAD_JSON and "deeper than 32" in info.value.message
    # brackets inside strings are not nesting
    deep_text = json.dumps({"type": "listen", "state": "detect", "text": "[" * 500})
    assert parse_device_message(deep_text).text == "[" * 500


def test_lone_surrogates_are_replaced_not_fatal() -> None:
    msg = parse_device_message('{"type":"listen","state":"detect","text":"a\\ud800b"}')
    assert msg.text == "a\ufffdb"
    msg.text.encode("utf-8")  # what used to crash the connection


def test_unknown_task_fields_are_kept() -> None:
    msg = parse_device_message(
        '{"type":"workflow","event":"update","tasks":[{"id":"t","assignees":["x"],"due":"fri"}]}'
    )
    dumped = msg.tasks[0].model_dump(by_alias=True, exclude_none=True)
    assert dumped["assignees"] == ["x"] and dumped["due"] == "fri"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(json_values, st.sampled_from(sorted(dm.DEVICE_MESSAGE_TYPES)))
def test_any_json_gets_a_model_or_a_protocol_error(value: Any, mtype: str) -> None:
    for raw in (value, {"type": mtype, "x": value}, {"type": mtype, **_as_dict(value)}):
        try:
            parse_device_message(json.dumps(raw))
        except ProtocolError as exc:
            assert exc.message and exc.code in dm.ErrorCode


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_any_text_gets_a_model_or_a_protocol_error(text: str) -> None:
    try:
        parse_device_message(text)
    except ProtocolError:
        pass


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# -- server -> device ------------------------------------------------------------------------


def test_server_messages_are_validated_against_their_models() -> None:
    frames = [
        dm.to_frame(dm.Pong(timestamp=1)),
        dm.to_frame(dm.ModeAck(state="start", mode="meeting", session_id="m1")),
        dm.to_frame(
            dm.MeetingFinalizeAck(session_id="m1", started_at=1, pending_count=0, idempotent=True)
        ),
        dm.to_frame(dm.WorkflowAck(event="update")),
        dm.to_frame(
            dm.CodingInsight(
                event="insight", phase="test", insights=["a"], risks=[], actions=[], next_steps=[]
            )
        ),
    ]
    for frame in frames:
        model = dm.validate_server_message(json.loads(frame))
        assert dm.to_frame(model) == frame
    with pytest.raises(ValueError, match="no server message model"):
        dm.validate_server_message({"type": "meeting", "phase": "summary"})
    with pytest.raises(ValueError):
        dm.validate_server_message({"type": "nonsense"})


def test_payloads_and_frames_are_compact() -> None:
    t = Transcript(
        device_id="d",
        session_id="s",
        gateway_id="g",
        stream_id="st",
        utterance_id="u",
        text="你好",
        start_ms=0,
        end_ms=10,
    )
    body = encode(t).decode()
    assert " " not in body and "null" not in body and "\\u" not in body  # UTF-8, not escapes
    assert "meeting_id" not in body  # None fields are left out
    frame = dm.to_frame(dm.Stt(text="hi there", session_id="s"))
    assert frame == '{"type":"stt","text":"hi there","session_id":"s"}'
