"""The asr service over a real nats-server: streams of Opus/PCM frames in, finals out; manual
boundaries, listen-stop flush, bad audio, and fail-over between two replicas (the gateway side,
``supie_gateway.asr_link.AsrStream``, is the client)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from nats.aio.client import Client as NATS
from supie_common.audio import OpusEncoder
from supie_common.contracts import AsrEvent, AsrOpenRequest, Subjects, Transcript, decode
from supie_gateway.asr_link import AsrStream

_spec = importlib.util.spec_from_file_location(
    "speech_fixtures", Path(__file__).parent / "fixtures" / "speech" / "speech.py"
)
assert _spec is not None and _spec.loader is not None
speech = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(speech)

ASR_ENV = {"SUPIE_ASR__CPU_THREADS": "2"}


class Client:
    """Collects what one stream delivers."""

    def __init__(self) -> None:
        self.finals: list[Transcript] = []
        self.errors: list[str] = []
        self.changed = asyncio.Event()

    async def on_transcript(self, t: Transcript) -> None:
        # A re-transcribed utterance (replayed after a fail-over from the last committed_seq
        # the gateway heard of) keeps its utterance id: downstream keeps the first, so do we.
        if t.kind == "final" and any(f.utterance_id == t.utterance_id for f in self.finals):
            return
        self.finals.append(t)
        self.changed.set()

    async def on_error(self, message: str) -> None:
        self.errors.append(message)
        self.changed.set()

    async def wait_for(self, n: int, within_s: float = 20.0) -> list[Transcript]:
        deadline = time.monotonic() + within_s
        while len(self.finals) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"{len(self.finals)} finals of {n}: {[f.text for f in self.finals]}"
                )
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                pass
        return self.finals


async def start_asr(spawn_service: Any, nc: NATS, **env: str) -> Any:
    proc = spawn_service("supie_asr", {**ASR_ENV, **env})
    await proc.wait_healthy(nc, "asr", timeout=60)
    return proc


async def open_stream(nc: NATS, client: Client, **fields: Any) -> AsrStream:
    req = AsrOpenRequest(
        device_id=fields.pop("device_id", f"dev-{uuid.uuid4().hex[:8]}"),
        session_id=uuid.uuid4().hex,
        gateway_id="test-gw",
        **fields,
    )
    stream = AsrStream(nc, req, client.on_transcript, on_error=client.on_error)
    await stream.open()
    deadline = time.monotonic() + 60  # a fresh replica takes streams once its model is loaded
    while stream.owner is None:
        assert time.monotonic() < deadline, "no asr replica took the stream"
        await asyncio.sleep(0.1)
    return stream


async def send_opus(
    stream: AsrStream, pcm: np.ndarray, *, frame_ms: int = 60, speed: float = 4.0
) -> None:
    """Encode and send like a device, ``speed`` times faster than real time."""
    packets = OpusEncoder(frame_ms=frame_ms).encode_all(pcm)
    start = time.monotonic()
    for i, packet in enumerate(packets):
        delay = start + i * frame_ms / 1000 / speed - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await stream.send_audio(packet)


def joined(finals: list[Transcript]) -> str:
    return " ".join(f.text for f in finals if f.kind == "final")


async def test_fixture_streams_are_transcribed_with_low_wer(spawn_service: Any, nc: NATS) -> None:
    await start_asr(spawn_service, nc)
    refs = speech.references()
    clients = {name: Client() for name in refs}
    streams = {name: await open_stream(nc, clients[name], meeting_id=f"m-{name}") for name in refs}
    beats: list[AsrEvent] = []

    async def on_event(msg: Any) -> None:
        event = decode(AsrEvent, msg.data)
        if event.kind == "heartbeat":
            beats.append(event)

    sub = await nc.subscribe(Subjects.asr_events(streams["meeting_us"].stream_id), cb=on_event)
    # three devices at once, each at 4x real time
    await asyncio.gather(*(send_opus(streams[n], speech.samples(n)) for n in refs))
    errors = []
    for name, sentences in refs.items():
        finals = await clients[name].wait_for(len(sentences))
        stream = streams[name]
        # deterministic ids: the stream and the sequence number of the utterance's first frame
        seqs = [int(f.utterance_id.split(":")[1]) for f in finals]
        assert all(
            f.utterance_id == f"{stream.stream_id}:{n}" for f, n in zip(finals, seqs, strict=True)
        )
        assert seqs == sorted(set(seqs)) and seqs[0] >= 0
        for f in finals:
            assert f.stream_id == stream.stream_id and f.device_id == stream.req.device_id
            assert f.meeting_id == f"m-{name}" and f.gateway_id == "test-gw"
            assert f.language == "en" and 0 <= f.start_ms < f.end_ms
            assert f.audio_ms == f.end_ms - f.start_ms and f.compute_ms > 0
        assert all(a.end_ms <= b.start_ms for a, b in zip(finals, finals[1:], strict=False))
        errors.append((speech.wer(" ".join(sentences), joined(finals)), len(sentences)))
    total = sum(e * n for e, n in errors) / sum(n for _, n in errors)
    assert total <= 0.15, errors
    await sub.unsubscribe()
    assert len(beats) >= 3 and beats[-1].frames > 0  # heartbeats acknowledge frames
    assert all(s.reopens == 0 for s in streams.values())
    for s in streams.values():
        await s.close()


async def test_manual_mode_uses_device_boundaries_then_falls_back(
    spawn_service: Any, nc: NATS
) -> None:
    await start_asr(spawn_service, nc, SUPIE_MEETING__MANUAL_LISTEN_FALLBACK_MS="9000")
    pcm = speech.samples("meeting_us")
    spans = speech.sentence_spans(pcm)
    sentences = speech.references()["meeting_us"]
    client = Client()
    stream = await open_stream(nc, client, listen_mode="manual")
    # sentences 1 and 2 with their 1.4 s pause (7.8 s, under the fallback): one utterance
    await send_opus(stream, pcm[: spans[1][1] + 3000])
    await asyncio.sleep(1.5)
    assert client.finals == [], "manual mode must not cut at a pause"
    await stream.control("listen_stop")
    finals = await client.wait_for(1, within_s=10)
    assert speech.wer(sentences[0] + " " + sentences[1], finals[0].text) <= 0.15
    # next press: sentence 3 only
    await stream.control("listen_start", listen_mode="manual")
    await send_opus(stream, pcm[spans[2][0] - 3000 : spans[2][1] + 3000])
    await stream.control("listen_stop")
    finals = await client.wait_for(2, within_s=10)
    assert speech.wer(sentences[2], finals[1].text) <= 0.15
    # no boundary for longer than the fallback: server VAD cuts at the pauses again
    await stream.control("listen_start", listen_mode="manual")
    await send_opus(stream, np.concatenate([pcm, pcm]), speed=8.0)
    finals = await client.wait_for(4, within_s=15)
    # the first 9 s stay one utterance, then the pauses cut: short finals before any stop
    assert finals[2].end_ms - finals[2].start_ms > 9000
    assert finals[3].end_ms - finals[3].start_ms < 4000
    await stream.close()


async def test_listen_stop_flushes_the_pending_utterance(spawn_service: Any, nc: NATS) -> None:
    await start_asr(spawn_service, nc)
    pcm = speech.samples("weather_fast")
    spans = speech.sentence_spans(pcm)
    client = Client()
    stream = await open_stream(nc, client, listen_mode="auto")
    # speech that stops dead: no trailing silence for the VAD to end it
    await send_opus(stream, pcm[: spans[0][1]])
    await asyncio.sleep(1.0)
    assert client.finals == []
    sent = time.monotonic()
    await stream.control("listen_stop")
    finals = await client.wait_for(1, within_s=10)
    assert time.monotonic() - sent < 2.0
    assert speech.wer(speech.references()["weather_fast"][0], finals[0].text) <= 0.15
    # close flushes too
    await send_opus(stream, pcm[spans[1][0] - 3000 : spans[1][1]])
    await stream.close()
    finals = await client.wait_for(2, within_s=10)
    assert speech.wer(speech.references()["weather_fast"][1], finals[1].text) <= 0.15


async def test_bad_audio_is_reported_and_survived(spawn_service: Any, nc: NATS) -> None:
    await start_asr(spawn_service, nc)
    pcm = speech.samples("weather_fast")
    spans = speech.sentence_spans(pcm)
    client = Client()
    stream = await open_stream(nc, client)
    for junk in (b"", b"\xff" * 40, b"\xfc" + os.urandom(3000)):
        await stream.send_audio(junk)
    # then 20 ms frames on a stream opened for 60 ms ones, and real speech
    await send_opus(stream, pcm[: spans[0][1] + 16000], frame_ms=20)
    finals = await client.wait_for(1, within_s=15)
    assert speech.wer(speech.references()["weather_fast"][0], finals[0].text) <= 0.15
    assert len(client.errors) == 3 and all("bad audio frame" in e for e in client.errors)
    assert any("0 bytes" in e for e in client.errors)

    pcm_client = Client()
    pcm_stream = await open_stream(nc, pcm_client, codec="pcm")
    await pcm_stream.send_audio(b"\x01\x02\x03")  # not whole s16le samples
    await pcm_stream.send_audio(np.zeros(16000 * 3, dtype=np.int16).tobytes())  # 3 s frame
    audio = pcm[spans[1][0] - 3000 : spans[1][1] + 16000]
    for i in range(0, len(audio), 960):
        await pcm_stream.send_audio(audio[i : i + 960].tobytes())
    finals = await pcm_client.wait_for(1, within_s=15)
    assert speech.wer(speech.references()["weather_fast"][1], finals[0].text) <= 0.15
    assert any("not whole s16le" in e for e in pcm_client.errors)
    assert any("longer than 2 s" in e for e in pcm_client.errors)
    await stream.close()
    await pcm_stream.close()


@pytest.mark.slow  # kills and waits: `make test-slow`
@pytest.mark.timeout(150)
async def test_killed_owner_is_replaced_and_later_utterances_transcribed(
    spawn_service: Any, nc: NATS
) -> None:
    replicas = [spawn_service("supie_asr", ASR_ENV) for _ in range(2)]
    for proc in replicas:
        await proc.wait_healthy(nc, "asr", timeout=60)
    pcm = speech.samples("meeting_us")
    spans = speech.sentence_spans(pcm)
    sentences = speech.references()["meeting_us"]
    client = Client()
    stream = await open_stream(nc, client)
    # both replicas must be taking streams before we kill one
    deadline = time.monotonic() + 60
    while any("asr started" not in p.log() for p in replicas):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    await send_opus(stream, pcm[: spans[1][0]], speed=2.0)
    await client.wait_for(1, within_s=15)
    first_owner = stream.owner
    assert first_owner is not None
    victim = next(p for p in replicas if f"-{p.proc.pid}-" in first_owner)
    victim.kill()
    # the device keeps talking: sentences 2 and 3 at real-time pace
    await send_opus(stream, pcm[spans[1][0] :], speed=1.0)
    finals = await client.wait_for(3, within_s=20)
    assert stream.reopens >= 1 and stream.owner not in (None, first_owner)
    later = " ".join(f.text for f in finals[1:])
    assert speech.wer(sentences[1] + " " + sentences[2], later) <= 0.15
    await stream.close()
