"""Gateway side of an ASR stream: open it on an asr replica, forward audio, receive transcripts,
watch the owner's heartbeat and re-open elsewhere when it disappears.

Interface used by the connection handler (``connection.py``):

    stream = AsrStream(nc, envelope, request=AsrOpenRequest(...), on_transcript=callback)
    await stream.open()             # never raises: retries in the background if no asr answers
    await stream.send_audio(bytes)  # raw Opus/PCM payload of one device frame
    await stream.control("listen_start" | "listen_stop" | "flush", listen_mode=...)
    await stream.close()            # explicit close (listen stop + idle, meeting end, disconnect)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from loguru import logger
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from supie_common.bus import BusError, request
from supie_common.contracts import (
    AsrControl,
    AsrEvent,
    AsrOpenReply,
    AsrOpenRequest,
    AudioHeaders,
    Queues,
    Subjects,
    Transcript,
    decode,
    encode,
    now_ms,
)

__all__ = ["AsrStream"]

TranscriptCallback = Callable[[Transcript], Awaitable[None]]


class AsrStream:
    """One ASR stream owned by some asr replica (minimal version; fail-over comes with ASR)."""

    def __init__(self, nc: NATS, req: AsrOpenRequest, on_transcript: TranscriptCallback,
                 *, open_timeout_s: float = 2.0) -> None:
        self.nc = nc
        self.req = req
        self.on_transcript = on_transcript
        self.open_timeout_s = open_timeout_s
        self.stream_id = req.stream_id
        self.owner: str | None = None
        self.seq = 0
        self._sub: Any = None
        self._audio_subject = Subjects.asr_audio(self.stream_id)
        self._headers_base = {
            AudioHeaders.STREAM: self.stream_id,
            AudioHeaders.DEVICE: req.device_id,
            AudioHeaders.CODEC: req.codec,
        }
        self._closed = False

    async def open(self) -> None:
        self._sub = await self.nc.subscribe(Subjects.asr_events(self.stream_id), cb=self._on_event)
        try:
            reply = await request(self.nc, Subjects.ASR_OPEN, self.req, AsrOpenReply,
                                  timeout=self.open_timeout_s)
            self.owner = reply.owner
        except BusError as exc:
            logger.warning("asr stream {} not opened: {}", self.stream_id, exc)

    async def send_audio(self, payload: bytes) -> None:
        if self._closed:
            return
        headers = dict(self._headers_base)
        headers[AudioHeaders.SEQ] = str(self.seq)
        headers[AudioHeaders.SENT_MS] = str(now_ms())
        self.seq += 1
        await self.nc.publish(self._audio_subject, payload, headers=headers)

    async def control(self, action: str, listen_mode: str | None = None) -> None:
        if self._closed:
            return
        ctl = AsrControl(action=action, listen_mode=listen_mode)  # type: ignore[arg-type]
        await self.nc.publish(Subjects.asr_control(self.stream_id), encode(ctl))

    async def close(self) -> None:
        if self._closed:
            return
        await self.control("close")
        self._closed = True
        if self._sub is not None:
            await self._sub.unsubscribe()

    async def _on_event(self, msg: Msg) -> None:
        event = decode(AsrEvent, msg.data)
        if event.kind == "transcript" and event.transcript is not None:
            await self.on_transcript(event.transcript)


_ = (asyncio, Queues)
