"""The gateway speaks the xiaozhi firmware protocol exactly (SPEC §3), with real sockets, a real
nats-server and a real Valkey."""

from __future__ import annotations

import asyncio
import json
import struct
import uuid

import httpx
import numpy as np
import pytest
from supie_common.audio import OpusEncoder
from supie_common.contracts import AudioHeaders, DeviceOutbound, Subjects, encode
from supie_common.device_client import DeviceClient, firmware_hello
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from .test_gateway_support import Stack, stack, strict_frames  # noqa: F401 - fixtures

pytestmark = pytest.mark.usefixtures("strict_frames")


def dev_id() -> str:
    raw = uuid.uuid4().hex[:12]
    return ":".join(raw[i : i + 2] for i in range(0, 12, 2))


def opus_packets(n: int = 5) -> list[bytes]:
    """Real Opus packets of a tone."""
    enc = OpusEncoder(frame_ms=60)
    tone = (np.sin(np.arange(960 * n) / 16000 * 2 * np.pi * 300) * 6000).astype(np.int16)
    return enc.encode_all(tone)


AUDIO_KEYS = {"format", "sample_rate", "channels", "frame_duration"}


def assert_server_hello(msg: dict) -> None:
    assert msg["type"] == "hello"
    assert msg["transport"] == "websocket"
    assert isinstance(msg["session_id"], str) and msg["session_id"]
    assert set(msg["audio_params"]) >= AUDIO_KEYS


HELLO_VARIANTS = {
    "firmware": firmware_hello(),
    "firmware-aec-glyph": {
        **firmware_hello(),
        "features": {"mcp": True, "aec": True, "glyph_push": True},
    },
    "py-xiaozhi-20ms": firmware_hello(frame_ms=20),
    "xiaozhi-sdk": {**firmware_hello(), "features": {"mcp": True, "consistent_sample_rate": False}},
    "browser": {
        "type": "hello",
        "device_id": "web",
        "device_name": "Browser",
        "device_mac": "aa:bb",
        "token": "x",
        "features": {"mcp": True, "emoji": True},
    },
    "minimal": {"type": "hello"},
}


@pytest.mark.parametrize("variant", sorted(HELLO_VARIANTS))
async def test_hello_variants_get_a_complete_reply(gateway, variant: str) -> None:
    async with DeviceClient(gateway.ws_url, dev_id()) as dev:
        reply = await dev.hello(HELLO_VARIANTS[variant], timeout=10)
    assert_server_hello(reply)
    sent = HELLO_VARIANTS[variant].get("audio_params", {})
    assert reply["audio_params"]["frame_duration"] == sent.get("frame_duration", 60)
    assert reply["audio_params"]["format"] == "opus"


async def test_repeated_hello_keeps_the_session(gateway) -> None:
    async with DeviceClient(gateway.ws_url, dev_id()) as dev:
        first = await dev.hello()
        second = await dev.hello()
    assert first["session_id"] == second["session_id"]


async def test_query_parameters_and_id_normalisation(gateway, redis) -> None:
    raw = dev_id()
    url = f"{gateway.ws_url}?device-id=%20%22{raw.upper()}%22%20&client-id=c1"
    async with connect(url) as ws:
        await ws.send(json.dumps({"type": "hello"}))
        assert_server_hello(json.loads(await ws.recv()))
        presence = await redis.hgetall(f"supie:presence:{raw}")
    assert presence["gateway"] == gateway.service.instance_id


@pytest.mark.parametrize("path", ["/supie/v1/", "/xiaozhi/v1/", "/anything"])
async def test_any_path_is_accepted(gateway, path: str) -> None:
    url = gateway.ws_url.replace("/supie/v1/", path)
    async with DeviceClient(url, dev_id()) as dev:
        assert_server_hello(await dev.hello())


@pytest.mark.parametrize("text", ["ping", "keepalive", '{"type":"ping"}', '{"type":"keepalive"}'])
async def test_ping_and_keepalive_get_pong(gateway, text: str) -> None:
    async with DeviceClient(gateway.ws_url, dev_id()) as dev:
        await dev.hello()
        await dev.send_text(text)
        pong = await dev.expect("pong", timeout=2)
    assert isinstance(pong["timestamp"], int)


async def test_websocket_pings_are_sent(make_gateway) -> None:
    gw = await make_gateway(server={"ping_interval_s": 0.2})
    device = dev_id()
    async with DeviceClient(gw.ws_url, device) as dev:
        await dev.hello()
        await asyncio.sleep(0.7)
        server_side = gw.service.connections[device].ws
        assert server_side.latency > 0  # a keepalive ping was answered


async def test_legacy_config_update_is_a_noop(gateway) -> None:
    async with DeviceClient(gateway.ws_url, dev_id()) as dev:
        await dev.hello()
        await dev.send_json({"type": "config_update", "config": {"a": 1}})
        assert await dev.expect("config_update") == {
            "type": "config_update",
            "status": "ok",
            "noop": True,
        }


async def test_mode_acks_idempotent_start_and_invalid(gateway, stack: Stack) -> None:
    async with DeviceClient(gateway.ws_url, dev_id()) as dev:
        await dev.hello()
        acks = []
        for _ in range(2):  # a restart would be a new meeting with a new sessionId
            await dev.send_json({"type": "mode", "state": "start", "mode": "meeting"})
            acks.append(await dev.expect("mode"))
        assert acks[0] == acks[1]
        assert acks[0]["status"] == "ok" and acks[0]["sessionId"]
        assert len(stack.meeting.active) == 1
        for mode in ("coding", "coding"):
            await dev.send_json({"type": "mode", "state": "start", "mode": mode})
            assert await dev.expect("mode", state="start") == {
                "type": "mode",
                "status": "ok",
                "state": "start",
                "mode": mode,
            }
        await dev.send_json({"type": "mode", "state": "end", "mode": "coding"})
        assert (await dev.expect("mode"))["state"] == "end"
        await dev.send_json({"type": "mode", "state": "start", "mode": "party"})
        err = await dev.expect("mode")
        assert err["status"] == "error" and err["code"] == "SCHEMA_INVALID"
        assert err["field"] == "mode" and "meeting" in err["message"]


async def test_working_mode_start_asks_the_badge_to_listen(gateway) -> None:
    async with DeviceClient(gateway.ws_url, dev_id()) as dev:
        await dev.hello()
        await dev.send_json({"type": "mode", "state": "start", "mode": "working"})
        await dev.expect("mode", status="ok")
        assert await dev.expect("listen") == {"type": "listen", "state": "start", "mode": "manual"}


BAD_INPUTS = [
    ("text", "{not json", "BAD_JSON"),
    ("text", "[1, 2]", "BAD_JSON"),
    ("text", '{"no_type": 1}', "SCHEMA_INVALID"),
    ("text", '{"type": "teleport"}', "UNKNOWN_TYPE"),
    ("text", '{"type": "listen", "state": "jump"}', "SCHEMA_INVALID"),
    ("text", "x" * 5000, "FRAME_TOO_LARGE"),
    ("binary", b"\x00" * 5000, "FRAME_TOO_LARGE"),
]


@pytest.mark.parametrize(("kind", "payload", "code"), BAD_INPUTS)
async def test_bad_input_gets_a_clear_error_and_the_connection_stays(
    make_gateway, kind, payload, code
) -> None:
    gw = await make_gateway(server={"max_frame_bytes": 4096})
    async with DeviceClient(gw.ws_url, dev_id()) as dev:
        await dev.hello()
        if kind == "text":
            await dev.send_text(payload)
        else:
            await dev.send_bytes(payload)
        err = await dev.expect("error", timeout=3)
        assert err["code"] == code and err["message"]
        await dev.send_text("ping")
        await dev.expect("pong", timeout=3)


async def test_binary_before_hello_is_refused_clearly(gateway) -> None:
    async with DeviceClient(gateway.ws_url, dev_id()) as dev:
        await dev.send_bytes(opus_packets(1)[0])
        err = await dev.expect("error", timeout=3)
        assert err["code"] == "HELLO_REQUIRED" and "hello" in err["message"]
        assert_server_hello(await dev.hello())


@pytest.mark.parametrize("bad", [b"\x00\x02", struct.pack(">HHIII", 2, 0, 0, 0, 99) + b"ab"])
async def test_malformed_v2_frame(gateway, bad: bytes) -> None:
    async with DeviceClient(gateway.ws_url, dev_id(), protocol_version=2) as dev:
        await dev.hello()
        await dev.send_bytes(bad)
        err = await dev.expect("error", timeout=3)
        assert err["code"] == "BAD_FRAME" and "v2" in err["message"]


# Golden frames written from docs/protocol.md (not from the shared codec): payload b"OPUS",
# timestamp 0x01020304 where the layout has one.
PAYLOAD = b"OPUS"
GOLDEN = {
    1: PAYLOAD,
    # v2: u16 version=2, u16 type=0 (audio), u32 reserved, u32 timestamp_ms, u32 payload_size
    2: bytes.fromhex("00020000000000000102030400000004") + PAYLOAD,
    # v3: u8 type=0, u8 reserved, u16 payload_size
    3: bytes.fromhex("00000004") + PAYLOAD,
}


@pytest.mark.parametrize("version", [1, 2, 3])
async def test_uplink_golden_frames_reach_the_bus_with_headers(
    gateway, nc, asr_owner, version: int
) -> None:
    device = dev_id()
    got: list = []

    async def collect(msg) -> None:  # type: ignore[no-untyped-def]
        if msg.headers.get(AudioHeaders.DEVICE) == device:
            got.append(msg)

    sub = await nc.subscribe("supie.v1.asr.stream.*.audio", cb=collect)
    async with DeviceClient(gateway.ws_url, device, protocol_version=version) as dev:
        await dev.hello()
        await dev.listen("start", "auto")
        for _ in range(3):
            await dev.send_bytes(GOLDEN[version])
        for _ in range(100):
            if len(got) >= 3:
                break
            await asyncio.sleep(0.05)
    await sub.unsubscribe()
    assert [m.data for m in got] == [PAYLOAD] * 3  # raw bytes, header stripped
    assert [int(m.headers[AudioHeaders.SEQ]) for m in got] == [0, 1, 2]
    assert {m.headers[AudioHeaders.CODEC] for m in got} == {"opus"}


@pytest.mark.parametrize("version", [2, 3])
async def test_json_inside_a_binary_frame_is_a_text_message(gateway, version: int) -> None:
    ping = b'{"type":"ping"}'
    frame = {
        2: bytes.fromhex("000200010000000000000000") + struct.pack(">I", len(ping)),
        3: bytes.fromhex("0100") + struct.pack(">H", len(ping)),
    }[version] + ping
    async with DeviceClient(gateway.ws_url, dev_id(), protocol_version=version) as dev:
        await dev.hello()
        await dev.send_bytes(frame)
        await dev.expect("pong", timeout=3)


# Downlink golden headers (the payload follows): v2 has timestamp 0 from the server.
GOLDEN_DOWN = {
    1: b"",
    2: bytes.fromhex("00020000000000000000000000000004"),
    3: bytes.fromhex("00000004"),
}


@pytest.mark.parametrize("version", [1, 2, 3])
async def test_downlink_audio_is_framed_per_protocol_version(gateway, nc, version: int) -> None:
    device = dev_id()
    headers = {"Device-Id": device, "Protocol-Version": str(version)}
    async with connect(gateway.ws_url, additional_headers=headers) as ws:
        await ws.send(json.dumps({"type": "hello"}))
        json.loads(await ws.recv())
        await nc.publish(Subjects.device_audio_out(device), PAYLOAD)
        while True:
            data = await asyncio.wait_for(ws.recv(), 5)
            if isinstance(data, bytes):
                break
    assert data == GOLDEN_DOWN[version] + PAYLOAD


async def test_outbound_subject_reaches_the_socket(gateway, nc) -> None:
    device = dev_id()
    async with DeviceClient(gateway.ws_url, device) as dev:
        await dev.hello()
        await nc.publish(
            Subjects.device_out(device),
            encode(DeviceOutbound(message={"type": "stt", "text": "hi"})),
        )
        assert (await dev.expect("stt", timeout=3))["text"] == "hi"


async def test_abort_stops_tts(gateway) -> None:
    async with DeviceClient(gateway.ws_url, dev_id()) as dev:
        await dev.hello()
        await dev.send_json({"type": "abort", "reason": "wake_word_detected"})
        assert (await dev.expect("tts", timeout=3))["state"] == "stop"


async def test_wake_word_detect_greets_and_typed_text_is_echoed(gateway) -> None:
    async with DeviceClient(gateway.ws_url, dev_id()) as dev:
        await dev.hello()
        await dev.listen("detect", text="你好小智")
        await dev.expect("tts", timeout=3, state="sentence_start")
        await dev.listen("detect", text="what is on my list")
        assert (await dev.expect("stt", timeout=3))["text"] == "what is on my list"


async def test_plain_http_on_the_websocket_port(gateway) -> None:
    url = gateway.ws_url.replace("ws://", "http://")
    async with httpx.AsyncClient() as client:
        resp = await client.get(url)
    assert resp.status_code == 200 and "Server is running" in resp.text


async def test_unsupported_protocol_version_is_refused(gateway) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with connect(
            gateway.ws_url, additional_headers={"Protocol-Version": "9", "Device-Id": dev_id()}
        ):
            pass
    assert info.value.response.status_code == 400


async def test_a_malformed_bus_message_disturbs_nothing(gateway, nc) -> None:
    device = dev_id()
    async with DeviceClient(gateway.ws_url, device) as dev:
        await dev.hello()
        await nc.publish(Subjects.device_out(device), b'{"message": "not an object"}')
        await nc.publish(Subjects.device_command(device), b"garbage")
        await nc.publish(Subjects.device_takeover(device), b"{}")
        await nc.publish(
            Subjects.device_out(device),
            encode(DeviceOutbound(message={"type": "stt", "text": "still here"})),
        )
        assert (await dev.expect("stt", timeout=3))["text"] == "still here"
        await dev.send_text("ping")
        await dev.expect("pong", timeout=3)


async def test_a_service_can_switch_the_device_mode(gateway, nc) -> None:
    from supie_common.contracts import DeviceCommand

    device = dev_id()
    async with DeviceClient(gateway.ws_url, device) as dev:
        await dev.hello()
        await nc.publish(
            Subjects.device_command(device),
            encode(DeviceCommand(command="set_mode", mode="working")),
        )
        ack = await dev.expect("mode", timeout=3)
        assert ack == {"type": "mode", "status": "ok", "state": "start", "mode": "working"}
        await dev.expect("listen", timeout=3)
