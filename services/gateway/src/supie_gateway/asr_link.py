"""Gateway side of an ASR stream: open it on an asr replica, forward audio and listen boundaries,
watch the owner's heartbeat and re-open elsewhere when it disappears (docs/dataflow.md §4).

Interface (used by the connection, the asr tests and the asr benches):

    stream = AsrStream(nc, request=AsrOpenRequest(...), on_transcript=callback)
    await stream.open()             # never raises: retries in the background if no asr answers
    await stream.send_audio(bytes)  # raw Opus/PCM payload of one device frame
    await stream.control("listen_start" | "listen_stop" | "flush", listen_mode=...)
    await stream.route(mode, meeting_id)   # routing context of later transcripts
    await stream.close()            # explicit close (meeting end, disconnect)

Fail-over without losing a word: the owner heartbeats ``committed_seq`` = every frame before it
is fully handled (its utterance transcribed and published). The gateway keeps every frame from
there on, and every listen boundary with the sequence it falls at (``at_seq``). When the owner
goes silent for ``heartbeat_timeout_s`` (or the open found no responders, or it announced it is
closing), the same ``stream_id`` is re-opened with ``resume_seq = committed_seq`` and the kept
frames and boundaries are replayed in order, so the utterance in progress is transcribed whole
by the new owner. Boundaries sent while the stream has no owner are kept the same way.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from loguru import logger
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from pydantic import ValidationError
from supie_common.bus import BusError, request
from supie_common.contracts import (
    AsrControl,
    AsrEvent,
    AsrOpenReply,
    AsrOpenRequest,
    AudioHeaders,
    ListenMode,
    Mode,
    Subjects,
    Transcript,
    decode,
    encode,
)
from supie_common.tasks import TaskSet

__all__ = ["AsrStream"]

TranscriptCallback = Callable[[Transcript], Awaitable[None]]
ErrorCallback = Callable[[str], Awaitable[None]]
_KEPT_CONTROLS = frozenset({"listen_start", "listen_stop", "flush"})
_LINGER = TaskSet("asr-link")  # delayed unsubscribes of closed streams


class AsrStream:
    """One ASR stream owned by some asr replica, re-homed when that replica goes away."""

    def __init__(
        self,
        nc: NATS,
        req: AsrOpenRequest,
        on_transcript: TranscriptCallback,
        *,
        open_timeout_s: float = 2.0,
        heartbeat_timeout_s: float = 2.0,
        replay_s: float = 10.0,
        on_error: ErrorCallback | None = None,
    ) -> None:
        self.nc = nc
        self.req = req
        self.on_transcript = on_transcript
        self.on_error = on_error
        self.open_timeout_s = open_timeout_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.stream_id = req.stream_id
        self.owner: str | None = None
        self.seq = 0  # next frame sequence
        self.committed = 0  # the owner's committed_seq: replay from here
        self.received = 0  # the owner's "frames" (next seq it expects): for metrics only
        self.reopens = 0  # times the stream moved to another replica
        self._had_owner = False
        self.last_heartbeat = 0.0
        self._sub: Any = None
        self._watch: asyncio.Task[None] | None = None
        self._audio_subject = Subjects.asr_audio(self.stream_id)
        self._control_subject = Subjects.asr_control(self.stream_id)
        self._headers_base = {
            AudioHeaders.STREAM: self.stream_id,
            AudioHeaders.DEVICE: req.device_id,
            AudioHeaders.CODEC: req.codec,
        }
        frame_ms = max(req.frame_duration_ms, 10)
        self._frames: deque[tuple[int, bytes]] = deque(
            maxlen=max(1, int(replay_s * 1000 / frame_ms))
        )
        self._controls: deque[AsrControl] = deque(maxlen=256)
        self._homeless = True  # no owner: keep for the next owner instead of sending
        self._closed = False
        self._reopen_now = asyncio.Event()
        self._route_seq = 0  # where the latest routing context starts

    @property
    def acked(self) -> int:
        """Kept for older callers: the sequence replay starts from."""
        return self.committed

    # -- lifecycle -----------------------------------------------------------------------------
    async def open(self) -> None:
        """Subscribe to the stream's events and ask an asr replica to own it. Never raises."""
        self._sub = await self.nc.subscribe(Subjects.asr_events(self.stream_id), cb=self._on_event)
        await self._open_once()
        self._watch = asyncio.create_task(self._watchdog(), name=f"asr-watch-{self.stream_id}")

    def _resume_seq(self) -> int:
        # The first frame we still hold, if the owner committed less than that (the buffer is
        # bounded by replay_s): the new owner must not wait for frames nobody can send.
        if self._frames:
            return max(self.committed, min(self._frames[0][0], self.seq))
        return max(self.committed, self.seq) if self._had_owner else self.committed

    async def _open_once(self) -> bool:
        resume = self._resume_seq()
        req = self.req.model_copy(update={"resume_seq": resume})
        try:
            reply = await request(
                self.nc, Subjects.ASR_OPEN, req, AsrOpenReply, timeout=self.open_timeout_s
            )
        except BusError as exc:
            logger.warning("asr stream {} not opened ({}); retrying", self.stream_id, exc)
            return False
        except (TimeoutError, ValidationError, OSError) as exc:
            logger.warning("asr stream {} open failed ({}); retrying", self.stream_id, exc)
            return False
        except Exception as exc:  # NATS reconnecting: the watchdog tries again
            logger.warning("asr stream {} open failed ({}); retrying", self.stream_id, exc)
            return False
        if not reply.ok:
            logger.error(
                "asr stream {} refused by {}: {}", self.stream_id, reply.owner, reply.error
            )
            return False
        if self._had_owner:
            self.reopens += 1
        self._had_owner = True
        self.owner = reply.owner
        self.last_heartbeat = time.monotonic()
        if (self.req.mode, self.req.meeting_id) != (req.mode, req.meeting_id):
            # route() was called while this open was in flight (a badge that reconnects and
            # resumes its meeting): the owner got the old context, so tell it now.
            await self._publish_control(
                AsrControl(
                    action="route",
                    mode=self.req.mode,
                    meeting_id=self.req.meeting_id,
                    at_seq=self._route_seq,
                )
            )
        await self._replay(resume)
        logger.info("asr stream {} owned by {} (resume seq {})", self.stream_id, self.owner, resume)
        return True

    async def _replay(self, start: int) -> None:
        """Send what the new owner has not handled, in order (boundaries before the frame they
        fall at), then go live. What arrives meanwhile is appended and picked up by this loop."""
        i = j = 0
        while True:
            frame = self._frames[i] if i < len(self._frames) else None
            ctl = self._controls[j] if j < len(self._controls) else None
            if frame is None and ctl is None:
                break
            ctl_seq = ctl.at_seq if ctl is not None and ctl.at_seq is not None else 0
            if ctl is not None and (frame is None or ctl_seq <= frame[0]):
                j += 1
                if ctl_seq >= start:
                    await self._publish_control(ctl)
            elif frame is not None:
                i += 1
                if frame[0] >= start:
                    await self._publish_frame(frame[0], frame[1])
        self._homeless = False

    async def _watchdog(self) -> None:
        period = min(0.25, self.heartbeat_timeout_s / 4)
        while not self._closed:
            # A plain sleep, not wait_for(event): hundreds of streams poll this cheaply.
            await asyncio.sleep(period)
            if self._closed:
                return
            lost = self._reopen_now.is_set() or (
                time.monotonic() - self.last_heartbeat > self.heartbeat_timeout_s
            )
            if self.owner is not None and not lost:
                continue
            self._reopen_now.clear()
            if self.owner is not None:
                logger.warning(
                    "asr stream {}: owner {} silent for {:.1f} s, re-opening",
                    self.stream_id,
                    self.owner,
                    time.monotonic() - self.last_heartbeat,
                )
            self.owner = None
            self._homeless = True
            if not await self._open_once():
                await asyncio.sleep(0.5)

    async def close(self) -> None:
        if self._closed:
            return
        await self.control("close")
        self._closed = True
        self._reopen_now.set()
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        # the owner flushes on close: keep listening briefly for its last words
        self.spawn_unsubscribe_later()

    def spawn_unsubscribe_later(self, delay_s: float = 10.0) -> None:
        """The last event of a closed stream may arrive after close(); stop listening later."""
        sub, self._sub = self._sub, None
        if sub is None:
            return

        async def later() -> None:
            await asyncio.sleep(delay_s)
            try:
                await sub.unsubscribe()
            except Exception as exc:  # connection already closed
                logger.debug("asr stream {} unsubscribe: {}", self.stream_id, exc)

        _LINGER.spawn(later(), f"asr-unsub-{self.stream_id}")

    # -- sending -------------------------------------------------------------------------------
    async def send_audio(self, payload: bytes) -> None:
        if self._closed:
            return
        seq = self.seq
        self.seq = seq + 1
        self._frames.append((seq, payload))
        if not self._homeless:
            await self._publish_frame(seq, payload)

    async def _publish_frame(self, seq: int, payload: bytes) -> None:
        headers = dict(self._headers_base)
        headers[AudioHeaders.SEQ] = str(seq)
        try:
            await self.nc.publish(self._audio_subject, payload, headers=headers)
        except Exception as exc:  # NATS reconnecting: the frame stays kept for the replay
            logger.debug("asr stream {} frame {} not published: {}", self.stream_id, seq, exc)

    async def _publish_control(self, ctl: AsrControl) -> None:
        try:
            await self.nc.publish(self._control_subject, encode(ctl))
        except Exception as exc:
            logger.debug("asr stream {} control not published: {}", self.stream_id, exc)

    async def control(self, action: str, listen_mode: ListenMode | str | None = None) -> None:
        if self._closed:
            return
        if action == "listen_start" and listen_mode in ("auto", "manual", "realtime"):
            # a re-opened stream starts in the mode the device is in now
            self.req = self.req.model_copy(update={"listen_mode": listen_mode})
        ctl = AsrControl.model_validate(
            {"action": action, "listen_mode": listen_mode, "at_seq": self.seq}
        )
        if action in _KEPT_CONTROLS:
            self._controls.append(ctl)
        if not self._homeless or action == "close":
            await self._publish_control(ctl)

    async def route(self, mode: Mode | None, meeting_id: str | None) -> None:
        """Later transcripts of this stream carry this routing context."""
        self.req = self.req.model_copy(update={"mode": mode, "meeting_id": meeting_id})
        self._route_seq = self.seq
        if self._closed:
            return
        ctl = AsrControl(action="route", mode=mode, meeting_id=meeting_id, at_seq=self.seq)
        if not self._homeless:
            await self._publish_control(ctl)

    # -- events --------------------------------------------------------------------------------
    def _prune(self) -> None:
        if self._homeless:
            return
        committed = self.committed
        frames = self._frames
        while frames and frames[0][0] < committed:
            frames.popleft()
        controls = self._controls
        while controls and (controls[0].at_seq or 0) < committed:
            controls.popleft()

    async def _on_event(self, msg: Msg) -> None:
        try:
            event = decode(AsrEvent, msg.data)
        except ValidationError as exc:
            logger.warning("asr stream {}: malformed event: {}", self.stream_id, exc)
            return
        if self.owner is not None and event.owner != self.owner:
            return  # a former owner that is not quite dead: its output no longer counts
        if event.kind == "heartbeat":
            self.last_heartbeat = time.monotonic()
            self.received = max(self.received, event.frames)
            if event.committed_seq > self.committed:
                self.committed = event.committed_seq
                self._prune()
        elif event.kind == "transcript" and event.transcript is not None:
            self.last_heartbeat = time.monotonic()
            await self.on_transcript(event.transcript)
        elif event.kind == "error":
            logger.info("asr stream {}: {}", self.stream_id, event.error)
            if self.on_error is not None:
                await self.on_error(event.error or "")
        elif event.kind == "closed" and not self._closed:
            # the owner let go (shutdown, idle) while we still need the stream: move it now
            logger.info(
                "asr stream {} closed by {} ({}); re-opening",
                self.stream_id,
                event.owner,
                event.error,
            )
            self._reopen_now.set()
