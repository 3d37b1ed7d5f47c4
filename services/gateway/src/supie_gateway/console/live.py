"""``GET /console/live?topics=...``: Server-Sent Events fed from the bus, for the console's live
views. Each stream holds its own core-NATS subscriptions (nothing is kept per stream beyond
them and a bounded queue); any gateway replica serves any stream.

Topics (comma separated, at most :data:`MAX_TOPICS`):

- ``meetings``: every meeting's state changes (``meeting``) and segment counts (``count``);
- ``meeting:<id>``: one meeting's stored segments (``segment``) and state (``meeting``);
- ``devices``: badges connecting, disconnecting, changing mode (``device``);
- ``groups``: every group's task list after each change (``tasks``);
- ``group:<key>``: one group's (``tasks``).

Authentication is the API's (``Authorization: Bearer`` or, since EventSource cannot send
headers, ``?token=``). A client that cannot keep up gets ``resync`` (reload what you show) and
the events after it, never a silently shortened stream. The stream ends when the gateway stops.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from loguru import logger
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from pydantic import BaseModel, ValidationError
from supie_common.contracts import (
    DeviceConnected,
    DeviceDisconnected,
    MeetingSegmentAdded,
    MeetingStateChanged,
    ModeChanged,
    Subjects,
    WorkflowGroupChanged,
    decode,
)

from ..http.context import HttpContext
from ..http.guard import fail, guard

__all__ = [
    "MAX_STREAMS",
    "MAX_TOPICS",
    "QUEUE_SIZE",
    "LiveStream",
    "LiveTopics",
    "live_router",
    "sse",
]

MAX_TOPICS = 8
MAX_STREAMS = 1000  # per gateway replica
QUEUE_SIZE = 2000  # events waiting for one slow client before it is told to resync
PING_S = 15.0  # a comment line keeps proxies from closing an idle stream
TICK_S = 0.5  # how often an idle stream checks that the gateway is still up
_MEETING_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class BadTopics(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class LiveTopics:
    meetings: bool = False
    meeting_ids: tuple[str, ...] = ()
    devices: bool = False
    groups: bool = False
    group_keys: tuple[str, ...] = ()

    @classmethod
    def parse(cls, raw: str | None) -> LiveTopics:
        names = [t.strip() for t in (raw or "").split(",") if t.strip()]
        if not names:
            raise BadTopics(
                "topics: required (meetings, meeting:<id>, devices, groups, group:<key>)"
            )
        if len(names) > MAX_TOPICS:
            raise BadTopics(f"topics: at most {MAX_TOPICS}")
        meetings = devices = groups = False
        ids: list[str] = []
        keys: list[str] = []
        for name in names:
            kind, _, arg = name.partition(":")
            if name == "meetings":
                meetings = True
            elif name == "devices":
                devices = True
            elif name == "groups":
                groups = True
            elif kind == "meeting" and _MEETING_ID.match(arg):
                ids.append(arg)
            elif kind == "group" and 0 < len(arg) <= 128:
                keys.append(arg)
            else:
                raise BadTopics(f"topics: unknown or malformed topic {name[:60]!r}")
        return cls(meetings, tuple(ids), devices, groups, tuple(keys))

    def names(self) -> list[str]:
        out = ["meetings"] if self.meetings else []
        out += [f"meeting:{m}" for m in self.meeting_ids]
        out += ["devices"] if self.devices else []
        out += ["groups"] if self.groups else []
        out += [f"group:{g}" for g in self.group_keys]
        return out


def sse(event: str, data: Any) -> str:
    """One Server-Sent Event (the JSON has no newline, so one ``data:`` line)."""
    return (
        f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"
    )


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


Handler = Callable[[Msg], "tuple[str, dict[str, Any]] | None"]


@dataclass(eq=False)
class LiveStream:
    """The bus subscriptions of one client and the queue between them and its socket."""

    nc: NATS
    topics: LiveTopics
    queue: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    subs: list[Any] = field(default_factory=list)
    dropped: int = 0

    def _push(self, text: str) -> None:
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            # Too slow: forget what is queued and say so; the page reloads its state.
            self.dropped += self.queue.qsize()
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(sse("resync", {"reason": "slow client", "dropped": self.dropped}))
            self.queue.put_nowait(text)

    async def _sub(self, subject: str, handle: Handler) -> None:
        async def cb(msg: Msg) -> None:
            try:
                out = handle(msg)
            except ValidationError:
                return  # a malformed bus message is not the page's business
            if out is not None:
                self._push(sse(*out))

        self.subs.append(await self.nc.subscribe(subject, cb=cb))

    async def open(self) -> None:
        t = self.topics
        ids = set(t.meeting_ids)
        if t.meetings or ids:

            def state(msg: Msg) -> tuple[str, dict[str, Any]] | None:
                ev = decode(MeetingStateChanged, msg.data)
                if t.meetings or ev.meeting_id in ids:
                    return "meeting", _dump(ev)
                return None

            await self._sub(Subjects.MEETING_STATE_CHANGED, state)
        if t.meetings:

            def count(msg: Msg) -> tuple[str, dict[str, Any]] | None:
                ev = decode(MeetingSegmentAdded, msg.data)
                return "count", {
                    "meeting_id": ev.meeting_id,
                    "device_id": ev.device_id,
                    "count": ev.index + 1,
                    "ts_ms": ev.ts_ms,
                }

            await self._sub(Subjects.MEETING_LIVE_ALL, count)
        for m in t.meeting_ids:
            await self._sub(
                Subjects.meeting_live(m),
                lambda msg: ("segment", _dump(decode(MeetingSegmentAdded, msg.data))),
            )
        if t.devices:
            await self._sub(
                Subjects.DEVICE_CONNECTED,
                lambda msg: ("device", _device(decode(DeviceConnected, msg.data), True)),
            )
            await self._sub(
                Subjects.DEVICE_DISCONNECTED,
                lambda msg: ("device", _device(decode(DeviceDisconnected, msg.data), False)),
            )
            await self._sub(
                Subjects.MODE_CHANGED,
                lambda msg: ("device", _mode(decode(ModeChanged, msg.data))),
            )
        tasks = lambda msg: ("tasks", _dump(decode(WorkflowGroupChanged, msg.data)))  # noqa: E731
        if t.groups:
            await self._sub(Subjects.WORKFLOW_GROUP_ALL, tasks)
        else:
            for g in t.group_keys:
                await self._sub(Subjects.workflow_group(g), tasks)
        await self.nc.flush()

    async def close(self) -> None:
        for sub in self.subs:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # the connection is closing: nothing to undo
                logger.debug("live unsubscribe: {}", exc)
        self.subs.clear()


def _device(ev: DeviceConnected | DeviceDisconnected, online: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "deviceId": ev.device_id,
        "sessionId": ev.session_id,
        "gateway": ev.gateway_id,
        "group": ev.group_key or None,
        "online": online,
        "ts": ev.ts_ms,
    }
    if isinstance(ev, DeviceDisconnected):
        out["reason"] = ev.reason
    return out


def _mode(ev: ModeChanged) -> dict[str, Any]:
    return {
        "deviceId": ev.device_id,
        "sessionId": ev.session_id,
        "gateway": ev.gateway_id,
        "group": ev.group_key or None,
        "online": True,
        "mode": ev.mode if ev.state == "start" else None,
        "meetingId": ev.meeting_id,
        "ts": ev.ts_ms,
    }


def live_router(ctx: HttpContext) -> APIRouter:
    router = APIRouter(prefix="/console", include_in_schema=False)
    streams: set[LiveStream] = set()

    def stopping() -> bool:
        nc = ctx.nc
        return ctx.stopping() or nc.is_closed or nc.is_draining

    async def run(stream: LiveStream) -> AsyncIterator[str]:
        # Subscriptions are made here, inside the body, so that whatever ends the response
        # (the client leaving before the first byte included) runs the ``finally``.
        streams.add(stream)
        try:
            try:
                await stream.open()
            except Exception as exc:
                yield sse("error", {"error": f"live updates unavailable: {type(exc).__name__}"})
                return
            yield "retry: 2000\n" + sse(
                "hello", {"topics": stream.topics.names(), "serverTime": int(time.time() * 1000)}
            )
            last = time.monotonic()
            while True:
                try:
                    text = await asyncio.wait_for(stream.queue.get(), TICK_S)
                except TimeoutError:
                    if stopping():
                        return
                    if time.monotonic() - last >= PING_S:
                        last = time.monotonic()
                        yield ": ping\n\n"
                    continue
                last = time.monotonic()
                yield text
        finally:
            streams.discard(stream)
            await stream.close()

    @router.get("/live")
    async def console_live(req: Request, topics: str | None = Query(default=None)) -> Response:
        refusal = guard(req, lambda: ctx.settings().server, ctx.limiter)
        if refusal is not None:
            return refusal
        try:
            parsed = LiveTopics.parse(topics)
        except BadTopics as exc:
            return fail(400, str(exc))
        if len(streams) >= MAX_STREAMS:
            return fail(503, f"too many live streams on this gateway ({MAX_STREAMS})")
        if stopping() or not ctx.nc.is_connected:
            return fail(503, "the bus is unavailable")
        stream = LiveStream(ctx.nc, parsed)
        ctx.metrics.http_requests.labels("live", "200").inc()
        return StreamingResponse(
            run(stream),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return router
