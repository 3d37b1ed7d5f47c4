"""Stand-in services for the gateway's tests, speaking the bus contract of docs/dataflow.md over a
real nats-server: a meeting service (``MeetingControl``, ``DeviceInbound``, routed transcripts),
workflow and coding services, and asr replicas that own streams, heartbeat ``committed_seq`` and
publish finals to JetStream. The real services are rewritten alongside; these keep the gateway's
side of the contract honest meanwhile. Plus ``strict_frames``: every frame a test client receives
must validate against a documented server -> device model."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from supie_common.contracts import (
    ApiReply,
    AsrControl,
    AsrEvent,
    AsrOpenReply,
    AsrOpenRequest,
    AudioHeaders,
    DeviceCommand,
    DeviceInbound,
    ErrorCode,
    InboundReply,
    MeetingControl,
    MeetingControlReply,
    Queues,
    Streams,
    Subjects,
    Transcript,
    WorkflowApiRequest,
    decode,
    encode,
    new_id,
    to_frame,
)
from supie_common.contracts import device as dm
from supie_common.device_client import DeviceClient

__all__ = [
    "BackgroundLoop",
    "Stack",
    "StandInAsr",
    "StandInMeeting",
    "eventually",
    "stack",
    "strict_frames",
]


T = TypeVar("T")


class BackgroundLoop:
    """An event loop in a thread, for sync tests (hypothesis, schemathesis) that need
    long-lived async stand-ins."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def eventually(check: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Wait until ``check()`` is truthy (polling); return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what or check}")
        await asyncio.sleep(0.02)


@pytest.fixture
def strict_frames() -> Iterator[None]:
    """Every text frame any DeviceClient receives in the test must be a documented model."""
    DeviceClient.STRICT = True
    DeviceClient.all_violations.clear()
    yield
    DeviceClient.STRICT = False
    violations = list(DeviceClient.all_violations)
    DeviceClient.all_violations.clear()
    assert not violations, "undocumented server frames:\n" + "\n".join(violations)


class StandInMeeting:
    """The meeting service's side of the contract, in memory."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.active: dict[str, str] = {}  # device -> meeting
        self.status: dict[str, str] = {}  # meeting -> status
        self.segments: dict[str, list[str]] = defaultdict(list)
        self.snippets: dict[str, list[str]] = defaultdict(list)
        self.controls: list[MeetingControl] = []
        self.inbound: list[DeviceInbound] = []
        self.transcripts: list[Transcript] = []
        self.retry_next = 0  # answer this many requests with retry: true
        self.silent = False  # take requests, never answer (a stuck replica)
        self._seen: dict[str, bytes] = {}
        self._subs: list[Any] = []

    async def start(self) -> StandInMeeting:
        for subject, cb in (
            (Subjects.MEETING_CONTROL, self._on_control),
            (Subjects.MEETING_INBOUND, self._on_inbound),
            (Subjects.MEETING_TRANSCRIPT, self._on_transcript),
        ):
            self._subs.append(await self.nc.subscribe(subject, queue=Queues.MEETING, cb=cb))
        await self.nc.flush()
        return self

    async def stop(self) -> None:
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs.clear()

    def _retry(self) -> bool:
        if self.retry_next > 0:
            self.retry_next -= 1
            return True
        return False

    async def _answer(self, msg: Msg, message_id: str, reply: bytes) -> None:
        self._seen[message_id] = reply
        await msg.respond(reply)

    async def _finalize(self, device_id: str) -> tuple[str | None, list[str]]:
        meeting = self.active.pop(device_id, None)
        if meeting is None:
            err = dm.MeetingError(
                code=ErrorCode.NO_ACTIVE_MEETING, message="no active meeting", phase="finalize"
            )
            return None, [to_frame(err)]
        self.status[meeting] = "finalizing"
        ack = dm.MeetingFinalizeAck(
            session_id=meeting, started_at=1, pending_count=len(self.segments[meeting])
        )
        command = DeviceCommand(command="meeting_state", meeting_id=meeting, status="finalizing")
        await self.nc.publish(Subjects.device_command(device_id), encode(command))
        return meeting, [to_frame(ack)]

    async def _on_control(self, msg: Msg) -> None:
        if self.silent:
            return
        control = decode(MeetingControl, msg.data)
        self.controls.append(control)
        if self._retry():
            await msg.respond(encode(MeetingControlReply(retry=True, error="not yet")))
            return
        if control.message_id in self._seen:
            await msg.respond(self._seen[control.message_id])
            return
        device = control.device_id
        if control.action == "start":
            meeting = self.active.get(device) or new_id()
            self.active[device] = meeting
            self.status[meeting] = "active"
            reply = MeetingControlReply(meeting_id=meeting, status="active", started_at=1)
        elif control.action in ("end", "finalize"):
            meeting_or_none, frames = await self._finalize(device)
            reply = MeetingControlReply(
                meeting_id=meeting_or_none,
                status="finalizing" if meeting_or_none else None,
                frames=frames,
            )
        else:  # state
            active = self.active.get(device)
            if active is None:
                reply = MeetingControlReply()
            else:
                push = dm.MeetingTranscriptPush(
                    session_id=active,
                    items=[],
                    total_segments=len(self.segments[active]),
                    resumed=True,
                )
                reply = MeetingControlReply(
                    meeting_id=active, status="active", started_at=1, frames=[to_frame(push)]
                )
        await self._answer(msg, control.message_id, encode(reply))

    async def _on_inbound(self, msg: Msg) -> None:
        if self.silent:
            return
        inbound = decode(DeviceInbound, msg.data)
        self.inbound.append(inbound)
        if self._retry():
            await msg.respond(encode(InboundReply(retry=True, error="redis down")))
            return
        if inbound.message_id in self._seen:
            await msg.respond(self._seen[inbound.message_id])
            return
        message = inbound.message
        meeting = self.active.get(inbound.device_id)
        if isinstance(message, dm.MeetingFinalize):
            _, frames = await self._finalize(inbound.device_id)
            reply = InboundReply(frames=frames)
        elif meeting is None:
            err = dm.MeetingError(
                code=ErrorCode.NO_ACTIVE_MEETING, message="no active meeting", phase="snippet"
            )
            reply = InboundReply.of(err)
        else:
            assert isinstance(message, dm.MeetingSnippet)
            self.snippets[meeting] += [item.text for item in message.items]
            reply = InboundReply.of(
                dm.MeetingSnippetAck(session_id=meeting, accepted=len(message.items))
            )
        await self._answer(msg, inbound.message_id, encode(reply))

    async def _on_transcript(self, msg: Msg) -> None:
        if self.silent:
            return
        t = decode(Transcript, msg.data)
        self.transcripts.append(t)
        if self._retry():
            await msg.respond(encode(InboundReply(retry=True)))
            return
        self.segments[t.meeting_id or "?"].append(t.text)
        await msg.respond(encode(InboundReply()))


class StandInService:
    """workflow or coding: acks every inbound message, records routed transcripts and API calls."""

    def __init__(self, nc: NATS, kind: str) -> None:
        self.nc = nc
        self.kind = kind
        self.inbound: list[DeviceInbound] = []
        self.texts: list[Transcript] = []
        self.api: list[WorkflowApiRequest] = []
        self.api_reply: ApiReply = ApiReply(data={"tasks": []})
        self.retry_next = 0
        self.down = False
        self._subs: list[Any] = []

    async def start(self) -> StandInService:
        if self.kind == "workflow":
            subjects = (Subjects.WORKFLOW_INBOUND, Subjects.WORKFLOW_INTENT, Subjects.WORKFLOW_API)
        else:
            subjects = (Subjects.CODING_INBOUND, Subjects.CODING_TEXT)
        for subject in subjects:
            self._subs.append(await self.nc.subscribe(subject, queue=self.kind, cb=self._on))
        await self.nc.flush()
        return self

    async def stop(self) -> None:
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs.clear()

    async def _on(self, msg: Msg) -> None:
        if self.down:
            return
        if msg.subject == Subjects.WORKFLOW_API:
            self.api.append(decode(WorkflowApiRequest, msg.data))
            await msg.respond(encode(self.api_reply))
            return
        if msg.subject.endswith(".inbound"):
            inbound = decode(DeviceInbound, msg.data)
            self.inbound.append(inbound)
            if self.retry_next > 0:
                self.retry_next -= 1
                await msg.respond(encode(InboundReply(retry=True)))
                return
            event = str(getattr(inbound.message, "event", "?"))
            ack: Any = dm.WorkflowAck(event=event)
            if self.kind == "coding":
                ack = dm.CodingAck(event=event)
            await msg.respond(encode(InboundReply.of(ack)))
            return
        self.texts.append(decode(Transcript, msg.data))
        await msg.respond(encode(InboundReply()))


class StandInAsr:
    """An asr replica: owns the streams it is asked to open, heartbeats ``committed_seq`` (all it
    received, unless :attr:`hold_commit`), records frames and controls, and publishes finals to
    JetStream with the stream's routing context."""

    def __init__(self, nc: NATS, owner: str = "asr-a") -> None:
        self.nc = nc
        self.owner = owner
        self.requests: dict[str, AsrOpenRequest] = {}
        self.frames: dict[str, list[int]] = defaultdict(list)
        self.payloads: dict[str, list[bytes]] = defaultdict(list)
        self.controls: dict[str, list[AsrControl]] = defaultdict(list)
        self.hold_commit = False  # never commit: everything stays kept for a replay
        self.committed: dict[str, int] = {}
        self._subs: list[Any] = []
        self._stream_subs: list[Any] = []
        self._beat: asyncio.Task[None] | None = None

    async def start(self) -> StandInAsr:
        self._subs.append(
            await self.nc.subscribe(Subjects.ASR_OPEN, queue=Queues.ASR, cb=self._on_open)
        )
        await self.nc.flush()
        self._beat = asyncio.create_task(self._heartbeats())
        return self

    async def stop(self) -> None:
        """Dies: no more heartbeats, no more frames taken."""
        if self._beat is not None:
            self._beat.cancel()
            await asyncio.gather(self._beat, return_exceptions=True)
        for sub in self._subs + self._stream_subs:
            await sub.unsubscribe()
        self._subs.clear()
        self._stream_subs.clear()

    @property
    def stream_ids(self) -> list[str]:
        return list(self.requests)

    def stream_of(self, device_id: str) -> str | None:
        ids = [sid for sid, req in self.requests.items() if req.device_id == device_id]
        return ids[-1] if ids else None

    async def _on_open(self, msg: Msg) -> None:
        req = decode(AsrOpenRequest, msg.data)
        sid = req.stream_id
        self.requests[sid] = req
        if sid not in self.committed:
            self._stream_subs.append(
                await self.nc.subscribe(Subjects.asr_audio(sid), cb=self._on_audio)
            )
            self._stream_subs.append(
                await self.nc.subscribe(Subjects.asr_control(sid), cb=self._on_control)
            )
            await self.nc.flush()
        self.committed.setdefault(sid, req.resume_seq)
        await msg.respond(encode(AsrOpenReply(ok=True, stream_id=sid, owner=self.owner)))

    async def _on_audio(self, msg: Msg) -> None:
        headers = msg.headers or {}
        sid = headers[AudioHeaders.STREAM]
        self.frames[sid].append(int(headers[AudioHeaders.SEQ]))
        self.payloads[sid].append(msg.data)

    async def _on_control(self, msg: Msg) -> None:
        sid = msg.subject.split(".")[-2]
        ctl = decode(AsrControl, msg.data)
        self.controls[sid].append(ctl)
        if ctl.action == "route" and sid in self.requests:
            self.requests[sid] = self.requests[sid].model_copy(
                update={"mode": ctl.mode, "meeting_id": ctl.meeting_id}
            )

    async def _heartbeats(self) -> None:
        while True:
            for sid in list(self.requests):
                received = max(self.frames[sid], default=-1) + 1
                if not self.hold_commit:
                    self.committed[sid] = max(self.committed.get(sid, 0), received)
                event = AsrEvent(
                    kind="heartbeat",
                    stream_id=sid,
                    owner=self.owner,
                    frames=received,
                    committed_seq=self.committed.get(sid, 0),
                )
                await self.nc.publish(Subjects.asr_events(sid), encode(event))
            await asyncio.sleep(0.2)

    async def final(self, stream_id: str, text: str, start_seq: int = 0) -> Transcript:
        """Publish one final for ``stream_id`` to JetStream, as the real asr does."""
        req = self.requests[stream_id]
        t = Transcript(
            device_id=req.device_id,
            session_id=req.session_id,
            gateway_id=req.gateway_id,
            stream_id=stream_id,
            utterance_id=f"{stream_id}:{start_seq}",
            text=text,
            start_ms=0,
            end_ms=1000,
            mode=req.mode,
            meeting_id=req.meeting_id,
        )
        await self.nc.jetstream().publish(
            Subjects.transcript_final(req.device_id),
            encode(t),
            stream=Streams.TRANSCRIPTS,
            headers={"Nats-Msg-Id": t.utterance_id},
        )
        return t

    async def error(self, stream_id: str, message: str) -> None:
        event = AsrEvent(kind="error", stream_id=stream_id, owner=self.owner, error=message)
        await self.nc.publish(Subjects.asr_events(stream_id), encode(event))

    async def partial(self, stream_id: str, text: str) -> None:
        req = self.requests[stream_id]
        t = Transcript(
            **req.model_dump(include={"device_id", "session_id", "gateway_id"}),
            stream_id=stream_id,
            utterance_id=f"{stream_id}:p",
            kind="partial",
            text=text,
            start_ms=0,
            end_ms=1,
        )
        event = AsrEvent(kind="transcript", stream_id=stream_id, owner=self.owner, transcript=t)
        await self.nc.publish(Subjects.asr_events(stream_id), encode(event))


class Stack:
    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.meeting = StandInMeeting(nc)
        self.workflow = StandInService(nc, "workflow")
        self.coding = StandInService(nc, "coding")
        self.asr = StandInAsr(nc)

    async def start(self) -> Stack:
        await self.meeting.start()
        await self.workflow.start()
        await self.coding.start()
        await self.asr.start()
        return self

    async def stop(self) -> None:
        for part in (self.meeting, self.workflow, self.coding, self.asr):
            await part.stop()


@pytest.fixture
async def stack(nc: NATS) -> AsyncIterator[Stack]:
    s = await Stack(nc).start()
    yield s
    await s.stop()
