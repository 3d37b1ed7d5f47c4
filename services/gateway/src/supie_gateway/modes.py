"""The mode controller of one connection: ``mode start|end``, voice and service mode switches,
and the restore on connect (docs/dataflow.md §3).

Working and coding are the gateway's own (kept per device in Redis, best effort). The meeting is
the meeting service's: start, end and "what is my meeting" are :class:`MeetingControl` requests,
and the session only mirrors what the service answered or announced
(``DeviceCommand(meeting_state)``), never a guess of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Literal, Protocol

from loguru import logger
from nats.aio.client import Client as NATS
from supie_common.contracts import (
    DeviceCommand,
    ErrorCode,
    MeetingControl,
    MeetingControlReply,
    Mode,
    ModeChanged,
    Subjects,
    encode,
)
from supie_common.contracts.device import ListenCommand, ModeAck, ModeError, ModeState

from .accept import request_until_accepted
from .config import GatewaySettings
from .device_state import DeviceStateStore
from .outbox import Outbox
from .session import DeviceSession

__all__ = ["CONNECT_STATE_BUDGET_S", "ModeController", "StreamControl"]

CONNECT_STATE_BUDGET_S = 5.0  # asking the meeting service on connect: retried this long
ControlSource = Literal["device", "mode_end", "voice", "text", "api", "console", "connect"]


class StreamControl(Protocol):
    """What the mode controller needs from the connection's ASR stream."""

    async def fresh_stream(self) -> None: ...

    async def close_stream(self) -> None: ...

    async def route_stream(self) -> None: ...


class ModeController:
    def __init__(
        self,
        session: DeviceSession,
        outbox: Outbox,
        nc: NATS,
        store: DeviceStateStore,
        streams: StreamControl,
        settings: Callable[[], GatewaySettings],
        send_after_hello: Callable[[list[str]], Awaitable[None]],
    ) -> None:
        self.session = session
        self.outbox = outbox
        self.nc = nc
        self.store = store
        self.streams = streams
        self.settings = settings
        self.send_after_hello = send_after_hello
        self._lock = asyncio.Lock()
        self._changes = 0  # mode changes the badge (or a service) asked for since connect

    # -- requests --------------------------------------------------------------------------------
    async def set_mode(self, state: ModeState, mode: Mode, *, source: str = "device") -> None:
        async with self._lock:
            self._changes += 1
            if state == "start":
                await self._start(mode, source)
            else:
                await self._end(mode, source)

    async def _meeting(
        self,
        action: Literal["start", "end", "finalize", "state"],
        source: ControlSource,
        *,
        budget_s: float | None = None,
    ) -> MeetingControlReply | None:
        s = self.session
        settings = self.settings()
        control = MeetingControl(
            **s.envelope(), action=action, source=source, listen_mode=s.listen_mode
        )
        return await request_until_accepted(
            self.nc,
            Subjects.MEETING_CONTROL,
            lambda _n: control,
            MeetingControlReply,
            budget_s=settings.server.accept_timeout_s if budget_s is None else budget_s,
            attempt_timeout_s=settings.nats.request_timeout_s,
            wants_retry=lambda r: r.retry,
            what=f"device {s.device_id} meeting {action}",
        )

    async def _unavailable(self, what: str) -> None:
        budget = self.settings().server.accept_timeout_s
        self.outbox.metrics.errors.labels(ErrorCode.UNAVAILABLE.value).inc()
        await self.outbox.send(
            ModeError(
                code=ErrorCode.UNAVAILABLE,
                message=f"the meeting service did not answer {what} within {budget:g} s; "
                "try again later",
            )
        )

    async def _start(self, mode: Mode, source: str) -> None:
        s = self.session
        previous = s.mode
        if mode == "meeting":
            await self._start_meeting(previous, "voice" if source == "voice" else "device")
            return
        if previous == mode:
            await self.outbox.send(ModeAck(state="start", mode=mode))  # idempotent
            return
        ended: list[str] = []
        if previous == "meeting" and s.active_meeting:
            frames = await self._end_meeting("voice" if source == "voice" else "mode_end")
            if frames is None:
                return
            ended = frames
        s.mode = mode
        s.meeting_id = None
        s.meeting_status = None
        logger.info("device {} mode {} -> {} ({})", s.device_id, previous, mode, source)
        await self.outbox.send(ModeAck(state="start", mode=mode))
        for frame in ended:
            await self.outbox.send_frame(frame)
        if mode == "working":
            s.listen_mode = "manual"
            await self.outbox.send(ListenCommand(state="start", mode="manual"))
        await self.streams.route_stream()
        await self._publish("start", mode, previous)
        await self.store.save_mode(s.device_id, mode)

    async def _start_meeting(self, previous: Mode | None, source: ControlSource) -> None:
        s = self.session
        reply = await self._meeting("start", source)
        if reply is None or reply.meeting_id is None:
            await self._unavailable("mode start(meeting)")
            return
        same = previous == "meeting" and s.meeting_id == reply.meeting_id and s.active_meeting
        s.mode = "meeting"
        s.meeting_id = reply.meeting_id
        s.meeting_status = reply.status or "active"
        if self.settings().meeting.prefer_device_vad:
            s.listen_mode = "manual"
        await self.outbox.send(ModeAck(state="start", mode="meeting", session_id=reply.meeting_id))
        for frame in reply.frames:
            await self.outbox.send_frame(frame)
        if same:
            return  # repeated start: the same meeting, the same stream
        logger.info(
            "device {} mode {} -> meeting {} ({})", s.device_id, previous, s.meeting_id, source
        )
        # A new meeting always gets a fresh ASR stream (the "second meeting" pain point).
        await self.streams.fresh_stream()
        await self._publish("start", "meeting", previous)
        await self.store.save_mode(s.device_id, None)

    async def _end_meeting(self, source: ControlSource) -> list[str] | None:
        """= finalize: the reply's frames (the finalize ACK), or None when nobody accepted it."""
        s = self.session
        reply = await self._meeting("end", source)
        if reply is None:
            await self._unavailable("mode end(meeting)")
            return None
        meeting_id = s.meeting_id
        s.meeting_status = reply.status or "finalizing"
        await self.streams.close_stream()
        await self._publish("end", "meeting", None, meeting_id=meeting_id)
        return reply.frames

    async def _end(self, mode: Mode, source: str) -> None:
        s = self.session
        if s.mode != mode:
            await self.outbox.send(ModeAck(state="end", mode=mode))
            return
        frames: list[str] = []
        if mode == "meeting":
            if s.meeting_id is not None and s.meeting_status == "active":
                ended = await self._end_meeting("mode_end")
                if ended is None:
                    return
                frames = ended
        else:
            await self._publish("end", mode, None)
        logger.info("device {} mode {} ended ({})", s.device_id, mode, source)
        s.mode = None
        s.meeting_id = None
        s.meeting_status = None
        s.listen_mode = "auto"
        await self.outbox.send(ModeAck(state="end", mode=mode))
        for frame in frames:
            await self.outbox.send_frame(frame)
        await self.streams.route_stream()
        await self.store.save_mode(s.device_id, None)

    # -- told by services ----------------------------------------------------------------------
    async def on_command(self, cmd: DeviceCommand) -> None:
        if cmd.command == "set_mode" and cmd.mode is not None:
            await self.set_mode("start", cmd.mode, source=cmd.reason or "command")
        elif cmd.command == "meeting_state" and cmd.status is not None:
            await self._meeting_state(cmd)

    async def _meeting_state(self, cmd: DeviceCommand) -> None:
        s = self.session
        if cmd.meeting_id is not None and s.meeting_id not in (None, cmd.meeting_id):
            return  # about an older meeting
        if cmd.status in ("finalizing", "finalized"):
            if s.meeting_id is None and cmd.meeting_id is None:
                return
            was_active = s.active_meeting is not None
            s.meeting_status = cmd.status
            if was_active and s.mode == "meeting":
                logger.info(
                    "device {} meeting {} is {}: its audio stops",
                    s.device_id,
                    s.meeting_id,
                    cmd.status,
                )
                await self.streams.close_stream()
        elif cmd.status == "active" and s.mode == "meeting" and s.meeting_id == cmd.meeting_id:
            s.meeting_status = "active"

    # -- connect ---------------------------------------------------------------------------------
    async def restore(self) -> None:
        """On connect (any replica): the working/coding mode kept in Redis, then the meeting
        service's word on the device's meeting (resume it when active; frames it sends, such as
        a summary that never reached the badge, follow the hello)."""
        s = self.session
        mode = await self.store.load_mode(s.device_id)
        async with self._lock:
            if self._changes == 0 and mode is not None and s.mode is None:
                s.mode = mode
                if mode == "working":
                    s.listen_mode = "manual"
                logger.info("device {} resumes {} mode", s.device_id, mode)
        reply = await self._meeting("state", "connect", budget_s=self._connect_budget())
        if reply is None:
            logger.info("device {}: meeting state unknown (no meeting service)", s.device_id)
            return
        async with self._lock:
            resumed = (
                reply.status == "active" and reply.meeting_id is not None and self._changes == 0
            )
            if resumed:
                s.mode = "meeting"
                s.meeting_id = reply.meeting_id
                s.meeting_status = "active"
                if self.settings().meeting.prefer_device_vad:
                    s.listen_mode = "manual"
                logger.info("device {} resumes meeting {}", s.device_id, s.meeting_id)
                await self.streams.route_stream()
                await self._publish("start", "meeting", None)
        if reply.frames:
            await self.send_after_hello(reply.frames)

    def _connect_budget(self) -> float:
        return min(self.settings().server.accept_timeout_s, CONNECT_STATE_BUDGET_S)

    async def _publish(
        self, state: ModeState, mode: Mode, previous: Mode | None, meeting_id: str | None = None
    ) -> None:
        s = self.session
        event = ModeChanged(
            **s.envelope(),
            state=state,
            mode=mode,
            previous_mode=previous,
            meeting_id=(meeting_id or s.meeting_id) if mode == "meeting" else None,
            listen_mode=s.listen_mode,
            group_key=s.group_key,
        )
        try:
            await self.nc.publish(Subjects.MODE_CHANGED, encode(event))
        except Exception as exc:  # informational: never worth a socket
            logger.debug("mode changed not published: {}", exc)
