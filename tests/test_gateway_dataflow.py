"""The gateway side of the durable data path (docs/dataflow.md §2-5), against stand-in services
over a real nats-server (JetStream on) and Valkey: service messages handed over in order and
retried until accepted, the meeting lifecycle told by the meeting service, finals routed from
JetStream by any replica, receipts and presence events."""

from __future__ import annotations

import asyncio

import pytest
from supie_common.contracts import (
    DeviceCommand,
    DeviceConnected,
    DeviceDelivered,
    DeviceHello,
    DeviceOutbound,
    Subjects,
    decode,
    encode,
)
from supie_common.contracts import device as dm
from supie_common.device_client import DeviceClient

from .test_gateway_protocol import dev_id
from .test_gateway_support import Stack, eventually, stack, strict_frames  # noqa: F401

pytestmark = pytest.mark.usefixtures("strict_frames")


def snippet(text: str) -> dict[str, object]:
    return {"type": "meeting", "phase": "snippet", "items": [{"tag": "note", "text": text}]}


async def start_meeting(dev: DeviceClient) -> str:
    await dev.send_json({"type": "mode", "state": "start", "mode": "meeting"})
    ack = await dev.expect("mode", status="ok", state="start")
    return str(ack["sessionId"])


# -- service messages ---------------------------------------------------------------------------


async def test_service_messages_are_handed_over_in_order(gateway, stack: Stack) -> None:
    async with DeviceClient(gateway.ws_url, dev_id()) as dev:
        await dev.hello()
        meeting = await start_meeting(dev)
        for i in range(20):
            await dev.send_json(snippet(f"note {i}"))
        await dev.send_json({"type": "meeting", "phase": "finalize"})
        acks = [await dev.expect("meeting", timeout=10, phase="snippet") for _ in range(20)]
        final = await dev.expect("meeting", timeout=10, phase="finalize")
    assert all(a["sessionId"] == meeting and a["accepted"] == 1 for a in acks)
    assert stack.meeting.snippets[meeting] == [f"note {i}" for i in range(20)]
    assert final["sessionId"] == meeting
    kinds = [type(i.message).__name__ for i in stack.meeting.inbound]
    assert kinds == ["MeetingSnippet"] * 20 + ["MeetingFinalize"]  # the finalize came last


async def test_a_message_is_retried_with_the_same_id_until_accepted(gateway, stack: Stack) -> None:
    stack.workflow.retry_next = 3  # "not persisted, ask again" three times
    async with DeviceClient(gateway.ws_url, dev_id()) as dev:
        await dev.hello()
        await dev.send_json({"type": "workflow", "event": "update", "tasks": [{"id": "t1"}]})
        ack = await dev.expect("workflow", timeout=10)
    assert ack == {"type": "workflow", "status": "ok", "event": "update"}
    ids = {i.message_id for i in stack.workflow.inbound}
    assert len(stack.workflow.inbound) == 4 and len(ids) == 1
    assert [i.attempt for i in stack.workflow.inbound] == [1, 2, 3, 4]


async def test_a_message_no_service_accepts_gets_unavailable(make_gateway) -> None:
    gw = await make_gateway(server={"accept_timeout_s": 1.0}, nats={"request_timeout_s": 0.3})
    async with DeviceClient(gw.ws_url, dev_id()) as dev:
        await dev.hello()
        await dev.send_json({"type": "coding", "event": "log", "text": "boom"})
        err = await dev.expect("coding", timeout=10)
        await dev.send_text("ping")
        await dev.expect("pong", timeout=3)
    assert err["status"] == "error" and err["code"] == "UNAVAILABLE" and err["event"] == "log"


async def test_a_service_that_comes_back_in_time_gets_the_message(make_gateway, nc) -> None:
    gw = await make_gateway(server={"accept_timeout_s": 20.0}, nats={"request_timeout_s": 0.5})
    async with DeviceClient(gw.ws_url, dev_id()) as dev:
        await dev.hello()
        await dev.send_json({"type": "coding", "event": "start"})
        await asyncio.sleep(1.0)  # nobody there yet: the gateway keeps trying
        stack = await Stack(nc).start()
        try:
            ack = await dev.expect("coding", timeout=10)
        finally:
            await stack.stop()
    assert ack == {"type": "coding", "status": "ok", "event": "start"}


async def test_meeting_messages_without_a_meeting_create_nothing(gateway, stack: Stack) -> None:
    async with DeviceClient(gateway.ws_url, dev_id()) as dev:
        await dev.hello()
        await dev.send_json(snippet("hello"))
        err = await dev.expect("meeting", timeout=5)
    assert err["code"] == "NO_ACTIVE_MEETING" and stack.meeting.active == {}


# -- meeting lifecycle --------------------------------------------------------------------------


async def test_meeting_start_end_and_a_fresh_stream_per_meeting(gateway, stack: Stack) -> None:
    device = dev_id()
    async with DeviceClient(gateway.ws_url, device) as dev:
        await dev.hello()
        first = await start_meeting(dev)
        await eventually(lambda: stack.asr.stream_of(device), 5)
        stream1 = stack.asr.stream_of(device)
        assert stream1 is not None
        req = stack.asr.requests[stream1]
        assert req.mode == "meeting" and req.meeting_id == first and req.language == "en"
        await dev.send_json({"type": "mode", "state": "end", "mode": "meeting"})
        assert (await dev.expect("mode", state="end"))["status"] == "ok"
        assert (await dev.expect("meeting", phase="finalize"))["sessionId"] == first
        second = await start_meeting(dev)
        await eventually(lambda: stack.asr.stream_of(device) != stream1, 5)
    assert first != second
    assert [c.action for c in stack.meeting.controls if c.action != "state"] == [
        "start",
        "end",
        "start",
    ]
    assert stack.asr.requests[stack.asr.stream_of(device) or ""].meeting_id == second
    assert any(c.action == "close" for c in stack.asr.controls[stream1])


async def test_finalizing_meeting_drops_audio_and_closes_its_stream(gateway, stack: Stack) -> None:
    device = dev_id()
    async with DeviceClient(gateway.ws_url, device) as dev:
        await dev.hello()
        await start_meeting(dev)
        stream = await eventually(lambda: stack.asr.stream_of(device), 5)
        await dev.send_bytes(b"frame-1")
        await eventually(lambda: stack.asr.frames[stream], 5)
        await dev.send_json({"type": "meeting", "phase": "finalize"})  # the service says so
        await dev.expect("meeting", timeout=5, phase="finalize")
        await eventually(lambda: any(c.action == "close" for c in stack.asr.controls[stream]), 5)
        for _ in range(5):
            await dev.send_bytes(b"after finalize")
        await dev.send_text("ping")
        await dev.expect("pong", timeout=3)
        await asyncio.sleep(0.3)
    assert b"after finalize" not in stack.asr.payloads[stream]
    assert stack.asr.stream_of(device) == stream  # no new stream was opened for it


async def test_meeting_state_told_by_the_service_is_obeyed(gateway, nc, stack: Stack) -> None:
    """Finalized elsewhere (HTTP API, console, abandoned): the gateway drops the audio."""
    device = dev_id()
    async with DeviceClient(gateway.ws_url, device) as dev:
        await dev.hello()
        meeting = await start_meeting(dev)
        stream = await eventually(lambda: stack.asr.stream_of(device), 5)
        command = DeviceCommand(command="meeting_state", meeting_id=meeting, status="finalizing")
        await nc.publish(Subjects.device_command(device), encode(command))
        await eventually(lambda: any(c.action == "close" for c in stack.asr.controls[stream]), 5)
        session = gateway.service.connections[device].session
        assert session.meeting_status == "finalizing" and session.drops_audio


async def test_reconnect_resumes_the_active_meeting_on_any_replica(
    make_gateway, stack: Stack
) -> None:
    a, b = await make_gateway(), await make_gateway()
    device = dev_id()
    async with DeviceClient(a.ws_url, device) as dev:
        await dev.hello()
        meeting = await start_meeting(dev)
    async with DeviceClient(b.ws_url, device) as dev:
        await dev.hello()
        push = await dev.expect("meeting", timeout=5, phase="transcript")
        assert push["resumed"] is True and push["sessionId"] == meeting
        await dev.send_bytes(b"audio")  # a stream opens for the resumed meeting
        stream = await eventually(lambda: stack.asr.stream_of(device), 5)
    assert stack.asr.requests[stream].meeting_id == meeting
    assert stack.asr.requests[stream].mode == "meeting"


async def test_mode_start_meeting_without_a_meeting_service_is_unavailable(make_gateway) -> None:
    gw = await make_gateway(server={"accept_timeout_s": 0.8}, nats={"request_timeout_s": 0.2})
    async with DeviceClient(gw.ws_url, dev_id()) as dev:
        await dev.hello()
        await dev.send_json({"type": "mode", "state": "start", "mode": "meeting"})
        err = await dev.expect("mode", timeout=10)
    assert err["status"] == "error" and err["code"] == "UNAVAILABLE"


async def test_no_redis_needed_to_forward_a_finalize(nats_url, tmp_path, stack: Stack) -> None:
    from supie_common.settings import load_settings
    from supie_gateway import GatewayService, GatewaySettings

    settings = load_settings(
        GatewaySettings,
        tmp_path / "none.yaml",
        nats={"url": nats_url},
        redis={"url": "redis://127.0.0.1:1/0"},  # nobody listens there
        server={"ip": "127.0.0.1", "ws_port": 0, "http_port": 0},
        data_dir=tmp_path,
    )
    svc = GatewayService(settings)
    await svc.start()
    try:
        url = f"ws://127.0.0.1:{svc.ws_port}/supie/v1/"
        async with DeviceClient(url, dev_id()) as dev:
            await dev.hello()
            await dev.send_json({"type": "mode", "state": "start", "mode": "working"})
            await dev.expect("mode", status="ok")  # its Redis save fails, the socket stays
            meeting = await start_meeting(dev)
            await dev.send_json({"type": "meeting", "phase": "finalize"})
            ack = await dev.expect("meeting", timeout=10, phase="finalize")
            await dev.send_text("ping")
            await dev.expect("pong", timeout=3)
            assert not dev.closed.is_set()
        assert ack["sessionId"] == meeting
    finally:
        await svc.stop()


# -- transcripts: JetStream and the router ------------------------------------------------------


async def test_meeting_finals_are_routed_to_the_meeting_service(gateway, stack: Stack) -> None:
    device = dev_id()
    async with DeviceClient(gateway.ws_url, device) as dev:
        await dev.hello()
        meeting = await start_meeting(dev)
        await dev.send_bytes(b"audio")
        stream = await eventually(lambda: stack.asr.stream_of(device), 5)
        await stack.asr.final(stream, "we ship on friday", start_seq=0)
        await dev.expect("audio", timeout=10, event="transcription")
        await eventually(lambda: stack.meeting.segments[meeting], 10)
    assert stack.meeting.segments[meeting] == ["we ship on friday"]


async def test_voice_finalize_announces_then_finalizes(gateway, stack: Stack) -> None:
    device = dev_id()
    async with DeviceClient(gateway.ws_url, device) as dev:
        await dev.hello()
        meeting = await start_meeting(dev)
        await dev.send_bytes(b"audio")
        stream = await eventually(lambda: stack.asr.stream_of(device), 5)
        await stack.asr.final(stream, "好的，结束会议", start_seq=5)
        notice = await dev.expect("meeting", timeout=10, event="command")
        ack = await dev.expect("meeting", timeout=10, phase="finalize")
    assert notice["intent"] == "finalize" and notice["sessionId"] == meeting
    assert ack["sessionId"] == meeting
    voice = [c for c in stack.meeting.controls if c.action == "finalize"]
    assert [c.source for c in voice] == ["voice"] and voice[0].message_id == f"voice:{stream}:5"
    idx_notice = next(i for i, m in enumerate(dev.received) if m.get("event") == "command")
    idx_ack = next(i for i, m in enumerate(dev.received) if m.get("phase") == "finalize")
    assert idx_notice < idx_ack


async def test_a_final_is_routed_even_when_its_gateway_is_gone(make_gateway, stack: Stack) -> None:
    """Routing depends on the transcript, not on the socket: the badge's gateway dies, the asr
    publishes the final of the utterance in progress, another replica routes it."""
    a, b = await make_gateway(), await make_gateway()
    device = dev_id()
    dev = await DeviceClient(a.ws_url, device).connect()
    await dev.hello()
    meeting = await start_meeting(dev)
    await dev.send_bytes(b"audio")
    stream = await eventually(lambda: stack.asr.stream_of(device), 5)
    await a.service.stop()
    await stack.asr.final(stream, "the last words", start_seq=3)
    await eventually(lambda: stack.meeting.segments[meeting], 15, "routed by replica b")
    assert stack.meeting.segments[meeting] == ["the last words"]
    assert b.service.router is not None and b.service.router.routed >= 1
    await dev.close()


async def test_an_unanswered_final_is_redelivered_until_stored(gateway, stack: Stack) -> None:
    device = dev_id()
    stack.meeting.retry_next = 0
    async with DeviceClient(gateway.ws_url, device) as dev:
        await dev.hello()
        meeting = await start_meeting(dev)
        await dev.send_bytes(b"audio")
        stream = await eventually(lambda: stack.asr.stream_of(device), 5)
        stack.meeting.retry_next = 2  # "not persisted" twice
        await stack.asr.final(stream, "say it again", start_seq=7)
        await eventually(lambda: stack.meeting.segments[meeting], 20)
    assert stack.meeting.segments[meeting] == ["say it again"]
    assert len(stack.meeting.transcripts) == 3
    assert {t.utterance_id for t in stack.meeting.transcripts} == {f"{stream}:7"}


async def test_coding_and_idle_finals_take_their_routes(gateway, stack: Stack) -> None:
    device = dev_id()
    async with DeviceClient(gateway.ws_url, device) as dev:
        await dev.hello()
        await dev.send_bytes(b"audio")
        stream = await eventually(lambda: stack.asr.stream_of(device), 5)
        await stack.asr.final(stream, "hello there", start_seq=1)
        assert (await dev.expect("stt", timeout=10))["text"] == "hello there"
        await dev.send_json({"type": "mode", "state": "start", "mode": "coding"})
        await dev.expect("mode", status="ok")
        await eventually(lambda: stack.asr.requests[stream].mode == "coding", 5, "route control")
        await stack.asr.final(stream, "why did it fail", start_seq=2)
        await eventually(lambda: stack.coding.texts, 10)
    assert [(t.text, t.mode) for t in stack.coding.texts] == [("why did it fail", "coding")]


async def test_partials_are_shown_per_connection(gateway, stack: Stack) -> None:
    device = dev_id()
    async with DeviceClient(gateway.ws_url, device) as dev:
        await dev.hello()
        await dev.send_bytes(b"audio")
        stream = await eventually(lambda: stack.asr.stream_of(device), 5)
        await stack.asr.partial(stream, "hel")
        stt = await dev.expect("stt", timeout=5)
    assert stt == {"type": "stt", "text": "hel", "session_id": dev.session_id, "partial": True}


async def test_typed_text_in_a_meeting_takes_the_same_path(gateway, stack: Stack) -> None:
    async with DeviceClient(gateway.ws_url, dev_id()) as dev:
        await dev.hello()
        meeting = await start_meeting(dev)
        await dev.listen("detect", text="a typed note")
        await eventually(lambda: stack.meeting.segments[meeting], 10)
    t = stack.meeting.transcripts[0]
    assert (t.text, t.source, t.mode, t.meeting_id) == ("a typed note", "text", "meeting", meeting)


# -- receipts and presence ----------------------------------------------------------------------


async def test_receipts_hello_and_connect_events(gateway, nc) -> None:
    device = dev_id()
    events: dict[str, list[bytes]] = {"delivered": [], "hello": [], "connected": []}

    async def on(msg) -> None:  # type: ignore[no-untyped-def]
        events[msg.subject.rsplit(".", 1)[-1]].append(msg.data)

    subs = [
        await nc.subscribe(s, cb=on)
        for s in (Subjects.DEVICE_DELIVERED, Subjects.DEVICE_HELLO, Subjects.DEVICE_CONNECTED)
    ]
    async with DeviceClient(gateway.ws_url, device) as dev:
        await dev.hello()
        await dev.hello()
        summary = dm.Stt(text="your summary")
        await nc.publish(
            Subjects.device_out(device), encode(DeviceOutbound.of(summary, receipt="r-1"))
        )
        await dev.expect("stt", timeout=5)
        await eventually(lambda: events["delivered"], 5)
    for sub in subs:
        await sub.unsubscribe()
    delivered = [decode(DeviceDelivered, d) for d in events["delivered"]]
    assert [(d.receipt, d.device_id) for d in delivered] == [("r-1", device)]
    hellos = [decode(DeviceHello, d) for d in events["hello"] if device.encode() in d]
    assert len(hellos) == 2 and hellos[0].group_key == device[:8]
    connected = [decode(DeviceConnected, d) for d in events["connected"] if device.encode() in d]
    assert [c.group_key for c in connected] == [device[:8]]


async def test_group_key_follows_the_workflow_config(make_gateway, nc) -> None:
    device = dev_id()
    gw = await make_gateway(workflow={"device_groups": {device: "team-x"}})
    got: list[DeviceHello] = []

    async def on(msg) -> None:  # type: ignore[no-untyped-def]
        got.append(decode(DeviceHello, msg.data))

    sub = await nc.subscribe(Subjects.DEVICE_HELLO, cb=on)
    async with DeviceClient(gw.ws_url, device) as dev:
        await dev.hello()
        await eventually(lambda: [h for h in got if h.device_id == device], 5)
    await sub.unsubscribe()
    assert [h.group_key for h in got if h.device_id == device] == ["team-x"]


async def test_streams_open_in_the_language_of_their_device(make_gateway, stack: Stack) -> None:
    """asr.device_languages (exact id, else the longest prefix) beats asr.language."""
    gateway = await make_gateway(
        asr={"language": "en", "device_languages": {"zz:": "zh", "zz:01:": "auto"}}
    )
    devices = {"zz:00:00:00:00:01": "zh", "zz:01:00:00:00:02": "auto", dev_id(): "en"}
    for device, language in devices.items():
        async with DeviceClient(gateway.ws_url, device) as dev:
            await dev.hello()
            await dev.listen("start", mode="auto")
            stream = await eventually(lambda d=device: stack.asr.stream_of(d), what=device)
            assert stack.asr.requests[stream].language == language, device
