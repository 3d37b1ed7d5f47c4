"""The asr service: answers stream opens (queue group), owns and heartbeats its streams, and
publishes every final durably (JetStream, deduplicated by utterance id) before it counts as
handled."""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from loguru import logger
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pydantic import ValidationError
from supie_common.bus import ensure_transcripts_stream
from supie_common.contracts import (
    AsrControl,
    AsrEvent,
    AsrOpenReply,
    AsrOpenRequest,
    Queues,
    Streams,
    Subjects,
    Transcript,
    decode,
    encode,
)
from supie_common.service import Service

from .config import AsrSettings
from .pool import EnginePool
from .stream import StreamWorker
from .vad import SileroVad

__all__ = ["AsrService", "stream_wildcard"]


def stream_wildcard(stream_id: str) -> str:
    """One subscription for audio AND control keeps their relative order (a listen stop is
    applied after the frames sent before it)."""
    return Subjects.asr_audio(stream_id).rsplit(".", 1)[0] + ".*"


class AsrService(Service[AsrSettings]):
    name = "asr"

    def __init__(self, settings: AsrSettings, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self.streams: dict[str, StreamWorker] = {}
        self._subs: dict[str, tuple[StreamWorker, Any]] = {}
        self.pool: EnginePool | None = None
        self.vad: SileroVad | None = None
        self.js: JetStreamContext | None = None
        self.finals_published = 0
        self.final_retries = 0
        self._vad_pool = ThreadPoolExecutor(
            min(2, os.cpu_count() or 1), thread_name_prefix="asr-vad"
        )
        self._open_sub: Any = None
        self.dropped_ms_total = 0
        self.bad_frames_total = 0
        self.decoded_ahead_total = 0

    def models_dir(self) -> Path:
        return self.settings.asr.models_dir or self.settings.data_dir / "models"

    async def on_start(self) -> None:
        cfg = self.settings.asr
        self.vad = SileroVad()
        self.js = self.nc.jetstream()
        await ensure_transcripts_stream(self.js, self.settings.nats.stream_replicas)
        self.pool = EnginePool(cfg, self.models_dir())
        await self.pool.start()
        self.spawn(self._heartbeats(), name="asr-heartbeats", critical=True)
        # only now take streams: a replica still loading its model must not win an open
        self._open_sub = await self.nc.subscribe(
            Subjects.ASR_OPEN, queue=Queues.ASR, cb=self._on_open
        )

    async def on_stop(self) -> None:
        if self._open_sub is not None:
            await self._open_sub.unsubscribe()
        # finish what was said, then tell the gateways to re-open elsewhere
        await asyncio.gather(
            *(s.close("asr replica shutting down") for s in list(self.streams.values())),
            return_exceptions=True,
        )
        if self.pool is not None:
            await self.pool.stop()
        self._vad_pool.shutdown(wait=False, cancel_futures=True)

    def on_bus_reconnected(self) -> None:
        # Audio and boundaries the gateways published while our subscriptions were not yet
        # back on the server are gone; the gateways still hold them (from committed_seq), so
        # every stream is handed back and replayed to its next owner.
        for worker in list(self.streams.values()):
            worker.abort("NATS reconnected")

    async def on_config(self, old: AsrSettings, new: AsrSettings, keys: list[str]) -> None:
        if any(
            k.startswith(("asr.model", "asr.engine", "asr.compute_type", "asr.cpu_threads"))
            for k in keys
        ):
            logger.warning("asr model settings changed: they apply after a restart")

    def health_detail(self) -> dict[str, Any]:
        rec = self.pool
        return {
            "streams": len(self.streams),
            "dropped_ms_total": self.dropped_ms_total
            + sum(s.dropped_ms for s in self.streams.values()),
            "bad_frames_total": self.bad_frames_total
            + sum(s.bad_frames for s in self.streams.values()),
            "recognizer_backlog": rec.backlog if rec else 0,
            "utterances": rec.utterances if rec else 0,
            "decoded_ahead": self.decoded_ahead_total
            + sum(s.decoded_ahead for s in self.streams.values()),
            "batches": rec.batches if rec else 0,
            "engine_busy_s": round(rec.busy_s, 3) if rec else 0,
            "models": sorted(rec.recognizers) if rec else [],
            "finals_published": self.finals_published,
            "final_publish_retries": self.final_retries,
        }

    # -- opening -------------------------------------------------------------------------------
    async def _on_open(self, msg: Msg) -> None:
        try:
            req = decode(AsrOpenRequest, msg.data)
        except ValidationError as exc:
            err = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            await msg.respond(
                encode(
                    AsrOpenReply(
                        ok=False,
                        stream_id="",
                        owner=self.instance_id,
                        error=f"invalid open request: {err}",
                    )
                )
            )
            return
        problem = None
        if req.sample_rate != 16000 or req.channels != 1:
            problem = f"expected 16000 Hz mono, got {req.sample_rate} Hz x {req.channels}"
        if problem or self.stopping:
            await msg.respond(
                encode(
                    AsrOpenReply(
                        ok=False,
                        stream_id=req.stream_id,
                        owner=self.instance_id,
                        error=problem or "replica shutting down",
                    )
                )
            )
            return
        existing = self.streams.get(req.stream_id)
        if existing is not None and existing.letting_go:
            # it is letting go (idle, or handed back for a replay): a fresh owner takes the
            # replay, the old one must not swallow it
            await self._detach(existing)
            existing = None
        if existing is None:
            await self._start_stream(req)
        reply = AsrOpenReply(
            ok=True,
            stream_id=req.stream_id,
            owner=self.instance_id,
            heartbeat_ms=self.settings.asr.heartbeat_ms,
        )
        await msg.respond(encode(reply))
        await self._event(req.stream_id, "heartbeat")

    async def _start_stream(self, req: AsrOpenRequest) -> None:
        assert self.vad is not None and self.pool is not None
        stream_id = req.stream_id

        async def publish(
            kind: Literal["transcript", "error", "closed"],
            transcript: Transcript | None,
            error: str | None,
        ) -> None:
            if kind == "closed":
                # detached first: the re-open this event triggers gets a fresh worker
                await self._detach(worker)
            await self._event(stream_id, kind, worker=worker, transcript=transcript, error=error)

        worker = StreamWorker(
            req,
            cfg=self.settings.asr,
            manual_fallback_ms=self.settings.meeting.manual_listen_fallback_ms,
            vad=self.vad,
            executor=self._vad_pool,
            pool=self.pool,
            publish=publish,
            publish_final=self._publish_final,
        )
        self.streams[stream_id] = worker
        audio_subject = Subjects.asr_audio(stream_id)
        control_subject = Subjects.asr_control(stream_id)

        async def on_message(msg: Msg) -> None:
            if msg.subject == audio_subject:
                worker.add_audio(msg.data, msg.headers)
            elif msg.subject == control_subject:
                try:
                    worker.add_control(decode(AsrControl, msg.data))
                except ValidationError as exc:
                    logger.warning("asr stream {}: bad control message: {}", stream_id, exc)
            # our own events come back on the wildcard too; nothing to do with them

        self._subs[stream_id] = (
            worker,
            await self.nc.subscribe(
                stream_wildcard(stream_id), cb=on_message, pending_msgs_limit=100_000
            ),
        )
        self.spawn(self._run_stream(worker), name=f"asr-stream-{stream_id}")
        logger.info(
            "asr stream {} opened for device {} (codec {}, mode {}, meeting {}, resume seq {})",
            stream_id,
            req.device_id,
            req.codec,
            req.listen_mode,
            req.meeting_id,
            req.resume_seq,
        )

    async def _run_stream(self, worker: StreamWorker) -> None:
        try:
            await worker.run()
        finally:
            await self._release(worker)

    async def _detach(self, worker: StreamWorker) -> None:
        """Stop feeding this worker (idempotent); a newer worker of the stream stays."""
        stream_id = worker.stream_id
        entry = self._subs.get(stream_id)
        if entry is not None and entry[0] is worker:
            del self._subs[stream_id]
            try:
                await entry[1].unsubscribe()
            except Exception as exc:
                logger.debug("unsubscribe {}: {}", stream_id, exc)
        if self.streams.get(stream_id) is worker:
            del self.streams[stream_id]

    async def _release(self, worker: StreamWorker) -> None:
        await self._detach(worker)
        self.dropped_ms_total += worker.dropped_ms
        self.bad_frames_total += worker.bad_frames
        self.decoded_ahead_total += worker.decoded_ahead
        logger.info(
            "asr stream {} released: {} frames, {} gaps, {} bad, {} ms dropped, {} utterances",
            worker.stream_id,
            worker.frames,
            worker.gaps,
            worker.bad_frames,
            worker.dropped_ms,
            worker.utterances,
        )

    # -- events --------------------------------------------------------------------------------
    async def _event(
        self,
        stream_id: str,
        kind: Literal["heartbeat", "transcript", "error", "closed"],
        *,
        worker: StreamWorker | None = None,
        transcript: Transcript | None = None,
        error: str | None = None,
    ) -> None:
        worker = worker or self.streams.get(stream_id)
        event = AsrEvent(
            kind=kind,
            stream_id=stream_id,
            owner=self.instance_id,
            transcript=transcript,
            error=error,
            frames=worker.next_seq if worker else 0,
            committed_seq=worker.committed_seq if worker else 0,
            gaps=worker.gaps if worker else 0,
            dropped_ms=worker.dropped_ms if worker else 0,
        )
        try:
            await self.nc.publish(Subjects.asr_events(stream_id), encode(event))
        except Exception as exc:
            logger.warning("asr stream {}: could not publish {} event: {}", stream_id, kind, exc)

    async def _heartbeats(self) -> None:
        """One loop for all streams; also releases streams nobody feeds any more."""
        while True:
            await asyncio.sleep(self.settings.asr.heartbeat_ms / 1000)
            now = time.monotonic()
            for worker in list(self.streams.values()):
                if worker.letting_go:
                    continue
                if now - worker.last_activity > self.settings.asr.stream_idle_s:
                    self.spawn(worker.close("idle"), name=f"asr-idle-{worker.stream_id}")
                    continue
                if worker.stalled(now):
                    logger.info(
                        "asr stream {}: no audio for {:.1f} s mid-utterance, finalizing it",
                        worker.stream_id,
                        now - worker.last_audio,
                    )
                    worker.add_control(AsrControl(action="flush"))
                await self._event(worker.stream_id, "heartbeat", worker=worker)

    async def _publish_final(self, transcript: Transcript) -> None:
        """Durably: JetStream, ``Nats-Msg-Id`` = utterance id (a re-transcribed utterance is a
        duplicate JetStream drops), retried until acknowledged; NATS may be away for a while."""
        assert self.js is not None
        subject = Subjects.transcript_final(transcript.device_id)
        payload = encode(transcript)
        headers = {"Nats-Msg-Id": transcript.utterance_id}
        delay = 0.1
        while True:
            try:
                await self.js.publish(
                    subject, payload, timeout=2.0, stream=Streams.TRANSCRIPTS, headers=headers
                )
                self.finals_published += 1
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.final_retries += 1
                logger.warning(
                    "asr final {} not yet acknowledged by JetStream ({}: {}); retrying",
                    transcript.utterance_id,
                    type(exc).__name__,
                    exc,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
