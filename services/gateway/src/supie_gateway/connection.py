"""One device connection: the socket loop and the dispatch of typed messages.

Every text frame (and v2/v3 JSON frame) is parsed once, at the edge, by
``parse_device_message`` into a ``contracts.device`` model; handlers receive models; everything
sent is built from a model (or is a frame a service built from one). Audio frames take a lean
path: no parsing beyond the binary header, no models.

Collaborators, each with one job: :class:`.session.DeviceSession` (state),
:class:`.outbox.Outbox` (sending), :class:`.modes.ModeController` (modes and the meeting),
:class:`.dispatch.InboundDispatcher` (service messages, in order, until accepted),
:class:`.socket_stream.SocketStream` (the ASR stream), :mod:`.idle` (timers),
:mod:`.listen` (debounce).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from loguru import logger
from nats.aio.msg import Msg
from pydantic import BaseModel
from supie_common.bus import parse
from supie_common.contracts import (
    ConfigUpdated,
    DeviceCommand,
    DeviceDelivered,
    DeviceHello,
    DeviceOutbound,
    ErrorCode,
    Subjects,
    Transcript,
    encode,
    new_id,
    now_ms,
)
from supie_common.contracts.device import (
    Abort,
    AudioParams,
    ErrorMessage,
    FirmwareChatter,
    Goodbye,
    Hello,
    HelloReply,
    LegacyConfigUpdate,
    Listen,
    LlmEmotion,
    ModeError,
    ModeRequest,
    Ping,
    Pong,
    ServerReply,
    ServerRequest,
    Stt,
    SystemMessage,
    Tts,
)
from supie_common.contracts.device import ConfigUpdateNoop as ConfigNoop
from supie_common.device_codec import DeviceMessageError, parse_device_message
from supie_common.errors import ProtocolError
from supie_common.protocol import TYPE_JSON, FrameError, decode_frame
from supie_common.settings import secret_value
from supie_common.tasks import TaskSet
from websockets.asyncio.server import ServerConnection

from .auth import same_secret
from .context import ConnectionContext
from .dispatch import InboundDispatcher, service_error
from .handshake import HandshakeInfo
from .idle import hard_idle, keepalive_due, no_voice
from .listen import ListenDebounce, ListenEvent
from .modes import ModeController
from .outbox import Outbox
from .session import DeviceSession
from .socket_stream import SocketStream
from .transcripts import publish_transcript

__all__ = [
    "BINARY_ERROR_EVERY_S",
    "DeviceConnection",
    "IDLE_CLOSE_MESSAGE",
    "IDLE_WARNING_TEXT",
    "TAKEOVER_MESSAGE",
    "TIMEOUT_WARNING_TEXT",
    "WAKE_WORDS",
]

WAKE_WORDS = ("你好小智", "小智", "你好", "hey supie", "hi supie", "hello supie", "supie")
TAKEOVER_MESSAGE = "检测到新连接，当前通道将于约1.5秒后关闭以切换到新通道"
IDLE_WARNING_TEXT = "即将结束对话，如需继续请说话或发送任意消息…"
IDLE_CLOSE_MESSAGE = "长时间未说话，本次对话已结束。"
TIMEOUT_WARNING_TEXT = "连接将因长时间空闲而关闭，如需继续请发送任意消息。"
BINARY_ERROR_EVERY_S = 1.0  # a badge streaming garbage gets one error a second, not fifty


class DeviceConnection:
    """Protocol state machine of one socket, created once the handshake is accepted."""

    def __init__(self, ctx: ConnectionContext, ws: ServerConnection, info: HandshakeInfo) -> None:
        settings = ctx.settings()
        self.ctx = ctx
        self.ws = ws
        self.session = DeviceSession(
            device_id=info.device_id,
            gateway_id=ctx.gateway_id,
            client_id=info.client_id,
            protocol_version=info.protocol_version,
            group_key=settings.workflow.group_of(info.device_id),
        )
        self.outbox = Outbox(ws, self.session, ctx.metrics)
        self.tasks = TaskSet(f"device {info.device_id}")
        self.dispatcher = InboundDispatcher(
            ctx.nc,
            self.session,
            self._send_frames,
            ctx.tasks,
            budget_s=lambda: ctx.settings().server.accept_timeout_s,
            attempt_timeout_s=lambda: ctx.settings().nats.request_timeout_s,
        )
        self.stream = SocketStream(ctx, self.session, self.outbox)
        self.modes = ModeController(
            self.session,
            self.outbox,
            ctx.nc,
            ctx.store,
            self.stream,
            ctx.settings,
            self._after_hello,
        )
        self.listen = ListenDebounce()
        self._listen_timer: asyncio.Task[Any] | None = None
        # Audio that arrives while a listen change waits out the debounce window: it goes to
        # asr after that change, so the boundary falls where the device put it, not up to a
        # window later in the middle of the next sentence (at most a window of frames).
        self._held_audio: list[bytes] = []
        self._subs: list[Any] = []
        self._before_hello: list[str] = []
        self._binary_error_at: dict[ErrorCode, float] = {}
        self._frames_in = ctx.metrics.frames_in
        self._messages_in = ctx.metrics.messages_in
        self._handlers: dict[type[BaseModel], Callable[[Any], Awaitable[None]]] = {
            Hello: self._on_hello,
            Listen: self._on_listen,
            Abort: self._on_abort,
            ModeRequest: self._on_mode,
            Ping: self._on_ping,
            ServerRequest: self._on_server,
            LegacyConfigUpdate: self._on_legacy_config_update,
            Goodbye: self._on_goodbye,
            FirmwareChatter: self._on_chatter,
        }

    @property
    def device_id(self) -> str:
        return self.session.device_id

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        nc = self.ctx.nc
        device = self.session.device_id
        self._subs.append(await nc.subscribe(Subjects.device_out(device), cb=self._on_outbound))
        self._subs.append(
            await nc.subscribe(Subjects.device_audio_out(device), cb=self._on_audio_out)
        )
        self._subs.append(await nc.subscribe(Subjects.device_command(device), cb=self._on_command))
        # The server must know these subscriptions before the device hears anything from us:
        # what services publish for it right after it connects must not fall on the floor.
        try:
            await nc.flush(timeout=5)
        except Exception as exc:  # NATS reconnecting: the subscriptions follow when it is back
            logger.warning("device {}: subscriptions not confirmed ({})", device, exc)
        self.tasks.spawn(self.modes.restore(), "restore")

    async def run(self) -> None:
        """Read until the socket closes (a ConnectionClosed error propagates to the caller)."""
        s = self.session
        max_bytes = self.ctx.settings().server.max_frame_bytes
        async for data in self.ws:
            s.last_inbound = time.monotonic()
            s.hard_warned_at = None  # any inbound message cancels a pending hard close
            if len(data) > max_bytes:
                kind = "text" if isinstance(data, str) else "binary"
                await self.outbox.error(
                    ErrorCode.FRAME_TOO_LARGE,
                    f"{kind} frame of {len(data)} bytes exceeds the limit of "
                    f"{max_bytes} bytes (server.max_frame_bytes)",
                )
                continue
            if isinstance(data, str):
                s.touch_voice()
                await self._on_text(data)
            else:
                await self._on_binary(data)

    async def drain(self) -> None:
        """Shutdown: deliver the messages already queued for this device, stop taking more."""
        self.session.closing = True
        subs, self._subs = self._subs, []
        for sub in subs:
            try:
                await sub.drain()
            except Exception as exc:
                logger.debug("drain failed: {}", exc)
        await self.stream.close_stream()

    async def cleanup(self) -> None:
        self.session.closing = True
        subs, self._subs = self._subs, []
        for sub in subs:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # connection to NATS already gone
                logger.debug("unsubscribe failed: {}", exc)
        await self.tasks.cancel_all()
        await self.stream.close_stream()

    async def close(self, code: int, reason: str) -> None:
        await self.outbox.close(code, reason)

    def close_later(self, delay_s: float, code: int = 1000, reason: str = "") -> None:
        self.session.closing = True

        async def later() -> None:
            await asyncio.sleep(delay_s)
            await self.ws.close(code, reason)

        self.tasks.spawn(later(), f"close-{reason}")

    async def displace(self, delay_s: float) -> None:
        """A newer connection for this device won: tell this one, close it soon."""
        if self.session.closing:
            return
        await self.outbox.send(SystemMessage(message=TAKEOVER_MESSAGE, event="takeover"))
        self.close_later(delay_s, 1000, "replaced by a new connection")

    def tick(self, now: float) -> None:
        """The sweep (every ``server.idle_check_interval_s``): layer-2 idle, app keepalive."""
        s = self.session
        server = self.ctx.settings().server
        decision = hard_idle(s, server, now)
        if decision == "warn":
            s.hard_warned_at = now
            warning = SystemMessage(event="timeout_warning", message=TIMEOUT_WARNING_TEXT)
            # Spawned: one slow socket must not hold up the sweep of the others.
            self.tasks.spawn(self.outbox.send(warning), "timeout-warning")
        elif decision == "close":
            logger.info("device {} closed: idle for {:.0f} s", s.device_id, now - s.last_inbound)
            self.close_later(0.0, 1000, "idle timeout")
        elif keepalive_due(s, server, now):
            s.last_sent = now
            self.tasks.spawn(self.outbox.send(SystemMessage(event="keepalive")), "keepalive")

    # -- sending ---------------------------------------------------------------------------------
    async def _send_frames(self, frames: list[str]) -> None:
        for frame in frames:
            await self.outbox.send_frame(frame)

    async def _after_hello(self, frames: list[str]) -> None:
        if self.session.hello_done:
            await self._send_frames(frames)
        else:
            self._before_hello.extend(frames)

    async def _binary_error(self, code: ErrorCode, message: str) -> None:
        now = time.monotonic()
        last = self._binary_error_at.get(code)
        if last is not None and now - last < BINARY_ERROR_EVERY_S:
            self.ctx.metrics.errors.labels(code.value).inc()
            return
        self._binary_error_at[code] = now
        await self.outbox.error(code, message)

    # -- inbound text --------------------------------------------------------------------------
    async def _on_text(self, data: str) -> None:
        if len(data) <= 16:
            bare = data.strip()
            if bare in ("ping", "keepalive"):
                self._messages_in.labels(bare).inc()
                await self.outbox.send(Pong(timestamp=now_ms()))
                return
        server = self.ctx.settings().server
        try:
            msg = parse_device_message(data, max_depth=server.max_json_depth)
        except DeviceMessageError as exc:
            self._messages_in.labels(exc.message_type).inc()
            await self._schema_error(exc)
            return
        except ProtocolError as exc:
            self._messages_in.labels("other").inc()
            await self.outbox.error(exc.code, exc.message, exc.field)
            return
        self._messages_in.labels(msg.type).inc()
        handler = self._handlers.get(type(msg))
        if handler is not None:
            await handler(msg)
            return
        refusal = self.dispatcher.submit(msg)  # meeting / workflow / coding
        if refusal is not None:
            await self.outbox.send(refusal)

    async def _schema_error(self, exc: DeviceMessageError) -> None:
        self.outbox.note_error(exc.code, f"invalid {exc.message_type}: {exc.message}")
        if exc.message_type == "mode":
            await self.outbox.send(ModeError(code=exc.code, message=exc.message, field=exc.field))
        elif exc.message_type in ("meeting", "workflow", "coding"):
            await self.outbox.send(
                service_error(exc.message_type, exc.code, exc.message, field=exc.field, sub=exc.sub)
            )
        else:
            await self.outbox.send(
                ErrorMessage(code=exc.code, message=exc.message, field=exc.field)
            )

    async def _on_binary(self, data: bytes) -> None:
        self._frames_in.inc()
        s = self.session
        if not s.hello_done:
            await self._binary_error(
                ErrorCode.HELLO_REQUIRED,
                'binary frame before hello: send {"type":"hello",...} first',
            )
            return
        if s.protocol_version == 1:
            payload = data
        else:
            try:
                frame = decode_frame(data, s.protocol_version)
            except FrameError as exc:
                await self._binary_error(ErrorCode.BAD_FRAME, str(exc))
                return
            if frame.type == TYPE_JSON:
                s.touch_voice()
                await self._on_text(frame.payload.decode("utf-8", errors="replace"))
                return
            payload = frame.payload
        if not payload:
            return
        decision = no_voice(s, self.ctx.settings().server, time.monotonic())
        if decision is not None:
            await self._no_voice(decision)
        if s.drops_audio:
            return  # the meeting is being summarised (or none is active): its audio is ignored
        if self._listen_timer is not None:
            self._held_audio.append(payload)
            return
        await self.stream.send_audio(payload)

    async def _no_voice(self, decision: str) -> None:
        s = self.session
        if decision == "close":
            logger.info(
                "device {} closed: no voice for {:.0f} s (mode={})",
                s.device_id,
                time.monotonic() - s.last_voice,
                s.mode,
            )
            await self.outbox.send(SystemMessage(event="idle_close", message=IDLE_CLOSE_MESSAGE))
            self.close_later(0.0, 1000, "no voice")
        else:
            s.idle_warned = True
            await self.outbox.send(Stt(text=IDLE_WARNING_TEXT, session_id=s.session_id))

    # -- protocol messages ---------------------------------------------------------------------
    async def _on_hello(self, msg: Hello) -> None:
        s = self.session
        params = msg.audio_params or AudioParams()
        s.audio_format = params.format
        s.frame_duration = params.frame_duration
        reply = HelloReply(
            version=msg.version if msg.version is not None and 0 < msg.version < 100 else 1,
            session_id=s.session_id,
            audio_params=AudioParams(
                format=params.format,
                sample_rate=params.sample_rate,
                channels=1,
                frame_duration=params.frame_duration,
            ),
        )
        first = not s.hello_done
        s.hello_done = True
        await self.outbox.send(reply)
        hello = DeviceHello(**s.envelope(), group_key=s.group_key, mode=s.mode)
        try:
            await self.ctx.nc.publish(Subjects.DEVICE_HELLO, encode(hello))
        except Exception as exc:
            logger.debug("hello not published: {}", exc)
        if first:
            logger.debug(
                "device {} hello format={} frame={}ms",
                s.device_id,
                params.format,
                params.frame_duration,
            )
            waiting, self._before_hello = self._before_hello, []
            await self._send_frames(waiting)

    async def _on_ping(self, msg: Ping) -> None:
        await self.outbox.send(Pong(timestamp=now_ms()))

    async def _on_chatter(self, msg: FirmwareChatter) -> None:
        logger.debug("device {} sent {} (ignored)", self.device_id, msg.type)

    async def _on_legacy_config_update(self, msg: LegacyConfigUpdate) -> None:
        keys = sorted(msg.config or {})[:20]
        logger.info("device {} sent legacy config_update (keys {}): no-op", self.device_id, keys)
        await self.outbox.send(ConfigNoop())

    async def _on_server(self, msg: ServerRequest) -> None:
        expected = secret_value(self.ctx.settings().server.secret)
        if not expected or not same_secret(msg.given_secret(), expected):
            logger.warning("device {} server/{}: secret check failed", self.device_id, msg.action)
            await self.outbox.send(
                ServerReply(
                    status="error", code=ErrorCode.FORBIDDEN, message="server secret check failed"
                )
            )
            return
        if msg.action == "restart":
            await self.outbox.send(
                ServerReply(
                    status="error",
                    code=ErrorCode.NOT_SUPPORTED,
                    message="restart is not supported; use the supervisor",
                )
            )
            return
        event = ConfigUpdated(source="device", config_path=self.ctx.config_path())
        await self.ctx.nc.publish(Subjects.CONFIG_UPDATED, encode(event))
        await self.outbox.send(
            ServerReply(
                status="success", message="config reloaded", content={"action": "update_config"}
            )
        )

    async def _on_goodbye(self, msg: Goodbye) -> None:
        await self.outbox.close(1000, "goodbye")

    async def _on_abort(self, msg: Abort) -> None:
        await self.outbox.send(Tts(state="stop", session_id=self.session.session_id))

    async def _on_mode(self, msg: ModeRequest) -> None:
        await self.modes.set_mode(msg.state, msg.mode, source="device")

    # -- listen ----------------------------------------------------------------------------------
    async def _on_listen(self, msg: Listen) -> None:
        if msg.state == "detect":
            text = (msg.text or "").strip()
            if text:
                await self._on_detect(text)
            return
        s = self.session
        if msg.state == "start":
            event = ListenEvent("start", msg.mode or s.listen_mode)
        else:
            event = ListenEvent("stop")
        window = self.ctx.settings().server.listen_debounce_ms / 1000
        now = time.monotonic()
        apply = self.listen.offer(event, now, window)
        if apply is not None:
            await self._apply_listen(apply)
        elif self._listen_timer is None and self.listen.due_at is not None:
            self._listen_timer = self.tasks.spawn(self._listen_later(), "listen-debounce")

    async def _listen_later(self) -> None:
        try:
            due = self.listen.due_at
            if due is not None:
                await asyncio.sleep(max(0.0, due - time.monotonic()))
            event = self.listen.take_due(time.monotonic())
            if event is not None:
                await self._apply_listen(event)
            while self._held_audio:  # frames keep being held until the backlog is out
                held, self._held_audio = self._held_audio, []
                for payload in held:
                    await self.stream.send_audio(payload)
        finally:
            self._listen_timer = None
            self._held_audio = []
        if self.listen.due_at is not None:  # a change offered while this one was applied
            self._listen_timer = self.tasks.spawn(self._listen_later(), "listen-debounce")

    async def _apply_listen(self, event: ListenEvent) -> None:
        s = self.session
        if event.state == "start":
            if event.mode is not None:
                s.listen_mode = event.mode
            if not s.drops_audio:
                await self.stream.listen_start(s.listen_mode)
        else:
            await self.stream.listen_stop()

    async def _on_detect(self, text: str) -> None:
        s = self.session
        if text.lower() in WAKE_WORDS:
            sid = s.session_id
            for reply in (
                Stt(text=text, session_id=sid),
                LlmEmotion(emotion="happy", text="😊", session_id=sid),
                Tts(state="start", session_id=sid),
                Tts(state="sentence_start", text="嘿，你好呀", session_id=sid),
                Tts(state="stop", session_id=sid),
            ):
                await self.outbox.send(reply)
            return
        typed = Transcript(
            **s.envelope(),
            stream_id="text",
            utterance_id=f"text:{new_id()}",
            text=text,
            start_ms=0,
            end_ms=0,
            source="text",
            mode=s.mode,
            meeting_id=s.active_meeting,
        )
        try:
            await publish_transcript(self.ctx.js, typed, self.ctx.settings().nats.request_timeout_s)
        except Exception as exc:
            logger.warning("device {}: typed text not stored: {}", s.device_id, exc)
            await self.outbox.error(
                ErrorCode.UNAVAILABLE, "the text could not be stored right now; send it again"
            )

    # -- bus -> device -------------------------------------------------------------------------
    async def _on_outbound(self, nats_msg: Msg) -> None:
        out = parse(DeviceOutbound, nats_msg)
        if out is None:
            return
        sent = False
        if out.frame is not None:
            sent = await self.outbox.send_frame(out.frame)
        elif out.message is not None:
            sent = await self.outbox.send_dict(out.message)
        if sent and out.receipt:
            delivered = DeviceDelivered(**self.session.envelope(), receipt=out.receipt)
            try:
                await self.ctx.nc.publish(Subjects.DEVICE_DELIVERED, encode(delivered))
            except Exception as exc:
                logger.warning("receipt {} not published: {}", out.receipt, exc)
        if out.close:
            self.close_later(out.close_delay_s, 1000, "closed by server")

    async def _on_audio_out(self, nats_msg: Msg) -> None:
        await self.outbox.send_audio(nats_msg.data)

    async def _on_command(self, nats_msg: Msg) -> None:
        cmd = parse(DeviceCommand, nats_msg)
        if cmd is None:
            return
        try:
            if cmd.command == "close":
                self.close_later(0.0, 1000, cmd.reason or "closed by server")
            elif cmd.command == "close_asr_stream":
                await self.stream.close_stream()
            else:
                await self.modes.on_command(cmd)
        except Exception:
            logger.exception("device {}: command {} failed", self.device_id, cmd.command)
