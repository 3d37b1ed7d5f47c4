"""The gateway's ASR link (docs/dataflow.md §4): replay from the owner's ``committed_seq`` (not
from "received"), listen boundaries kept with their ``at_seq`` and replayed in order, boundaries
sent while the stream has no owner kept, routing context updates."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from nats.aio.client import Client as NATS
from supie_common.contracts import AsrOpenRequest, Transcript
from supie_gateway.asr_link import AsrStream

from .test_gateway_support import StandInAsr, eventually


def request(**fields: object) -> AsrOpenRequest:
    return AsrOpenRequest(
        device_id=f"dev-{uuid.uuid4().hex[:6]}",
        session_id=uuid.uuid4().hex,
        gateway_id="gw",
        **fields,  # type: ignore[arg-type]
    )


async def _ignore(t: Transcript) -> None:
    return None


async def test_failover_replays_from_committed_not_received(nc: NATS) -> None:
    first = await StandInAsr(nc, "asr-1").start()
    first.hold_commit = True  # received everything, committed (transcribed) only up to 4
    stream = AsrStream(nc, request(), _ignore, heartbeat_timeout_s=0.6)
    await stream.open()
    try:
        await eventually(lambda: stream.owner == "asr-1", 5)
        sid = stream.stream_id
        first.committed[sid] = 4
        for i in range(10):
            if i == 6:
                await stream.control("listen_stop")
            await stream.send_audio(f"f{i}".encode())
        await eventually(lambda: len(first.frames[sid]) == 10, 5)
        await eventually(lambda: stream.committed == 4, 5)
        await first.stop()  # dies mid-utterance
        second = await StandInAsr(nc, "asr-2").start()
        try:
            await eventually(lambda: stream.owner == "asr-2", 10, "re-opened elsewhere")
            await eventually(lambda: len(second.frames[sid]) == 6, 5)
            assert second.requests[sid].resume_seq == 4
            assert second.frames[sid] == list(range(4, 10))
            assert second.payloads[sid] == [f"f{i}".encode() for i in range(4, 10)]
            stops = [c for c in second.controls[sid] if c.action == "listen_stop"]
            assert [c.at_seq for c in stops] == [6]  # the boundary, where it fell
            assert stream.reopens == 1
        finally:
            await second.stop()
    finally:
        await stream.close()


async def test_boundaries_sent_while_homeless_are_kept_in_order(nc: NATS) -> None:
    stream = AsrStream(nc, request(listen_mode="manual"), _ignore, heartbeat_timeout_s=0.6)
    await stream.open()  # nobody owns it yet
    try:
        await stream.control("listen_start", listen_mode="manual")
        await stream.send_audio(b"a")
        await stream.send_audio(b"b")
        await stream.control("listen_stop")
        await stream.control("listen_start", listen_mode="auto")
        await stream.send_audio(b"c")
        asr = await StandInAsr(nc, "late").start()
        try:
            await eventually(lambda: stream.owner == "late", 10)
            sid = stream.stream_id
            await eventually(lambda: len(asr.frames[sid]) == 3, 5)
            controls = [(c.action, c.at_seq) for c in asr.controls[sid]]
            assert controls == [("listen_start", 0), ("listen_stop", 2), ("listen_start", 2)]
            assert asr.requests[sid].listen_mode == "auto"  # the mode the badge is in now
        finally:
            await asr.stop()
    finally:
        await stream.close()


async def test_route_updates_the_context_of_later_transcripts(nc: NATS) -> None:
    asr = await StandInAsr(nc, "r").start()
    stream = AsrStream(nc, request(mode="coding"), _ignore)
    await stream.open()
    try:
        await eventually(lambda: stream.owner == "r", 5)
        await stream.route("meeting", "m-1")
        sid = stream.stream_id
        await eventually(lambda: asr.requests[sid].meeting_id == "m-1", 5)
        assert asr.requests[sid].mode == "meeting"
        assert stream.req.mode == "meeting"  # a re-open carries it too
    finally:
        await stream.close()
        await asr.stop()


async def test_a_route_during_the_open_reaches_the_owner(nc: NATS) -> None:
    """A badge that reconnects opens its stream with listen start while its meeting is being
    resumed: the route() that lands while the open is in flight must reach the new owner."""
    asr = StandInAsr(nc, "slow")
    answer = asr._on_open

    async def slow_open(msg: Any) -> None:
        await asyncio.sleep(0.5)
        await answer(msg)

    asr._on_open = slow_open  # type: ignore[method-assign]
    await asr.start()
    stream = AsrStream(nc, request(mode=None), _ignore, open_timeout_s=5.0)
    opening = asyncio.create_task(stream.open())
    try:
        await asyncio.sleep(0.2)
        await stream.route("meeting", "m-2")
        await opening
        sid = stream.stream_id
        await eventually(lambda: asr.requests[sid].meeting_id == "m-2", 5, "the route")
        assert asr.requests[sid].mode == "meeting"
    finally:
        await opening
        await stream.close()
        await asr.stop()


async def test_committed_frames_are_released(nc: NATS) -> None:
    asr = await StandInAsr(nc, "c").start()
    stream = AsrStream(nc, request(), _ignore)
    await stream.open()
    try:
        await eventually(lambda: stream.owner == "c", 5)
        for i in range(20):
            await stream.send_audio(bytes([i]))
        await eventually(lambda: stream.committed == 20, 5)
        assert len(stream._frames) == 0  # noqa: SLF001 - the buffer is what this is about
    finally:
        await stream.close()
        await asr.stop()
