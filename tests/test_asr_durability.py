"""ASR finals survive a crash: the test plays the gateway with the bus contracts (open, frames
with sequence numbers, controls with ``at_seq``, re-open at ``committed_seq`` and replay), real
asr replicas as subprocesses, real audio; finals are read from the JetStream transcripts stream."""

from __future__ import annotations

import asyncio
import importlib.util
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from supie_common.audio import OpusEncoder
from supie_common.bus import request
from supie_common.contracts import (
    AsrControl,
    AsrEvent,
    AsrOpenReply,
    AsrOpenRequest,
    AudioHeaders,
    Streams,
    Subjects,
    Transcript,
    decode,
    encode,
)
from supie_common.embedded import EmbeddedNats

_spec = importlib.util.spec_from_file_location(
    "speech_fixtures", Path(__file__).parent / "fixtures" / "speech" / "speech.py"
)
assert _spec is not None and _spec.loader is not None
speech = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(speech)

ASR_ENV = {"SUPIE_ASR__CPU_THREADS": "2"}
FRAME_MS = 60


class Gateway:
    """The gateway's side of one stream, as the durable contract has it: keep every frame from
    ``committed_seq`` on, and on a re-open replay them (and the boundaries, by ``at_seq``)."""

    def __init__(self, nc: NATS, device_id: str, **fields: Any) -> None:
        self.nc = nc
        self.req = AsrOpenRequest(
            device_id=device_id, session_id=uuid.uuid4().hex, gateway_id="test-gw", **fields
        )
        self.stream_id = self.req.stream_id
        self.frames: dict[int, bytes] = {}
        self.controls: list[AsrControl] = []
        self.seq = 0
        self.owner: str | None = None
        self.beats: list[AsrEvent] = []
        self.errors: list[str] = []
        self.events: list[tuple[str, Transcript]] = []  # (owner, final) from the events

    async def start(self) -> None:
        await self.nc.subscribe(Subjects.asr_events(self.stream_id), cb=self._on_event)
        await self.open(0)

    async def _on_event(self, msg: Msg) -> None:
        event = decode(AsrEvent, msg.data)
        if event.owner != self.owner:
            return
        if event.kind == "heartbeat":
            self.beats.append(event)
        elif event.kind == "error" and event.error:
            self.errors.append(event.error)
        elif event.kind == "transcript" and event.transcript is not None:
            self.events.append((event.owner, event.transcript))

    @property
    def committed(self) -> int:
        return max((b.committed_seq for b in self.beats), default=0)

    async def open(self, resume_seq: int, within_s: float = 60.0) -> None:
        req = self.req.model_copy(update={"resume_seq": resume_seq})
        deadline = time.monotonic() + within_s
        while True:
            try:
                reply = await request(self.nc, Subjects.ASR_OPEN, req, AsrOpenReply, timeout=2)
                if reply.ok:
                    self.owner = reply.owner
                    return
            except Exception:
                pass
            assert time.monotonic() < deadline, "no asr replica took the stream"
            await asyncio.sleep(0.2)

    async def send(self, packet: bytes) -> None:
        seq = self.seq
        self.seq += 1
        self.frames[seq] = packet
        await self._publish(seq, packet)

    async def _publish(self, seq: int, packet: bytes) -> None:
        headers = {AudioHeaders.STREAM: self.stream_id, AudioHeaders.SEQ: str(seq)}
        await self.nc.publish(Subjects.asr_audio(self.stream_id), packet, headers=headers)

    async def control(self, action: str, *, at_seq: int | None = None, **fields: Any) -> None:
        ctl = AsrControl.model_validate(
            {"action": action, "at_seq": self.seq if at_seq is None else at_seq, **fields}
        )
        self.controls.append(ctl)
        await self.nc.publish(Subjects.asr_control(self.stream_id), encode(ctl))

    async def reopen_and_replay(self) -> int:
        """Move the stream: re-open at the last committed seq, replay frames and boundaries."""
        start = self.committed
        self.beats.clear()
        await self.open(start)
        pending = sorted(
            (c for c in self.controls if (c.at_seq or 0) >= start), key=lambda c: c.at_seq or 0
        )
        for ctl in pending:  # boundaries first: the owner holds them until their seq
            await self.nc.publish(Subjects.asr_control(self.stream_id), encode(ctl))
        for seq in range(start, self.seq):
            await self._publish(seq, self.frames[seq])
        return start

    async def wait_processed(self, within_s: float = 30.0) -> None:
        """Until a heartbeat says the owner has every frame sent so far."""
        deadline = time.monotonic() + within_s
        while not self.beats or self.beats[-1].frames < self.seq:
            assert time.monotonic() < deadline, "owner never caught up"
            await asyncio.sleep(0.05)


async def speak(gw: Gateway, pcm: np.ndarray, speed: float = 4.0) -> None:
    packets = OpusEncoder(frame_ms=FRAME_MS).encode_all(pcm)
    start = time.monotonic()
    for i, packet in enumerate(packets):
        delay = start + i * FRAME_MS / 1000 / speed - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await gw.send(packet)


async def listening(nc: NATS) -> tuple[str, Finals]:
    """A new device id, and the finals the stream will hold for it from now on."""
    dev = device()
    finals = Finals()
    await finals.start(nc, dev)
    return dev, finals


class Finals:
    """Everything in the JetStream transcripts stream for one device (what downstream gets)."""

    def __init__(self) -> None:
        self.items: list[Transcript] = []
        self.changed = asyncio.Event()
        self._sub: Any = None

    async def start(self, nc: NATS, device_id: str) -> None:
        js = nc.jetstream()

        async def on_msg(msg: Msg) -> None:
            self.items.append(decode(Transcript, msg.data))
            self.changed.set()
            await msg.ack()

        self._sub = await js.subscribe(
            Subjects.transcript_final(device_id), cb=on_msg, stream=Streams.TRANSCRIPTS
        )

    async def wait_for(self, n: int, within_s: float = 30.0) -> list[Transcript]:
        deadline = time.monotonic() + within_s
        while len(self.items) < n:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{len(self.items)} of {n}: {[t.text for t in self.items]}"
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                pass
        return self.items

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()


def device() -> str:
    return f"dur-{uuid.uuid4().hex[:8]}"


async def replicas(spawn_service: Any, nc: NATS, n: int, **env: str) -> list[Any]:
    procs = [spawn_service("supie_asr", {**ASR_ENV, **env}) for _ in range(n)]
    for proc in procs:
        await proc.wait_healthy(nc, "asr", timeout=90)
    return procs


def owner_of(procs: list[Any], owner: str | None) -> Any:
    return next(p for p in procs if f"-{p.proc.pid}-" in (owner or ""))


@pytest.mark.timeout(180)
async def test_owner_killed_mid_utterance_the_next_one_transcribes_it_whole_once(
    spawn_service: Any, nc: NATS
) -> None:
    procs = await replicas(spawn_service, nc, 2)
    pcm = speech.samples("meeting_us")
    spans = speech.sentence_spans(pcm)
    sentences = speech.references()["meeting_us"]
    dev, finals = await listening(nc)
    gw = Gateway(nc, dev, meeting_id="m-1", mode="meeting")
    await gw.start()
    # sentence 1 whole, then sentence 2 up to its middle
    middle = (spans[1][0] + spans[1][1]) // 2
    await speak(gw, pcm[:middle])
    await finals.wait_for(1)
    await gw.wait_processed()
    mid_seq = gw.seq
    await asyncio.sleep(0.6)  # a heartbeat after the frames
    committed = gw.committed
    # the open utterance keeps the commit point at its start: before sentence 2's first frame
    assert committed <= spans[1][0] // (16 * FRAME_MS) < mid_seq
    owner_of(procs, gw.owner).kill()
    resumed_at = await gw.reopen_and_replay()
    assert resumed_at == committed
    await speak(gw, pcm[middle:])  # the badge keeps talking
    got = await finals.wait_for(3)
    await asyncio.sleep(1.0)  # nothing more (no duplicate) arrives
    texts = [t.text for t in finals.items]
    assert len(finals.items) == 3, texts
    assert speech.wer(sentences[1], texts[1]) <= 0.2, texts  # whole, not half a sentence
    assert speech.wer(" ".join(sentences), " ".join(texts)) <= 0.15, texts
    ids = [t.utterance_id for t in got]
    assert len(set(ids)) == 3 and all(i.startswith(f"{gw.stream_id}:") for i in ids)
    assert all(t.meeting_id == "m-1" and t.mode == "meeting" for t in got)
    assert got[1].start_ms < spans[1][0] / 16 < got[1].end_ms  # stream time, across owners
    await finals.stop()


@pytest.mark.timeout(180)
async def test_a_retranscribed_utterance_has_the_same_id_and_is_stored_once(
    spawn_service: Any, nc: NATS
) -> None:
    """The owner dies after publishing a final but before any heartbeat moved the commit point:
    the next owner transcribes it again from the start, under the same id; JetStream drops the
    duplicate."""
    procs = await replicas(spawn_service, nc, 2)
    pcm = speech.samples("weather_fast")
    spans = speech.sentence_spans(pcm)
    dev, finals = await listening(nc)
    gw = Gateway(nc, dev)
    await gw.start()
    await speak(gw, pcm[: spans[0][1] + 16000])
    first = (await finals.wait_for(1))[0]
    owner_of(procs, gw.owner).kill()
    gw.beats.clear()  # as if no heartbeat after the final had reached the gateway
    assert await gw.reopen_and_replay() == 0
    await gw.wait_processed()
    await gw.control("flush")
    await asyncio.sleep(0.8)  # the heartbeat after the flush
    deadline = time.monotonic() + 20
    while gw.committed < gw.seq - 20:  # re-transcribed and acknowledged again
        assert time.monotonic() < deadline, gw.committed
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    assert [t.utterance_id for t in finals.items] == [first.utterance_id]
    # the new owner did transcribe it again (its event says so), under the same id
    assert (gw.owner, first.utterance_id) in [(o, t.utterance_id) for o, t in gw.events]
    await finals.stop()


@pytest.mark.timeout(120)
async def test_listen_boundaries_are_applied_at_their_place_in_the_audio(
    spawn_service: Any, nc: NATS
) -> None:
    """Boundaries sent ahead of the audio they belong to (a replay) wait for their seq."""
    await replicas(spawn_service, nc, 1, SUPIE_MEETING__MANUAL_LISTEN_FALLBACK_MS="60000")
    pcm = speech.samples("meeting_us")
    spans = speech.sentence_spans(pcm)
    sentences = speech.references()["meeting_us"]
    dev, finals = await listening(nc)
    gw = Gateway(nc, dev, listen_mode="manual")
    await gw.start()
    frame = 16 * FRAME_MS
    stop_1 = (spans[0][1] + 4000) // frame  # in the pause after sentence 1
    stop_2 = (spans[1][1] + 4000) // frame
    await gw.control("listen_stop", at_seq=stop_1)
    await gw.control("listen_start", at_seq=stop_1 + 1, listen_mode="manual")
    await gw.control("listen_stop", at_seq=stop_2)
    await speak(gw, pcm[: spans[2][0]])
    got = await finals.wait_for(2)
    await asyncio.sleep(1.0)
    assert len(finals.items) == 2, [t.text for t in finals.items]
    assert speech.wer(sentences[0], got[0].text) <= 0.2, got[0].text
    assert speech.wer(sentences[1], got[1].text) <= 0.2, got[1].text
    assert abs(got[0].end_ms - stop_1 * FRAME_MS) <= 400  # cut at the boundary, not the pause
    await finals.stop()


@pytest.mark.timeout(120)
async def test_audio_that_stops_mid_utterance_is_finalized(spawn_service: Any, nc: NATS) -> None:
    """No listen stop, no silence, no close: the gateway died mid-sentence."""
    await replicas(spawn_service, nc, 1, SUPIE_ASR__STALL_FLUSH_MS="1500")
    pcm = speech.samples("weather_fast")
    spans = speech.sentence_spans(pcm)
    dev, finals = await listening(nc)
    gw = Gateway(nc, dev)
    await gw.start()
    await speak(gw, pcm[: spans[0][1]])  # stops dead at the sentence's last sample
    await gw.wait_processed()
    got = await finals.wait_for(1, within_s=15)
    assert speech.wer(speech.references()["weather_fast"][0], got[0].text) <= 0.2
    await finals.stop()


@pytest.mark.timeout(120)
async def test_routing_context_follows_the_route_control(spawn_service: Any, nc: NATS) -> None:
    await replicas(spawn_service, nc, 1)
    pcm = speech.samples("weather_fast")
    spans = speech.sentence_spans(pcm)
    dev, finals = await listening(nc)
    gw = Gateway(nc, dev, mode="meeting", meeting_id="m-a")
    await gw.start()
    await speak(gw, pcm[: spans[0][1] + 12000])
    await finals.wait_for(1)
    await gw.control("route", mode="working", meeting_id=None)
    await speak(gw, pcm[spans[0][1] + 12000 :])
    got = await finals.wait_for(2)
    assert (got[0].mode, got[0].meeting_id) == ("meeting", "m-a")
    assert (got[1].mode, got[1].meeting_id) == ("working", None)
    await finals.stop()


@pytest.mark.timeout(180)
async def test_a_final_survives_a_nats_outage(spawn_service: Any, tmp_path: Path) -> None:
    """NATS goes away right as a final is due and comes back (same port, same JetStream store)
    seconds later: the final is retried until JetStream has it."""
    from supie_common.bus import connect_nats

    server = EmbeddedNats(tmp_path / "own-nats")
    server.start()
    port = server.port
    nc = await connect_nats(server.url, "durability-test")
    try:
        proc = spawn_service("supie_asr", {**ASR_ENV, "SUPIE_NATS__URL": server.url})
        await proc.wait_healthy(nc, "asr", timeout=90)
        pcm = speech.samples("weather_fast")
        spans = speech.sentence_spans(pcm)
        dev = device()
        gw = Gateway(nc, dev)
        await gw.start()
        await speak(gw, pcm[: spans[0][1]])
        await gw.wait_processed()
        server.kill()  # the utterance is open: its final comes with the stall flush, NATS down
        await asyncio.sleep(5.0)
        server = EmbeddedNats(tmp_path / "own-nats", port=port)
        server.start()
        finals = Finals()
        deadline = time.monotonic() + 30
        while True:
            try:
                await finals.start(nc, dev)
                break
            except Exception:
                assert time.monotonic() < deadline, "NATS did not come back"
                await asyncio.sleep(0.5)
        got = await finals.wait_for(1, within_s=30)
        assert speech.wer(speech.references()["weather_fast"][0], got[0].text) <= 0.2
        assert "not yet acknowledged by JetStream" in proc.log()
        await finals.stop()
    finally:
        await nc.close()
        server.stop()


@pytest.mark.timeout(180)
async def test_frames_the_bus_lost_are_replayed_not_transcribed_around(
    spawn_service: Any, nc: NATS
) -> None:
    """Core NATS drops what is published to a subscription that is not back yet (nats-server
    restarted and the gateway reconnected before the asr): the owner sees the hole in the
    sequence numbers, hands the stream back without finishing the utterance, and the gateway's
    replay from ``committed_seq`` gives the next owner the whole sentence."""
    from supie_gateway.asr_link import AsrStream

    (proc,) = await replicas(spawn_service, nc, 1)
    pcm = speech.samples("meeting_us")
    spans = speech.sentence_spans(pcm)
    sentences = speech.references()["meeting_us"]
    dev, finals = await listening(nc)
    req = AsrOpenRequest(
        device_id=dev,
        session_id=uuid.uuid4().hex,
        gateway_id="test-gw",
        frame_duration_ms=FRAME_MS,
        meeting_id="m-gap",
        mode="meeting",
    )

    async def on_transcript(t: Transcript) -> None:
        return None

    stream = AsrStream(nc, req, on_transcript)
    # ~0.9 s in the middle of sentence 2 never reach the first owner
    first_lost = (spans[1][0] + spans[1][1]) // 2 // (16 * FRAME_MS)
    lost = range(first_lost, first_lost + 15)
    publish_frame = stream._publish_frame

    async def lossy_bus(seq: int, payload: bytes) -> None:
        if seq in lost and stream.reopens == 0:
            return
        await publish_frame(seq, payload)

    stream._publish_frame = lossy_bus  # type: ignore[method-assign]
    await stream.open()
    try:
        packets = OpusEncoder(frame_ms=FRAME_MS).encode_all(pcm)
        start = time.monotonic()
        for i, packet in enumerate(packets):
            delay = start + i * FRAME_MS / 1000 / 4.0 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await stream.send_audio(packet)
        got = await finals.wait_for(3, within_s=60)
        await asyncio.sleep(1.0)  # nothing more (no duplicate) arrives
        texts = [t.text for t in got]
        assert len(got) == 3, texts
        assert speech.wer(sentences[1], texts[1]) <= 0.2, texts  # the hole was filled
        assert speech.wer(" ".join(sentences), " ".join(texts)) <= 0.15, texts
        assert stream.reopens >= 1
        assert "handing it back for a replay" in proc.log()
        assert all(t.meeting_id == "m-gap" for t in got)
    finally:
        await stream.close()
        await finals.stop()
