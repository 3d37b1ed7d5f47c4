"""The whole meeting path: a firmware-exact device streams a speech fixture in meeting mode ->
gateway -> asr -> meeting service -> transcript pushes -> finalize -> ACK, a 7-field summary and
the transcript tail; the archived meeting is served over the gateway's HTTP port; a second meeting
on the same connection works too."""

from __future__ import annotations

import asyncio
import importlib.util
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from nats.aio.client import Client as NATS
from supie_common.audio import OpusEncoder
from supie_common.device_client import DeviceClient

_spec = importlib.util.spec_from_file_location(
    "speech_fixtures", Path(__file__).parent / "fixtures" / "speech" / "speech.py"
)
assert _spec is not None and _spec.loader is not None
speech = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(speech)

SEVEN = ("title", "duration", "bullets", "decisions", "actions", "risks", "nextSteps")


def dev_id() -> str:
    raw = uuid.uuid4().hex[:12]
    return ":".join(raw[i : i + 2] for i in range(0, 12, 2))


async def speak(dev: DeviceClient, pcm: np.ndarray, speed: float = 4.0) -> None:
    await dev.listen("start", mode="manual")
    await dev.stream_packets(OpusEncoder(frame_ms=60).encode_all(pcm), frame_ms=int(60 / speed))
    await asyncio.sleep(0.4)  # past the gateway's listen debounce
    await dev.listen("stop")


def meeting_msgs(dev: DeviceClient, phase: str, **match: Any) -> list[dict[str, Any]]:
    return [
        m
        for m in dev.received
        if m.get("type") == "meeting"
        and m.get("phase") == phase
        and all(m.get(k) == v for k, v in match.items())
    ]


async def until(pred: Any, within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_device_meeting_end_to_end(gateway: Any, spawn_service: Any, nc: NATS) -> None:
    asr = spawn_service("supie_asr", {"SUPIE_ASR__CPU_THREADS": "2"})
    meeting = spawn_service("supie_meeting", {"SUPIE_MEETING__TRANSCRIPT_PUSH_INTERVAL_MS": "3000"})
    await asr.wait_healthy(nc, "asr", timeout=60)
    await meeting.wait_healthy(nc, "meeting", timeout=60)
    await until(lambda: "asr started" in asr.log(), 60, "the asr model")
    pcm = speech.samples("meeting_us")
    spans = speech.sentence_spans(pcm)
    sentences = speech.references()["meeting_us"]

    async with DeviceClient(gateway.ws_url, dev_id()) as dev:
        await dev.hello()
        await dev.send_json({"type": "mode", "state": "start", "mode": "meeting"})
        await dev.expect("mode", status="ok", state="start")
        for start, end in spans:
            await speak(dev, pcm[max(0, start - 4800) : end + 4800])

        def pushed() -> list[dict[str, Any]]:
            return [
                i for m in meeting_msgs(dev, "transcript") if not m.get("final") for i in m["items"]
            ]

        def heard() -> str:
            return " ".join(i["text"] for i in pushed())

        # Counting pushes is not enough: on a loaded machine an utterance may come in two
        # finals, and the count is reached before the last sentence is in.
        reference = " ".join(sentences)
        try:
            await until(lambda: speech.wer(reference, heard()) <= 0.2, 45, "the whole transcript")
        except AssertionError:
            raise AssertionError(f"WER {speech.wer(reference, heard()):.2f}: {heard()}") from None
        assert all(i["speakerId"] == dev.device_id[:8] for i in pushed())

        await dev.send_json({"type": "meeting", "phase": "finalize"})
        ack = await dev.expect("meeting", phase="finalize", timeout=5)
        meeting_id = ack["sessionId"]
        assert ack["startedAt"] > 0 and ack["pendingCount"] >= 0
        summary = await dev.expect("meeting", phase="summary", timeout=20)
        assert all(isinstance(summary[k], list) for k in SEVEN[2:])
        assert summary["title"] and summary["duration"] >= "00:00:05"
        segments = len(pushed())  # every final went out in a push before the finalize
        assert summary["checkpoint"] is False and summary["sourceSegments"] == segments
        tail = await dev.expect("meeting", phase="transcript", final=True, timeout=5)
        assert tail["totalSegments"] == segments and tail["sessionId"] == meeting_id

        # A second meeting on the same connection gets a fresh id and its own summary.
        await dev.send_json({"type": "mode", "state": "start", "mode": "meeting"})
        await dev.expect("mode", status="ok", state="start")
        start, end = spans[0]
        await speak(dev, pcm[max(0, start - 4800) : end + 4800])
        await until(lambda: len(pushed()) > segments, 20, "second meeting push")
        await dev.send_json({"type": "mode", "state": "end", "mode": "meeting"})
        second = await dev.expect("meeting", phase="summary", timeout=20)
        assert second["sessionId"] != meeting_id and second["sourceSegments"] == 1

    async with httpx.AsyncClient(base_url=gateway.http_url, timeout=10) as http:
        for _ in range(50):
            resp = await http.get(f"/supie/meetings/{meeting_id}", params={"preview": 2})
            if resp.status_code == 200:
                break
            await asyncio.sleep(0.1)
        body = resp.json()
        assert resp.status_code == 200 and body["success"] is True, body
        assert body["data"]["summary"]["title"] == summary["title"]
        assert len(body["data"]["transcriptPreview"]) == 2
        recent = (await http.get("/supie/meetings/recent")).json()["data"]
        assert meeting_id in [e["sessionId"] for e in recent]
        page = (await http.get(f"/supie/meetings/{meeting_id}/transcript")).json()["data"]
        assert page["total"] == segments and len(page["items"]) == segments
        bad = await http.get(f"/supie/meetings/{meeting_id}/transcript", params={"limit": "x"})
        assert bad.status_code == 400 and "limit" in bad.json()["error"]
