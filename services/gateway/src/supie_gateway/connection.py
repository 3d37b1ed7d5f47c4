"""One device connection: the xiaozhi protocol state machine for a single socket.

Reads frames, answers protocol messages, forwards audio to the connection's ASR stream and
device messages to their services, and delivers what services publish for the device.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from loguru import logger
from supie_common.bus import parse
from supie_common.contracts import (
    AsrOpenRequest,
    ConfigUpdated,
    DeviceCommand,
    DeviceInbound,
    DeviceOutbound,
    ModeChanged,
    Subjects,
    Transcript,
    encode,
    new_id,
    now_ms,
)
from supie_common.protocol import TYPE_JSON, FrameError, decode_frame, encode_frame
from supie_common.settings import secret_value
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from .asr_link import AsrStream
from .router import Action, FinalizeMeeting, Publish, SwitchMode, ToDevice, route_transcript

if TYPE_CHECKING:
    from .config import GatewaySettings
    from .hub import Hub

__all__ = ["DeviceConnection", "MODES", "error_message"]

MODES = ("meeting", "working", "coding")
WAKE_WORDS = ("你好小智", "小智", "你好", "hey supie", "hi supie", "hello supie", "supie")
_FORWARD = {
    "meeting": Subjects.MEETING_INBOUND,
    "workflow": Subjects.WORKFLOW_INBOUND,
    "coding": Subjects.CODING_INBOUND,
}
_IGNORED_TYPES = ("mcp", "iot")  # firmware chatter we accept without a reply


def error_message(
    code: str, message: str, field: str | None = None, **extra: Any
) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if field:
        msg["field"] = field
    msg.update(extra)
    return msg


class DeviceConnection:
    """Protocol state of one socket. Created by the hub once the handshake is accepted."""

    def __init__(
        self,
        hub: Hub,
        ws: ServerConnection,
        *,
        device_id: str,
        client_id: str | None,
        protocol_version: int,
        group_key: str,
    ) -> None:
        self.hub = hub
        self.ws = ws
        self.device_id = device_id
        self.client_id = client_id
        self.protocol_version = protocol_version
        self.group_key = group_key
        self.session_id = new_id()
        self.hello_done = False
        self.audio_format = "opus"
        self.frame_duration = 60
        self.mode: str | None = None
        self.meeting_id: str | None = None
        self.meeting_finalized = False
        self.listen_mode = "auto"
        self.asr: AsrStream | None = None
        self.last_listen_event_ms = 0
        now = time.monotonic()
        self.last_voice = now  # voice or any message: the no-voice timer (layer 1)
        self.last_inbound = now  # anything at all, audio included: the hard timer (layer 2)
        self.idle_warned = False
        self.hard_warned_at: float | None = None
        self.closing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._subs: list[Any] = []
        self._handlers: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {
            "hello": self._on_hello,
            "listen": self._on_listen,
            "abort": self._on_abort,
            "mode": self._on_mode,
            "ping": self._on_ping,
            "keepalive": self._on_ping,
            "config_update": self._on_legacy_config_update,
            "server": self._on_server,
            "goodbye": self._on_goodbye,
            "meeting": self._forward,
            "workflow": self._forward,
            "coding": self._forward,
        }

    @property
    def settings(self) -> GatewaySettings:
        return self.hub.settings

    @property
    def envelope(self) -> dict[str, str]:
        return {
            "device_id": self.device_id,
            "session_id": self.session_id,
            "gateway_id": self.hub.gateway_id,
        }

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        nc = self.hub.nc
        self._subs.append(
            await nc.subscribe(Subjects.device_out(self.device_id), cb=self._on_outbound)
        )
        self._subs.append(
            await nc.subscribe(Subjects.device_audio_out(self.device_id), cb=self._on_audio_out)
        )
        self._subs.append(
            await nc.subscribe(Subjects.device_command(self.device_id), cb=self._on_command)
        )
        # The server must know these subscriptions before the device hears anything from us:
        # what services publish for it right after it connects must not fall on the floor.
        await nc.flush()
        await self._restore_state()

    async def run(self) -> None:
        """Read until the socket closes."""
        max_bytes = self.settings.server.max_frame_bytes
        async for data in self.ws:
            self.last_inbound = time.monotonic()
            self.hard_warned_at = None  # any inbound message cancels a pending hard close
            if len(data) > max_bytes:
                kind = "text" if isinstance(data, str) else "binary"
                await self.send_error(
                    "FRAME_TOO_LARGE",
                    f"{kind} frame of {len(data)} bytes exceeds the limit of "
                    f"{max_bytes} bytes (server.max_frame_bytes)",
                )
                continue
            if isinstance(data, str):
                self.touch_voice()
                await self._on_text(data)
            else:
                await self._on_binary(data)

    async def drain(self) -> None:
        """Shutdown: deliver the messages already queued for this device, stop taking more."""
        self.closing = True
        subs, self._subs = self._subs, []
        for sub in subs:
            try:
                await sub.drain()
            except Exception as exc:
                logger.debug("drain failed: {}", exc)
        await self._close_asr()

    async def cleanup(self, reason: str) -> None:
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # connection to NATS already gone
                logger.debug("unsubscribe failed: {}", exc)
        self._subs.clear()
        for task in list(self._tasks):
            task.cancel()
        if self.asr is not None:
            await self._close_asr()

    def touch_voice(self) -> None:
        """Voice or a message: the no-voice timer starts again."""
        self.last_voice = time.monotonic()
        self.idle_warned = False

    def spawn(self, coro: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- sending -------------------------------------------------------------------------------
    async def send_json(self, msg: dict[str, Any]) -> None:
        try:
            await self.ws.send(json.dumps(msg, ensure_ascii=False, separators=(",", ":")))
        except ConnectionClosed:
            return
        self.hub.metrics.messages_out.labels(str(msg.get("type", "?"))).inc()

    async def send_audio(self, payload: bytes) -> None:
        try:
            await self.ws.send(encode_frame(payload, self.protocol_version))
        except ConnectionClosed:
            return
        self.hub.metrics.frames_out.inc()

    async def send_error(
        self, code: str, message: str, field: str | None = None, **extra: Any
    ) -> None:
        self.hub.metrics.errors.labels(code).inc()
        logger.info("device {} error {}: {}", self.device_id, code, message)
        await self.send_json(error_message(code, message, field, **extra))

    async def close_later(self, delay_s: float, code: int = 1000, reason: str = "") -> None:
        self.closing = True
        await asyncio.sleep(delay_s)
        await self.ws.close(code, reason)

    # -- inbound text --------------------------------------------------------------------------
    async def _on_text(self, data: str) -> None:
        stripped = data.strip()
        if stripped in ("ping", "keepalive"):
            self.hub.metrics.messages_in.labels(stripped).inc()
            await self._on_ping({})
            return
        try:
            msg = json.loads(data)
        except ValueError as exc:
            await self.send_error("INVALID_JSON", f"text frame is not valid JSON: {exc}")
            return
        if not isinstance(msg, dict):
            await self.send_error(
                "SCHEMA_INVALID", "message must be a JSON object with a 'type'", field="type"
            )
            return
        mtype = msg.get("type")
        if not isinstance(mtype, str) or not mtype:
            await self.send_error(
                "SCHEMA_INVALID",
                "missing 'type': expected a string such as 'hello', 'listen', 'mode'",
                field="type",
            )
            return
        self.hub.metrics.messages_in.labels(mtype if mtype in self._handlers else "other").inc()
        handler = self._handlers.get(mtype)
        if handler is not None:
            await handler(msg)
        elif mtype in _IGNORED_TYPES:
            logger.debug("device {} sent {} (ignored)", self.device_id, mtype)
        else:
            await self.send_error(
                "UNKNOWN_TYPE",
                f"unknown message type {mtype!r}; expected one of {sorted(self._handlers)}",
                field="type",
            )

    async def _on_binary(self, data: bytes) -> None:
        self.hub.metrics.frames_in.inc()
        if not self.hello_done:
            await self.send_error(
                "HELLO_REQUIRED", 'binary frame before hello: send {"type":"hello",...} first'
            )
            return
        try:
            frame = decode_frame(data, self.protocol_version)
        except FrameError as exc:
            await self.send_error("BAD_FRAME", str(exc))
            return
        if frame.type == TYPE_JSON:
            await self._on_text(frame.payload.decode("utf-8", errors="replace"))
            return
        if not frame.payload:
            return
        await self.hub.check_no_voice(self)
        if self.mode == "meeting" and self.meeting_finalized:
            return  # the meeting is being summarised: its audio is ignored (SPEC §5)
        if self.asr is None:
            await self._open_asr(self.listen_mode)
        assert self.asr is not None
        await self.asr.send_audio(frame.payload)

    # -- protocol messages ---------------------------------------------------------------------
    async def _on_hello(self, msg: dict[str, Any]) -> None:
        raw_params = msg.get("audio_params")
        params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
        fmt = params.get("format", "opus")
        if fmt not in ("opus", "pcm"):
            await self.send_error(
                "SCHEMA_INVALID",
                f"audio_params.format {fmt!r} not supported; expected 'opus' or 'pcm'",
                field="audio_params.format",
            )
            fmt = "opus"
        frame_duration = params.get("frame_duration", 60)
        if not isinstance(frame_duration, int) or not 10 <= frame_duration <= 120:
            frame_duration = 60
        self.audio_format = fmt
        self.frame_duration = frame_duration
        reply = {
            "type": "hello",
            "version": msg.get("version", 1) if isinstance(msg.get("version"), int) else 1,
            "transport": "websocket",
            "session_id": self.session_id,
            "audio_params": {
                "format": fmt,
                "sample_rate": params.get("sample_rate", 16000)
                if isinstance(params.get("sample_rate"), int)
                else 16000,
                "channels": 1,
                "frame_duration": frame_duration,
            },
        }
        first = not self.hello_done
        self.hello_done = True
        await self.send_json(reply)
        if first:
            logger.debug(
                "device {} hello format={} frame={}ms", self.device_id, fmt, frame_duration
            )

    async def _on_ping(self, msg: dict[str, Any]) -> None:
        await self.send_json({"type": "pong", "timestamp": now_ms()})

    async def _on_legacy_config_update(self, msg: dict[str, Any]) -> None:
        keys = sorted(msg.get("config", {}).keys()) if isinstance(msg.get("config"), dict) else []
        logger.info("device {} sent legacy config_update (keys {}): no-op", self.device_id, keys)
        await self.send_json({"type": "config_update", "status": "ok", "noop": True})

    async def _on_server(self, msg: dict[str, Any]) -> None:
        action = msg.get("action")
        raw_content = msg.get("content")
        content: dict[str, Any] = raw_content if isinstance(raw_content, dict) else {}
        secret = content.get("secret", msg.get("secret"))
        expected = secret_value(self.settings.server.secret)
        if action not in ("update_config", "restart"):
            await self.send_json(
                {
                    "type": "server",
                    "status": "error",
                    "field": "action",
                    "message": "action must be 'update_config' or 'restart'",
                }
            )
            return
        if not expected or not isinstance(secret, str) or secret != expected:
            logger.warning("device {} server/{}: secret check failed", self.device_id, action)
            await self.send_json(
                {"type": "server", "status": "error", "message": "server secret check failed"}
            )
            return
        if action == "restart":
            await self.send_json(
                {
                    "type": "server",
                    "status": "error",
                    "message": "restart is not supported; use the supervisor",
                }
            )
            return
        event = ConfigUpdated(source="device", config_path=self.hub.config_path_str)
        await self.hub.nc.publish(Subjects.CONFIG_UPDATED, encode(event))
        await self.send_json(
            {
                "type": "server",
                "status": "success",
                "message": "config reloaded",
                "content": {"action": "update_config"},
            }
        )

    async def _on_goodbye(self, msg: dict[str, Any]) -> None:
        await self.ws.close(1000, "goodbye")

    async def _on_abort(self, msg: dict[str, Any]) -> None:
        await self.send_json({"type": "tts", "state": "stop", "session_id": self.session_id})

    async def _on_listen(self, msg: dict[str, Any]) -> None:
        state = msg.get("state")
        if state not in ("start", "stop", "detect"):
            await self.send_error(
                "SCHEMA_INVALID", "listen.state must be 'start', 'stop' or 'detect'", field="state"
            )
            return
        if state == "detect":
            text = msg.get("text")
            if isinstance(text, str) and text.strip():
                await self._on_detect(text.strip())
            return
        mode = msg.get("mode", self.listen_mode)
        if state == "start" and mode not in ("auto", "manual", "realtime"):
            await self.send_error(
                "SCHEMA_INVALID", "listen.mode must be 'auto', 'manual' or 'realtime'", field="mode"
            )
            return
        now = now_ms()
        debounce = self.settings.server.listen_debounce_ms
        if now - self.last_listen_event_ms < debounce:
            logger.debug(
                "device {} listen {} within {} ms ignored", self.device_id, state, debounce
            )
            return
        self.last_listen_event_ms = now
        if state == "start":
            self.listen_mode = mode
            if self.mode == "meeting" and self.meeting_finalized:
                return
            if self.asr is None:
                await self._open_asr(mode)
            else:
                await self.asr.control("listen_start", listen_mode=mode)
        elif self.asr is not None:
            await self.asr.control("listen_stop")

    async def _on_detect(self, text: str) -> None:
        if text.lower() in WAKE_WORDS:
            await self.send_json({"type": "stt", "text": text, "session_id": self.session_id})
            await self.send_json(
                {"type": "llm", "emotion": "happy", "text": "😊", "session_id": self.session_id}
            )
            await self.send_json({"type": "tts", "state": "start", "session_id": self.session_id})
            await self.send_json(
                {
                    "type": "tts",
                    "state": "sentence_start",
                    "text": "嘿，你好呀",
                    "session_id": self.session_id,
                }
            )
            await self.send_json({"type": "tts", "state": "stop", "session_id": self.session_id})
            return
        typed = Transcript(
            **self.envelope,
            stream_id="text",
            utterance_id=new_id(),
            text=text,
            start_ms=0,
            end_ms=0,
            source="text",
            meeting_id=self.active_meeting,
        )
        await self.on_transcript(typed)

    @property
    def active_meeting(self) -> str | None:
        if self.mode == "meeting" and not self.meeting_finalized:
            return self.meeting_id
        return None

    async def _on_mode(self, msg: dict[str, Any]) -> None:
        state, mode = msg.get("state"), msg.get("mode")
        if state not in ("start", "end") or mode not in MODES:
            await self.send_json(
                {
                    "type": "mode",
                    "status": "error",
                    "message": "invalid state or mode: state must be start|end, "
                    f"mode must be one of {list(MODES)}",
                }
            )
            self.hub.metrics.errors.labels("MODE_INVALID").inc()
            return
        await self.set_mode(state, mode)

    async def set_mode(self, state: str, mode: str, *, source: str = "device") -> None:
        ack = {"type": "mode", "status": "ok", "state": state, "mode": mode}
        if state == "start":
            if self.mode == mode and not (mode == "meeting" and self.meeting_finalized):
                await self.send_json(ack)  # repeated start: idempotent
                return
            previous = self.mode
            if previous == "meeting" and self.active_meeting:
                await self._end_meeting()
            self.mode = mode
            logger.info("device {} mode {} -> {} ({})", self.device_id, previous, mode, source)
            await self.send_json(ack)
            if mode == "meeting":
                await self._start_meeting(previous)
            else:
                if mode == "working":
                    self.listen_mode = "manual"
                    await self.send_json({"type": "listen", "state": "start", "mode": "manual"})
                await self._publish_mode("start", mode, previous)
            await self.hub.save_device_state(self)
            return
        # state == "end"
        await self.send_json(ack)
        if self.mode != mode:
            return
        if mode == "meeting" and self.active_meeting:
            await self._end_meeting()
        else:
            await self._publish_mode("end", mode, None)
        logger.info("device {} mode {} ended ({})", self.device_id, mode, source)
        self.mode = None
        self.meeting_id = None
        self.meeting_finalized = False
        self.listen_mode = "auto"
        await self.hub.save_device_state(self)

    async def _start_meeting(self, previous: str | None, meeting_id: str | None = None) -> None:
        self.meeting_id = meeting_id or new_id()
        self.meeting_finalized = False
        if self.settings.meeting.prefer_device_vad:
            self.listen_mode = "manual"
        # A new meeting always gets a fresh ASR stream (the "second meeting" pain point).
        await self._close_asr()
        await self._open_asr(self.listen_mode)
        await self._publish_mode("start", "meeting", previous)

    async def _end_meeting(self) -> None:
        """mode end(meeting) == finalize: stop its audio, close its stream, tell the service."""
        meeting_id = self.meeting_id
        self.meeting_finalized = True
        await self._close_asr()
        await self.hub.save_device_state(self)
        await self._publish_mode("end", "meeting", None, meeting_id=meeting_id)

    async def _publish_mode(
        self, state: str, mode: str, previous: str | None, meeting_id: str | None = None
    ) -> None:
        event = ModeChanged(
            **self.envelope,
            state=state,
            mode=mode,
            previous_mode=previous,
            meeting_id=meeting_id or self.meeting_id if mode == "meeting" else None,
            listen_mode=self.listen_mode,
        )
        await self.hub.nc.publish(Subjects.MODE_CHANGED, encode(event))

    async def _forward(self, msg: dict[str, Any]) -> None:
        """Device messages owned by a service are forwarded as they are."""
        mtype = msg["type"]
        if mtype == "meeting" and msg.get("phase") == "finalize" and self.mode == "meeting":
            self.meeting_finalized = True
            await self._close_asr()
            await self.hub.save_device_state(self)
        inbound = DeviceInbound(
            **self.envelope,
            mode=self.mode,
            message=msg,
            meeting_id=self.meeting_id if mtype == "meeting" else None,
        )
        await self.hub.nc.publish(_FORWARD[mtype], encode(inbound))

    # -- ASR -----------------------------------------------------------------------------------
    async def _open_asr(self, listen_mode: str) -> None:
        req = AsrOpenRequest(
            **self.envelope,
            codec=self.audio_format,
            frame_duration_ms=self.frame_duration,
            listen_mode=listen_mode,
            meeting_id=self.active_meeting,
        )
        self.asr = AsrStream(self.hub.nc, req, self.on_transcript)
        await self.asr.open()

    async def _close_asr(self) -> None:
        stream, self.asr = self.asr, None
        if stream is not None:
            await stream.close()

    async def on_transcript(self, t: Transcript) -> None:
        if t.source == "asr" and t.kind == "final":
            self.touch_voice()
        mode = "meeting" if t.meeting_id else self.mode
        t = t.model_copy(update={"mode": mode})
        actions = route_transcript(mode, t, meeting_disable_tts=self.settings.meeting.disable_tts)
        for action in actions:
            await self._apply(action)

    async def _apply(self, action: Action) -> None:
        if isinstance(action, ToDevice):
            await self.send_json(action.message)
        elif isinstance(action, Publish):
            await self.hub.nc.publish(action.subject, encode(action.transcript))
        elif isinstance(action, SwitchMode):
            await self.set_mode("start", action.mode, source="voice")
        elif isinstance(action, FinalizeMeeting):
            await self._forward({"type": "meeting", "phase": "finalize", "source": action.source})

    # -- bus -> device -------------------------------------------------------------------------
    async def _on_outbound(self, nats_msg: Any) -> None:
        out = parse(DeviceOutbound, nats_msg)
        if out is None:
            return
        if out.message is not None:
            await self.send_json(out.message)
        if out.close:
            self.spawn(self.close_later(out.close_delay_s, 1000, "closed by server"), "close")

    async def _on_audio_out(self, nats_msg: Any) -> None:
        await self.send_audio(nats_msg.data)

    async def _on_command(self, nats_msg: Any) -> None:
        cmd = parse(DeviceCommand, nats_msg)
        if cmd is None:
            return
        if cmd.command == "close_asr_stream":
            if cmd.meeting_id is None or cmd.meeting_id == self.meeting_id:
                if cmd.meeting_id is not None:
                    self.meeting_finalized = True
                await self._close_asr()
        elif cmd.command == "set_mode" and cmd.mode in MODES:
            await self.set_mode("start", cmd.mode, source="command")

    async def _restore_state(self) -> None:
        """A reconnecting device keeps its mode and active meeting (any gateway replica)."""
        state = await self.hub.load_device_state(self.device_id)
        mode = state.get("mode")
        if mode not in MODES:
            return
        self.mode = mode
        if mode == "working":
            self.listen_mode = "manual"
        if mode == "meeting" and state.get("meeting_id") and state.get("finalized") != "1":
            self.meeting_id = state["meeting_id"]
            if self.settings.meeting.prefer_device_vad:
                self.listen_mode = "manual"
            logger.info("device {} resumes meeting {}", self.device_id, self.meeting_id)
            await self._publish_mode("start", "meeting", None)
        elif mode == "meeting":
            self.meeting_id = state.get("meeting_id")
            self.meeting_finalized = True
