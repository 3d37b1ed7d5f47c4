"""The ASR stream of one socket: opened lazily, fresh per meeting, routed on mode changes, and
what comes back on its events subject (partials for the badge, asr errors, and finals from an
asr that does not publish them to JetStream itself yet)."""

from __future__ import annotations

import time

from pydantic import BaseModel
from supie_common.contracts import AsrOpenRequest, ErrorCode, ListenMode, Transcript
from supie_common.contracts.device import ErrorMessage, Stt

from .asr_link import AsrStream
from .context import ConnectionContext
from .language import stream_language
from .outbox import Outbox
from .session import DeviceSession

__all__ = ["BAD_AUDIO_EVERY_S", "SocketStream"]

BAD_AUDIO_EVERY_S = 10.0  # undecodable audio (reported by asr): one error per this


class SocketStream:
    """Implements the mode controller's ``StreamControl``."""

    def __init__(self, ctx: ConnectionContext, session: DeviceSession, outbox: Outbox) -> None:
        self.ctx = ctx
        self.session = session
        self.outbox = outbox
        self.asr: AsrStream | None = None
        self._bad_audio_at: float | None = None

    async def send_audio(self, payload: bytes) -> None:
        if self.asr is None:
            await self._open()
            assert self.asr is not None
        await self.asr.send_audio(payload)

    async def listen_start(self, mode: ListenMode) -> None:
        if self.asr is None:
            await self._open()
        else:
            await self.asr.control("listen_start", listen_mode=mode)

    async def listen_stop(self) -> None:
        if self.asr is not None:
            await self.asr.control("listen_stop")

    # -- StreamControl -------------------------------------------------------------------------
    async def fresh_stream(self) -> None:
        await self.close_stream()
        await self._open()

    async def close_stream(self) -> None:
        stream, self.asr = self.asr, None
        if stream is not None:
            await stream.close()

    async def route_stream(self) -> None:
        if self.asr is not None:
            await self.asr.route(self.session.mode, self.session.active_meeting)

    # -- the stream ------------------------------------------------------------------------------
    async def _open(self) -> None:
        s = self.session
        settings = self.ctx.settings()
        req = AsrOpenRequest(
            **s.envelope(),
            codec="pcm" if s.audio_format == "pcm" else "opus",
            frame_duration_ms=s.frame_duration,
            listen_mode=s.listen_mode,
            language=stream_language(settings, s.device_id),
            mode=s.mode,
            meeting_id=s.active_meeting,
        )
        self.asr = AsrStream(
            self.ctx.nc,
            req,
            self._on_transcript,
            heartbeat_timeout_s=settings.asr.heartbeat_timeout_ms / 1000,
            replay_s=settings.asr.replay_s,
            on_error=self._on_error,
        )
        await self.asr.open()

    async def _on_transcript(self, t: Transcript) -> None:
        s = self.session
        if t.kind == "partial":
            if s.mode != "meeting" and t.text.strip():
                await self.outbox.send(Stt(text=t.text, session_id=s.session_id, partial=True))
            return
        # A final: asr publishes it to JetStream itself (the router takes it from there); the
        # live copy on the events subject only tells this socket someone spoke (idle timer).
        s.touch_voice()

    async def _on_error(self, message: str) -> None:
        now = time.monotonic()
        self.ctx.metrics.errors.labels(ErrorCode.BAD_AUDIO.value).inc()
        if self._bad_audio_at is not None and now - self._bad_audio_at < BAD_AUDIO_EVERY_S:
            return
        self._bad_audio_at = now
        s = self.session
        await self.outbox.send(_bad_audio(message, s.audio_format, s.frame_duration))


def _bad_audio(detail: str, fmt: str, frame_ms: int) -> BaseModel:
    expected = "Opus 16 kHz mono" if fmt == "opus" else "PCM s16le 16 kHz mono"
    return ErrorMessage(
        code=ErrorCode.BAD_AUDIO,
        message=f"audio could not be decoded (expected {expected}, {frame_ms} ms frames): "
        f"{detail[:200]}",
    )
