"""The mode router at work: every final transcript (ASR utterances and typed text) is taken from
JetStream (``Streams.TRANSCRIPTS``) through the durable pull consumer ``Consumers.ROUTER``,
shared by every gateway replica, routed by :func:`.router.route_transcript` and acknowledged
only once every request it made was answered (docs/dataflow.md §5).

Routing depends on the transcript alone (its ``mode`` and ``meeting_id``), never on the socket
that produced it: a gateway that dies mid-utterance loses nothing, another replica routes it.
Frames for the badge go to ``device.<dev>.out`` (whichever gateway holds it); a mode switch goes
to ``device.<dev>.command``. A message whose requests were not all answered is nak'ed with a
growing delay and redelivered, at most :data:`MAX_DELIVER` times.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable

from loguru import logger
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from pydantic import ValidationError
from supie_common.bus import ensure_transcripts_stream, request
from supie_common.contracts import (
    Consumers,
    DeviceCommand,
    DeviceOutbound,
    InboundReply,
    MeetingControl,
    MeetingControlReply,
    Streams,
    Subjects,
    Transcript,
    decode,
    encode,
    to_frame,
)

from .config import GatewaySettings
from .router import Action, FinalizeMeeting, Forward, SwitchMode, ToDevice, route_transcript

__all__ = ["ACK_WAIT_S", "MAX_DELIVER", "TranscriptRouter", "publish_transcript"]

ACK_WAIT_S = 10.0
MAX_DELIVER = 10
FETCH_BATCH = 64


async def publish_transcript(js: JetStreamContext, t: Transcript, timeout: float = 5.0) -> None:
    """Put one final into the stream (``Nats-Msg-Id`` = utterance id: a repeat is dropped by
    JetStream's duplicate window). Raises when JetStream did not store it."""
    await js.publish(
        Subjects.transcript_final(t.device_id),
        encode(t),
        timeout=timeout,
        stream=Streams.TRANSCRIPTS,
        headers={"Nats-Msg-Id": t.utterance_id},
    )


class _NotAnswered(Exception):
    pass


class TranscriptRouter:
    def __init__(self, nc: NATS, settings: Callable[[], GatewaySettings]) -> None:
        self.nc = nc
        self.settings = settings
        self.js = nc.jetstream()
        self._psub: JetStreamContext.PullSubscription | None = None
        self.routed = 0
        self.redelivered = 0
        self._stopped = False

    async def start(self) -> None:
        await ensure_transcripts_stream(self.js, self.settings().nats.stream_replicas)
        config = ConsumerConfig(
            durable_name=Consumers.ROUTER,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ACK_WAIT_S,
            max_deliver=MAX_DELIVER,
            filter_subject=Subjects.TRANSCRIPTS_ALL,
            deliver_policy=DeliverPolicy.ALL,
            max_ack_pending=10_000,
        )
        try:
            await self.js.add_consumer(Streams.TRANSCRIPTS, config=config)
        except Exception as exc:  # created by another replica, perhaps with older settings
            logger.debug("router consumer exists: {}", exc)
        self._psub = await self.js.pull_subscribe_bind(
            durable=Consumers.ROUTER, stream=Streams.TRANSCRIPTS
        )

    async def stop(self) -> None:
        self._stopped = True
        if self._psub is not None:
            try:
                await self._psub.unsubscribe()
            except Exception as exc:
                logger.debug("router unsubscribe: {}", exc)
            self._psub = None

    async def run(self) -> None:
        """The consume loop (a critical task: if it ends, the process exits and restarts)."""
        while not self._stopped and self._psub is not None:
            try:
                msgs = await self._psub.fetch(FETCH_BATCH, timeout=1.0)
            except (TimeoutError, NatsTimeoutError):
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS reconnecting: the outage budget decides
                logger.debug("router fetch: {}", exc)
                await asyncio.sleep(0.5)
                continue
            by_device: dict[str, list[Msg]] = defaultdict(list)
            for msg in msgs:
                by_device[msg.subject].append(msg)
            await asyncio.gather(*(self._in_order(batch) for batch in by_device.values()))
        # Stopped: the loop does not rely on cancellation (one can be lost inside nats-py's
        # fetch on Python 3.11); the task set takes a return during shutdown quietly.

    async def _in_order(self, msgs: list[Msg]) -> None:
        for msg in msgs:
            await self._handle(msg)

    async def _handle(self, msg: Msg) -> None:
        try:
            t = decode(Transcript, msg.data)
        except ValidationError as exc:
            logger.warning("router: dropping a malformed transcript on {}: {}", msg.subject, exc)
            await self._settle(msg.term())
            return
        delivered = msg.metadata.num_delivered if msg.metadata else 1
        try:
            await self.route(t)
        except _NotAnswered as exc:
            if delivered >= MAX_DELIVER:
                logger.error(
                    "router: utterance {} of device {} given up after {} deliveries: {}",
                    t.utterance_id,
                    t.device_id,
                    delivered,
                    exc,
                )
                await self._settle(msg.term())
                return
            self.redelivered += 1
            logger.info("router: utterance {} not routed yet ({}); later", t.utterance_id, exc)
            await self._settle(msg.nak(delay=min(30.0, 0.5 * 2**delivered)))
            return
        except Exception:
            logger.exception("router: utterance {} failed", t.utterance_id)
            await self._settle(msg.nak(delay=2.0))
            return
        self.routed += 1
        await self._settle(msg.ack())

    @staticmethod
    async def _settle(coro: object) -> None:
        try:
            await coro  # type: ignore[misc]
        except Exception as exc:  # the server redelivers after ack_wait anyway
            logger.debug("router ack/nak failed: {}", exc)

    async def route(self, t: Transcript) -> None:
        settings = self.settings()
        mode = t.mode or ("meeting" if t.meeting_id else None)
        actions = route_transcript(mode, t, meeting_disable_tts=settings.meeting.disable_tts)
        for action in actions:
            await self._apply(t, action, settings)

    async def _to_device(self, device_id: str, frames: list[str]) -> None:
        subject = Subjects.device_out(device_id)
        for frame in frames:
            await self.nc.publish(subject, encode(DeviceOutbound(frame=frame)))

    async def _apply(self, t: Transcript, action: Action, settings: GatewaySettings) -> None:
        timeout = settings.nats.request_timeout_s
        if isinstance(action, ToDevice):
            await self._to_device(t.device_id, [to_frame(action.message)])
        elif isinstance(action, Forward):
            try:
                reply = await request(self.nc, action.subject, t, InboundReply, timeout=timeout)
            except Exception as exc:
                raise _NotAnswered(f"{action.subject}: {exc}") from None
            if reply.retry:
                raise _NotAnswered(f"{action.subject}: retry ({reply.error})")
            await self._to_device(t.device_id, reply.frames)
        elif isinstance(action, SwitchMode):
            command = DeviceCommand(command="set_mode", mode=action.mode, reason="voice")
            await self.nc.publish(Subjects.device_command(t.device_id), encode(command))
        elif isinstance(action, FinalizeMeeting):
            control = MeetingControl(
                device_id=t.device_id,
                session_id=t.session_id,
                gateway_id=t.gateway_id,
                message_id=f"{action.source}:{t.utterance_id}",  # the same on redelivery
                action="finalize",
                source="voice" if action.source == "voice" else "text",
            )
            try:
                answer = await request(
                    self.nc, Subjects.MEETING_CONTROL, control, MeetingControlReply, timeout=timeout
                )
            except Exception as exc:
                raise _NotAnswered(f"meeting control: {exc}") from None
            if answer.retry:
                raise _NotAnswered(f"meeting control: retry ({answer.error})")
            await self._to_device(t.device_id, answer.frames)
