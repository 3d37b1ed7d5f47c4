"""The meeting's device frames within a byte budget: pushes split, tails trimmed to their newest
items, an item too large for any message cut (UTF-8 safe), each frame a documented message."""

from __future__ import annotations

import json

from supie_common.contracts import DeviceOutbound, encode
from supie_common.contracts.device import validate_server_message
from supie_meeting.models import Segment
from supie_meeting.wire import push_frames, tail_frame


def _segments(n: int, size: int, text: str = "x") -> list[Segment]:
    return [
        Segment(ts=i, text=f"{i:04d}" + text * size, speakerId="aabbccdd", tag="ASR")
        for i in range(n)
    ]


def _bytes(frame: str) -> int:
    return len(encode(DeviceOutbound(frame=frame)))


def test_a_push_is_split_to_fit_the_budget() -> None:
    segments = _segments(120, 2000, '"é')  # quotes double when embedded: count them
    frames = push_frames("m1", segments, 120, budget=64 * 1024)
    assert len(frames) > 1
    assert all(_bytes(f) <= 64 * 1024 for f in frames)
    decoded = [json.loads(f) for f in frames]
    assert [i["text"] for d in decoded for i in d["items"]] == [s.text for s in segments]
    assert {d["totalSegments"] for d in decoded} == {120}
    assert all("truncated" not in d for d in decoded)
    for d in decoded:
        validate_server_message(d)
    # An empty push is still one frame (the badge learns totalSegments).
    (empty,) = push_frames("m1", [], 7, budget=64 * 1024)
    assert json.loads(empty)["items"] == [] and json.loads(empty)["totalSegments"] == 7


def test_a_tail_keeps_the_newest_items_that_fit() -> None:
    segments = _segments(50, 3000)
    frame = tail_frame("m1", segments, 300, budget=32 * 1024, resumed=True)
    assert _bytes(frame) <= 32 * 1024
    data = json.loads(frame)
    assert data["truncated"] is True and data["resumed"] is True and data["totalSegments"] == 300
    assert [i["text"] for i in data["items"]] == [s.text for s in segments[-len(data["items"]) :]]
    assert 5 <= len(data["items"]) < 50
    whole = json.loads(tail_frame("m1", segments[:3], 3, budget=32 * 1024))
    assert len(whole["items"]) == 3 and "truncated" not in whole


def test_an_item_larger_than_any_message_is_cut_utf8_safe() -> None:
    (seg,) = _segments(1, 40_000, "会")  # 120 KB of text
    (frame,) = push_frames("m1", [seg], 1, budget=20 * 1024)
    assert _bytes(frame) <= 20 * 1024
    data = json.loads(frame)
    assert data["truncated"] is True
    text = data["items"][0]["text"]
    assert seg.text.startswith(text) and len(text) > 1000
    text.encode("utf-8")  # whole characters only
