"""One ASR stream owned by this replica: a bounded inbox of audio frames and controls (kept in
arrival order), decode + VAD + segmentation in a worker thread, finals via the recognizer."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Literal, TypeAlias

import numpy as np
from loguru import logger
from supie_common.audio import OpusDecoder, pcm16_to_float
from supie_common.contracts import AsrControl, AsrOpenRequest, AudioHeaders, Transcript
from supie_common.settings import AsrSection

from .engine import EngineResult
from .recognizer import Recognizer
from .segmenter import Segmenter, SegmenterConfig, Utterance
from .vad import SileroVad

__all__ = ["StreamWorker", "AudioItem"]


@dataclass
class AudioItem:
    seq: int | None
    payload: bytes


InboxItem: TypeAlias = AudioItem | AsrControl
Publish = Callable[
    [Literal["transcript", "error", "closed"], Transcript | None, str | None], Awaitable[None]
]


class StreamWorker:
    """State and processing of one stream. Everything but :meth:`run` is called on the loop."""

    def __init__(
        self,
        req: AsrOpenRequest,
        *,
        cfg: AsrSection,
        manual_fallback_ms: int,
        vad: SileroVad,
        executor: Executor,
        recognizer: Recognizer,
        publish: Publish,
    ) -> None:
        self.req = req
        self.stream_id = req.stream_id
        self.cfg = cfg
        self.manual_fallback_ms = manual_fallback_ms
        self.vad = vad
        self.vad_state = vad.new_state()
        self.executor = executor
        self.recognizer = recognizer
        self.publish = publish
        self.listen_mode = req.listen_mode
        self.segmenter = Segmenter(
            SegmenterConfig(
                threshold=cfg.vad_threshold,
                min_silence_ms=cfg.min_silence_ms,
                speech_pad_ms=cfg.speech_pad_ms,
                min_speech_ms=cfg.min_speech_ms,
                max_utterance_s=cfg.max_utterance_s,
                decode_margin_ms=cfg.decode_margin_ms,
            ),
            vad_cuts=req.listen_mode != "manual",
            stream_id=req.stream_id,
        )
        self.decoder = OpusDecoder() if req.codec == "opus" else None
        frame_ms = max(req.frame_duration_ms, 10)
        self.frame_ms = frame_ms
        self.inbox: deque[InboxItem] = deque()
        self.max_frames = max(1, int(cfg.max_buffer_s * 1000 / frame_ms))
        self.queued_frames = 0
        self.wake = asyncio.Event()
        self.next_seq = req.resume_seq
        self.frames = 0
        self.gaps = 0
        self.duplicates = 0
        self.bad_frames = 0
        self.dropped_ms = 0
        self.utterances = 0
        self.last_boundary_ms = 0
        self.last_activity = time.monotonic()
        self.closing = False
        self.closed = asyncio.Event()
        self._errors_sent_at = time.monotonic()
        self._error_tokens = 5.0
        self._errors_suppressed = 0
        self._drop_warned_at = 0.0
        self._pending: set[asyncio.Task[None]] = set()
        self._partial_inflight = False
        self._last_partial_ms = 0
        self._close_reason: str | None = None

    # -- intake (event loop, must stay cheap) -------------------------------------------------
    def add_audio(self, payload: bytes, headers: dict[str, str] | None) -> None:
        self.last_activity = time.monotonic()
        seq: int | None = None
        raw = (headers or {}).get(AudioHeaders.SEQ)
        if raw is not None:
            try:
                seq = int(raw)
            except ValueError:
                seq = None
        if seq is not None:
            if seq < self.next_seq:
                self.duplicates += 1  # replayed after a re-open, or out of order: already past
                return
            if seq > self.next_seq:
                self.gaps += seq - self.next_seq
            self.next_seq = seq + 1
        else:
            self.next_seq += 1
        self.frames += 1
        if self.queued_frames >= self.max_frames:
            self._drop_oldest_audio()
        self.inbox.append(AudioItem(seq, payload))
        self.queued_frames += 1
        self.wake.set()

    def add_control(self, ctl: AsrControl) -> None:
        self.last_activity = time.monotonic()
        self.inbox.append(ctl)
        self.wake.set()

    def _drop_oldest_audio(self) -> None:
        for i, item in enumerate(self.inbox):
            if isinstance(item, AudioItem):
                del self.inbox[i]
                self.queued_frames -= 1
                self.dropped_ms += self.frame_ms
                break
        now = time.monotonic()
        if now - self._drop_warned_at > 5:
            self._drop_warned_at = now
            logger.warning(
                "asr stream {} is behind: dropping oldest audio ({} ms so far)",
                self.stream_id,
                self.dropped_ms,
            )

    # -- processing ----------------------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.closed.is_set():
            if not self.inbox:
                self.wake.clear()
                await self.wake.wait()
                continue
            audio: list[AudioItem] = []
            while self.inbox and isinstance(self.inbox[0], AudioItem):
                item = self.inbox.popleft()
                assert isinstance(item, AudioItem)
                audio.append(item)
            self.queued_frames -= len(audio)
            if audio:
                utts, errors = await loop.run_in_executor(self.executor, self._process, audio)
                for err in errors:
                    await self._report_error(err)
                for utt in utts:
                    self._recognise(utt)
                self._maybe_partial()
                continue
            ctl = self.inbox.popleft()
            assert isinstance(ctl, AsrControl)
            await self._apply_control(ctl)

    def _process(self, items: list[AudioItem]) -> tuple[list[Utterance], list[str]]:
        """Worker thread: decode, VAD, segment. Bad frames are skipped and reported."""
        utts: list[Utterance] = []
        errors: list[str] = []
        for item in items:
            try:
                samples = self._decode(item.payload)
            except ValueError as exc:
                self.bad_frames += 1
                errors.append(f"bad audio frame seq={item.seq}: {exc}")
                continue
            if samples.size == 0:
                continue
            windows, probs = self.vad.process(self.vad_state, samples)
            seg = self.segmenter
            if (
                not seg.vad_cuts
                and self.listen_mode == "manual"
                and seg.now_ms - self.last_boundary_ms > self.manual_fallback_ms
            ):
                seg.vad_cuts = True  # no device boundary for too long: server VAD takes over
                logger.info(
                    "asr stream {}: no manual boundary for {} ms, using server VAD",
                    self.stream_id,
                    seg.now_ms - self.last_boundary_ms,
                )
            utts.extend(seg.push(windows, probs))
        return utts, errors

    def _decode(self, payload: bytes) -> np.ndarray:
        if self.decoder is not None:
            pcm = self.decoder.decode(payload)
        else:
            if len(payload) % 2:
                raise ValueError(f"pcm frame of {len(payload)} bytes is not whole s16le samples")
            pcm = np.frombuffer(payload, dtype=np.int16)
        if len(pcm) > 16000 * 2:
            raise ValueError(f"frame of {len(pcm)} samples is longer than 2 s")
        return pcm16_to_float(pcm)

    async def _apply_control(self, ctl: AsrControl) -> None:
        seg = self.segmenter
        if ctl.action in ("listen_start", "listen_stop"):
            if ctl.listen_mode is not None:
                self.listen_mode = ctl.listen_mode
            # a device boundary: whatever was pending is one utterance
            self.last_boundary_ms = seg.now_ms
            self._flush()
            seg.vad_cuts = self.listen_mode != "manual"
        elif ctl.action == "flush":
            self._flush()
        elif ctl.action == "close":
            await self._close(self._close_reason or "closed by gateway")

    def _flush(self) -> None:
        utt = self.segmenter.flush()
        if utt is not None:
            self._recognise(utt)

    async def close(self, reason: str) -> None:
        """Close from outside the stream (shutdown, idle): queued behind the audio received."""
        self._close_reason = reason
        self.add_control(AsrControl(action="close"))
        await self.closed.wait()

    async def _close(self, reason: str) -> None:
        """Flush, wait for the last finals, then release the stream."""
        if self.closing:
            return
        self.closing = True
        self._flush()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await self.publish("closed", None, reason)
        self.closed.set()
        self.wake.set()

    # -- recognition ---------------------------------------------------------------------------
    def _recognise(self, utt: Utterance) -> None:
        self.utterances += 1
        utterance_id = f"{self.stream_id}-{self.utterances}"
        future = self.recognizer.submit(utt.audio, self.req.language or self.cfg.language)
        task = asyncio.create_task(
            self._deliver(utt, utterance_id, future), name=f"asr-final-{utterance_id}"
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        self._last_partial_ms = 0

    async def _deliver(
        self, utt: Utterance, utterance_id: str, future: asyncio.Future[EngineResult]
    ) -> None:
        try:
            res = await future
        except Exception as exc:
            await self._report_error(f"recognition failed for {utterance_id}: {exc}")
            return
        if not res.text.strip():
            logger.debug(
                "stream {} utterance {} recognised as nothing", self.stream_id, utterance_id
            )
            return
        await self.publish(
            "transcript",
            self._transcript(
                utt.start_ms,
                utt.end_ms,
                utterance_id,
                res.text,
                res.language,
                res.compute_ms,
                "final",
            ),
            None,
        )

    def _transcript(
        self,
        start_ms: int,
        end_ms: int,
        utterance_id: str,
        text: str,
        language: str,
        compute_ms: int,
        kind: Literal["partial", "final"],
    ) -> Transcript:
        r = self.req
        return Transcript(
            device_id=r.device_id,
            session_id=r.session_id,
            gateway_id=r.gateway_id,
            stream_id=r.stream_id,
            utterance_id=utterance_id,
            kind=kind,
            text=text.strip(),
            language=language,
            start_ms=start_ms,
            end_ms=end_ms,
            audio_ms=end_ms - start_ms,
            compute_ms=compute_ms,
            meeting_id=r.meeting_id,
        )

    def _maybe_partial(self) -> None:
        seg = self.segmenter
        if not self.cfg.partials or not seg.in_speech or self._partial_inflight:
            return
        pending = seg.pending_ms()
        if pending - self._last_partial_ms < self.cfg.partial_interval_ms:
            return
        audio = seg.pending_audio()
        if audio is None:
            return
        self._last_partial_ms = pending
        self._partial_inflight = True
        start_ms = (seg.speech_start or 0) * 32
        utterance_id = f"{self.stream_id}-{self.utterances + 1}"
        future = self.recognizer.submit(audio, self.req.language or self.cfg.language, partial=True)

        async def deliver() -> None:
            try:
                res = await future
                if res.text.strip() and not self.closing:
                    await self.publish(
                        "transcript",
                        self._transcript(
                            start_ms,
                            seg.now_ms,
                            utterance_id,
                            res.text,
                            res.language,
                            res.compute_ms,
                            "partial",
                        ),
                        None,
                    )
            except Exception as exc:
                logger.debug("partial failed: {}", exc)
            finally:
                self._partial_inflight = False

        task = asyncio.create_task(deliver(), name=f"asr-partial-{utterance_id}")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _report_error(self, message: str) -> None:
        logger.warning("asr stream {}: {}", self.stream_id, message)
        # token bucket (burst 5): the log keeps every one, the gateway gets a sample
        now = time.monotonic()
        rate = self.cfg.error_events_per_s
        self._error_tokens = min(5.0, self._error_tokens + (now - self._errors_sent_at) * rate)
        self._errors_sent_at = now
        if self._error_tokens < 1.0:
            self._errors_suppressed += 1
            return
        self._error_tokens -= 1.0
        if self._errors_suppressed:
            message += f" (+{self._errors_suppressed} similar errors not reported)"
            self._errors_suppressed = 0
        await self.publish("error", None, message)
