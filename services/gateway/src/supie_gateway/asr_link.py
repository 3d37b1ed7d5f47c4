"""Gateway side of an ASR stream: open it on an asr replica, forward audio, receive transcripts,
watch the owner's heartbeat and re-open elsewhere when it disappears.

Interface used by the connection handler (``connection.py``):

    stream = AsrStream(nc, request=AsrOpenRequest(...), on_transcript=callback)
    await stream.open()             # never raises: retries in the background if no asr answers
    await stream.send_audio(bytes)  # raw Opus/PCM payload of one device frame
    await stream.control("listen_start" | "listen_stop" | "flush", listen_mode=...)
    await stream.close()            # explicit close (listen stop + idle, meeting end, disconnect)

Fail-over: the owner heartbeats on the stream's events subject and acknowledges the frames it
has received (``AsrEvent.frames`` = next sequence expected). If no heartbeat arrives for
``heartbeat_timeout_s`` (or the open found no responders, or the owner announced it is closing),
the same ``stream_id`` is re-opened with ``resume_seq`` = last acknowledged frame, and the frames
kept since then (at most ``replay_s``) are sent again, so the new owner continues the stream.
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
    Subjects,
    Transcript,
    decode,
    encode,
)

__all__ = ["AsrStream"]

TranscriptCallback = Callable[[Transcript], Awaitable[None]]


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
        on_error: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.nc = nc
        self.req = req
        self.on_transcript = on_transcript
        self.on_error = on_error
        self.open_timeout_s = open_timeout_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.stream_id = req.stream_id
        self.owner: str | None = None
        self.seq = 0
        self.acked = 0  # frames the owner confirmed (next seq it expects)
        self.reopens = 0  # times the stream moved to another replica
        self._had_owner = False
        self.last_heartbeat = 0.0
        self._sub: Any = None
        self._watch: asyncio.Task[None] | None = None
        self._audio_subject = Subjects.asr_audio(self.stream_id)
        self._headers_base = {
            AudioHeaders.STREAM: self.stream_id,
            AudioHeaders.DEVICE: req.device_id,
            AudioHeaders.CODEC: req.codec,
        }
        frame_ms = max(req.frame_duration_ms, 10)
        self._replay: deque[tuple[int, bytes]] = deque(
            maxlen=max(1, int(replay_s * 1000 / frame_ms))
        )
        self._homeless = True  # no owner: keep frames for the next owner instead of sending
        self._closed = False
        self._reopen_now = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------------------
    async def open(self) -> None:
        """Subscribe to the stream's events and ask an asr replica to own it. Never raises."""
        self._sub = await self.nc.subscribe(Subjects.asr_events(self.stream_id), cb=self._on_event)
        await self._open_once()
        self._watch = asyncio.create_task(self._watchdog(), name=f"asr-watch-{self.stream_id}")

    async def _open_once(self) -> bool:
        req = self.req.model_copy(update={"resume_seq": self.acked})
        try:
            reply = await request(
                self.nc, Subjects.ASR_OPEN, req, AsrOpenReply, timeout=self.open_timeout_s
            )
        except BusError as exc:
            logger.warning("asr stream {} not opened ({}); retrying", self.stream_id, exc)
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
        await self._replay_unacked()
        logger.info(
            "asr stream {} owned by {} (resume seq {})", self.stream_id, self.owner, self.acked
        )
        return True

    async def _replay_unacked(self) -> None:
        """Send the frames the new owner has not seen, in order, then go live again. Frames that
        arrive meanwhile are appended to the replay buffer and picked up by this loop."""
        i = 0
        while i < len(self._replay):
            seq, payload = self._replay[i]
            i += 1
            if seq >= self.acked:
                await self._publish_frame(seq, payload)
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
        # the owner flushes on close: keep listening briefly for the last final
        self.spawn_unsubscribe_later()

    def spawn_unsubscribe_later(self, delay_s: float = 10.0) -> None:
        """The last final of a closed stream may arrive after close(); stop listening later."""
        sub, self._sub = self._sub, None
        if sub is None:
            return

        async def later() -> None:
            await asyncio.sleep(delay_s)
            try:
                await sub.unsubscribe()
            except Exception as exc:  # connection already closed
                logger.debug("asr stream {} unsubscribe: {}", self.stream_id, exc)

        task = asyncio.create_task(later(), name=f"asr-unsub-{self.stream_id}")
        _LINGER.add(task)
        task.add_done_callback(_LINGER.discard)

    # -- sending -------------------------------------------------------------------------------
    async def send_audio(self, payload: bytes) -> None:
        if self._closed:
            return
        seq = self.seq
        self.seq += 1
        self._replay.append((seq, payload))
        if not self._homeless:
            await self._publish_frame(seq, payload)

    async def _publish_frame(self, seq: int, payload: bytes) -> None:
        headers = dict(self._headers_base)
        headers[AudioHeaders.SEQ] = str(seq)
        await self.nc.publish(self._audio_subject, payload, headers=headers)

    async def control(self, action: str, listen_mode: str | None = None) -> None:
        if self._closed:
            return
        if action == "listen_start" and listen_mode in ("auto", "manual", "realtime"):
            # a re-opened stream starts in the mode the device is in now
            self.req = self.req.model_copy(update={"listen_mode": listen_mode})
        ctl = AsrControl.model_validate({"action": action, "listen_mode": listen_mode})
        await self.nc.publish(Subjects.asr_control(self.stream_id), encode(ctl))

    # -- events --------------------------------------------------------------------------------
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
            self.acked = max(self.acked, event.frames)
            while self._replay and self._replay[0][0] < self.acked and not self._homeless:
                self._replay.popleft()
        elif event.kind == "transcript" and event.transcript is not None:
            self.last_heartbeat = time.monotonic()
            await self.on_transcript(event.transcript)
        elif event.kind == "error":
            logger.warning("asr stream {}: {}", self.stream_id, event.error)
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


_LINGER: set[asyncio.Task[None]] = set()
