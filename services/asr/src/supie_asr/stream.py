"""One ASR stream owned by this replica: a bounded inbox of audio frames and controls (kept in
arrival order), decode + VAD + segmentation in a worker thread, finals via the recognizer of the
stream's language.

Durability (a replica may die at any time): every frame has a sequence number; an utterance is
named after the sequence of its first frame (``<stream_id>:<start_seq>``), so whichever replica
transcribes it gives it the same id; and :attr:`StreamWorker.committed_seq` says up to where the
audio is fully handled (its finals acknowledged by JetStream, or it was silence), which is where
the gateway replays from when it moves the stream to another replica. Controls may carry
``at_seq``: replayed boundaries are applied at their place in the audio.
"""

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

from .engine import AUTO, EngineResult, Request
from .pool import EnginePool, LanguageError
from .recognizer import Recognizer
from .segmenter import Segmenter, SegmenterConfig, Utterance
from .vad import WINDOW, SileroVad

__all__ = ["StreamWorker", "AudioItem"]

_CONTEXT_CHARS = 200  # previous text handed to whisper (it keeps at most 223 tokens anyway)
_PROMPT_RESET_TEMPERATURE = 0.5  # as transcribe(): a struggling decode does not become context


@dataclass
class AudioItem:
    seq: int
    payload: bytes


InboxItem: TypeAlias = AudioItem | AsrControl
Publish = Callable[
    [Literal["transcript", "error", "closed"], Transcript | None, str | None], Awaitable[None]
]
PublishFinal = Callable[[Transcript], Awaitable[None]]


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
        pool: EnginePool,
        publish: Publish,
        publish_final: PublishFinal,
    ) -> None:
        self.req = req
        self.stream_id = req.stream_id
        self.cfg = cfg
        self.manual_fallback_ms = manual_fallback_ms
        self.vad = vad
        self.vad_state = vad.new_state()
        self.executor = executor
        self.pool = pool
        self.publish = publish
        self.publish_final = publish_final
        self.language = (req.language or cfg.language_for(req.device_id)).lower()
        self.recognizer: Recognizer | None = None
        self.mode = req.mode
        self.meeting_id = req.meeting_id
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
        # stream time of this owner's first frame (a re-opened stream starts at resume_seq)
        self.base_ms = req.resume_seq * frame_ms
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
        self.last_audio = time.monotonic()
        self.closing = False
        self._aborting = False
        self.closed = asyncio.Event()
        self._errors_sent_at = time.monotonic()
        self._error_tokens = 5.0
        self._errors_suppressed = 0
        self._drop_warned_at = 0.0
        self._pending: set[asyncio.Task[None]] = set()
        self._chain: asyncio.Task[None] | None = None  # last final in flight (finals in order)
        self._unpublished: dict[str, int] = {}  # utterance id -> start seq, until acked
        # an utterance decoded ahead while its end-of-speech pause is waited out:
        # ((first window, end ms), the decode), used if the cut gives that same utterance
        self._ahead: tuple[tuple[int, int], asyncio.Future[EngineResult]] | None = None
        self.decoded_ahead = 0  # finals whose decode was ready before the cut
        self._partial_inflight = False
        self._last_partial_ms = 0
        self._close_reason: str | None = None
        self._context = ""
        self._scheduled: list[AsrControl] = []  # controls waiting for their at_seq
        # (first sample of a processed frame since this owner started, its seq): maps audio
        # positions of the segmenter back to frame sequence numbers
        self._frame_starts: deque[tuple[int, int]] = deque()
        self._samples = 0  # touched by the worker thread only
        self._position = req.resume_seq  # seq of the next frame to be processed
        # seq of the first frame the segmenter still needs, updated on the loop only after the
        # utterances cut from it are registered, so a heartbeat never commits past a final
        self._retained_seq = req.resume_seq

    # -- positions -----------------------------------------------------------------------------
    def _seq_at_window(self, window: int) -> int:
        """Sequence number of the frame holding the first sample of a VAD window."""
        sample = window * WINDOW
        seq = self._position
        for start, frame_seq in reversed(self._frame_starts):
            seq = frame_seq
            if start <= sample:
                break
        return seq

    @property
    def committed_seq(self) -> int:
        """Every frame before this is fully handled: transcribed and acknowledged, or silence."""
        candidates = [self._retained_seq, *self._unpublished.values()]
        for item in self.inbox:
            if isinstance(item, AudioItem):
                candidates.append(item.seq)
                break
        return min(candidates)

    def _advance(self) -> None:
        """After the segmenter moved (on the loop): what is retained, and forget older frames."""
        retained = self.segmenter.retained_from()
        self._retained_seq = self._seq_at_window(retained) if self._frame_starts else self._position
        keep_sample = retained * WINDOW
        while len(self._frame_starts) > 1 and self._frame_starts[1][0] <= keep_sample:
            self._frame_starts.popleft()

    # -- intake (event loop, must stay cheap) -------------------------------------------------
    def add_audio(self, payload: bytes, headers: dict[str, str] | None) -> None:
        now = time.monotonic()
        self.last_activity = now
        self.last_audio = now
        seq: int | None = None
        raw = (headers or {}).get(AudioHeaders.SEQ)
        if raw is not None:
            try:
                seq = int(raw)
            except ValueError:
                seq = None
        if self._aborting:
            return  # the gateway sends all of it again to the next owner
        if seq is not None:
            if seq < self.next_seq:
                self.duplicates += 1  # replayed after a re-open, or out of order: already past
                return
            if seq > self.next_seq:
                # frames the bus lost (a NATS restart between the gateway's reconnect and ours):
                # the gateway still holds them, so hand the stream back rather than transcribe
                # around a hole
                self.gaps += seq - self.next_seq
                self.abort(f"{seq - self.next_seq} frames lost before seq {seq}")
                return
        else:
            seq = self.next_seq
        self.next_seq = seq + 1
        self.frames += 1
        if self.queued_frames >= self.max_frames:
            self._drop_oldest_audio()
        self.inbox.append(AudioItem(seq, payload))
        self.queued_frames += 1
        self.wake.set()

    def add_control(self, ctl: AsrControl) -> None:
        if self._aborting:
            return
        self.last_activity = time.monotonic()
        self.inbox.append(ctl)
        self.wake.set()

    def abort(self, reason: str) -> None:
        """Give the stream back without finishing the utterance in progress: part of what
        was sent never arrived (audio or a boundary), and the gateway replays everything from
        :attr:`committed_seq` to the next owner, which transcribes that utterance whole.
        Utterances already cut are complete and still published."""
        if self._aborting or self.closing:
            return
        self._aborting = True
        logger.warning("asr stream {}: {}; handing it back for a replay", self.stream_id, reason)
        self.inbox.clear()  # all after committed_seq: replayed
        self.queued_frames = 0
        self._scheduled.clear()
        self._close_reason = f"replay needed: {reason}"
        self.inbox.append(AsrControl(action="close"))
        self.wake.set()

    @property
    def letting_go(self) -> bool:
        """Closing, or handed back for a replay: it takes no more work."""
        return self.closing or self._aborting

    def stalled(self, now: float) -> bool:
        """An utterance is open but no audio came for ``stall_flush_ms`` (the gateway or the
        device went away mid-sentence): time to finalize it."""
        return (
            self.segmenter.in_speech
            and not self.inbox
            and not self.closing
            and (now - self.last_audio) * 1000 >= self.cfg.stall_flush_ms
        )

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
        await self._pick_recognizer()
        loop = asyncio.get_running_loop()
        while not self.closed.is_set():
            if self._apply_due_controls():
                continue
            if not self.inbox:
                self.wake.clear()
                await self.wake.wait()
                continue
            audio: list[AudioItem] = []
            due = self._next_due_seq()
            while self.inbox and isinstance(self.inbox[0], AudioItem):
                if due is not None and self.inbox[0].seq >= due:
                    break  # a scheduled boundary sits before this frame
                item = self.inbox.popleft()
                assert isinstance(item, AudioItem)
                audio.append(item)
            self.queued_frames -= len(audio)
            if audio:
                utts, errors, starts = await loop.run_in_executor(
                    self.executor, self._process, audio
                )
                self._frame_starts.extend(starts)
                self._position = audio[-1].seq + 1
                for utt in utts:
                    self._recognise(utt)
                self._advance()
                for err in errors:
                    await self._report_error(err)
                self._decode_ahead()
                self._maybe_partial()
                continue
            if due is not None and self.inbox and isinstance(self.inbox[0], AudioItem):
                await self._apply_control(self._scheduled.pop(0))
                continue
            ctl = self.inbox.popleft()
            assert isinstance(ctl, AsrControl)
            if ctl.at_seq is not None and ctl.at_seq > self._position and ctl.action != "close":
                self._schedule(ctl)
            else:
                await self._apply_control(ctl)

    def _schedule(self, ctl: AsrControl) -> None:
        self._scheduled.append(ctl)
        self._scheduled.sort(key=lambda c: c.at_seq or 0)

    def _next_due_seq(self) -> int | None:
        return self._scheduled[0].at_seq if self._scheduled else None

    def _apply_due_controls(self) -> bool:
        """Scheduled controls whose position was reached (their frames all processed)."""
        if not self._scheduled:
            return False
        at = self._scheduled[0].at_seq or 0
        if at > self._position:
            return False
        self.inbox.appendleft(self._scheduled.pop(0).model_copy(update={"at_seq": None}))
        return True

    async def _pick_recognizer(self) -> None:
        try:
            self.recognizer, self.language = await self.pool.for_language(self.language)
        except LanguageError as exc:
            await self._report_error(f"{exc}; transcribing this stream as English")
            self.recognizer, self.language = await self.pool.for_language("en")

    def _process(
        self, items: list[AudioItem]
    ) -> tuple[list[Utterance], list[str], list[tuple[int, int]]]:
        """Worker thread: decode, VAD, segment. Bad frames are skipped and reported. Returns
        the utterances ended, the errors, and (first sample, seq) of each decoded frame."""
        utts: list[Utterance] = []
        errors: list[str] = []
        starts: list[tuple[int, int]] = []
        for item in items:
            try:
                samples = self._decode(item.payload)
            except ValueError as exc:
                self.bad_frames += 1
                errors.append(f"bad audio frame seq={item.seq}: {exc}")
                continue
            if samples.size == 0:
                continue
            starts.append((self._samples, item.seq))
            self._samples += int(samples.size)
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
        return utts, errors, starts

    def _decode(self, payload: bytes) -> np.ndarray:
        if not payload:
            raise ValueError("empty frame (0 bytes)")
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
        elif ctl.action == "route":
            self.mode = ctl.mode
            self.meeting_id = ctl.meeting_id
            logger.info(
                "asr stream {}: routing now mode {} meeting {}",
                self.stream_id,
                ctl.mode,
                ctl.meeting_id,
            )
        elif ctl.action == "close":
            await self._close(self._close_reason or "closed by gateway")

    def _flush(self) -> None:
        utt = self.segmenter.flush()
        if utt is not None:
            self._recognise(utt)
        self._advance()

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
        if not self._aborting:
            self._flush()
        if self._ahead is not None:
            self._ahead[1].cancel()
            self._ahead = None
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        await self.publish("closed", None, reason)
        self.closed.set()
        self.wake.set()

    # -- recognition ---------------------------------------------------------------------------
    def _request(self, audio: np.ndarray, *, with_context: bool) -> Request:
        return Request(
            audio=audio,
            language=self.language,
            context=self._context if with_context else "",
            candidates=tuple(self.cfg.auto_languages) if self.language == AUTO else (),
        )

    def _decode_ahead(self) -> None:
        """Start decoding the utterance a silence cut would give, as soon as its audio is all
        in: the same audio and context as after the cut (nothing is in flight before it), so
        the final is the same, only sooner."""
        if not self.cfg.decode_ahead or self.recognizer is None:
            return
        key = self.segmenter.settled_key()
        if key is None or (self._ahead is not None and self._ahead[0] == key):
            return
        if self._ahead is not None:
            self._ahead[1].cancel()  # the pause ended in more speech: that guess is void
            self._ahead = None
        if self._chain is not None and not self._chain.done():
            return  # its context is not known yet
        utt = self.segmenter.settled()
        if utt is None:
            return  # too little voiced audio: the cut will give nothing either
        self._ahead = (key, self.recognizer.submit(self._request(utt.audio, with_context=True)))

    def _take_ahead(self, utt: Utterance) -> asyncio.Future[EngineResult] | None:
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return None
        if ahead[0] == (utt.first_window, utt.end_ms) and not ahead[1].cancelled():
            self.decoded_ahead += 1
            return ahead[1]
        ahead[1].cancel()
        return None

    def _recognise(self, utt: Utterance) -> None:
        self.utterances += 1
        start_seq = self._seq_at_window(utt.first_window)
        utterance_id = f"{self.stream_id}:{start_seq}"
        self._unpublished[utterance_id] = start_seq
        previous = self._chain
        ahead = self._take_ahead(utt)
        task = asyncio.create_task(
            self._deliver(utt, utterance_id, previous, ahead), name=f"asr-final-{utterance_id}"
        )
        self._chain = task
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        self._last_partial_ms = 0

    async def _deliver(
        self,
        utt: Utterance,
        utterance_id: str,
        previous: asyncio.Task[None] | None,
        ahead: asyncio.Future[EngineResult] | None = None,
    ) -> None:
        """One final, after the stream's previous one: each is decoded with the text before it
        as context (as ``transcribe()`` conditions on previous text) and published in order."""
        try:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            assert self.recognizer is not None
            try:
                res = await (
                    ahead or self.recognizer.submit(self._request(utt.audio, with_context=True))
                )
            except Exception as exc:
                await self._report_error(f"recognition failed for {utterance_id}: {exc}")
                return
            self._remember(res)
            if not res.text.strip():
                logger.debug(
                    "stream {} utterance {} recognised as nothing", self.stream_id, utterance_id
                )
                return
            transcript = self._transcript(
                utt.start_ms,
                utt.end_ms,
                utterance_id,
                res.text,
                res.language,
                res.compute_ms,
                "final",
            )
            # the event first (the gateway's live path; cheap), then the durable copy, which
            # alone moves committed_seq past this utterance
            await self.publish("transcript", transcript, None)
            await self.publish_final(transcript)
        finally:
            self._unpublished.pop(utterance_id, None)

    def _remember(self, res: EngineResult) -> None:
        """The final becomes context for the next one, unless decoding it took a fallback:
        text whisper struggled with misleads the next utterance more than no context does."""
        if res.temperature > _PROMPT_RESET_TEMPERATURE:
            self._context = ""
        elif res.temperature == 0 and res.text.strip() and not res.unprimed:
            self._context = (self._context + " " + res.text.strip()).strip()[-_CONTEXT_CHARS:]

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
            start_ms=self.base_ms + start_ms,
            end_ms=self.base_ms + end_ms,
            audio_ms=end_ms - start_ms,
            compute_ms=compute_ms,
            meeting_id=self.meeting_id,
            mode=self.mode,
        )

    def _maybe_partial(self) -> None:
        seg = self.segmenter
        if not self.cfg.partials or not seg.in_speech or self._partial_inflight:
            return
        if self.recognizer is None:
            return
        pending = seg.pending_ms()
        if pending - self._last_partial_ms < self.cfg.partial_interval_ms:
            return
        audio = seg.pending_audio()
        if audio is None:
            return
        self._last_partial_ms = pending
        self._partial_inflight = True
        start_window = seg.retained_from()
        start_ms = (seg.speech_start or 0) * (WINDOW * 1000 // 16000)
        utterance_id = f"{self.stream_id}:{self._seq_at_window(start_window)}"
        future = self.recognizer.submit(self._request(audio, with_context=True), partial=True)

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
