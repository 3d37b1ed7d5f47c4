"""Regression tests for every case in issue 9's "Why" (the WebSocket side), plus keepalive and
bad-audio reporting. Each input used to take a connection or the whole gateway down."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

import httpx
import pytest
from supie_common.contracts import DeviceOutbound, Subjects, device_token, encode
from supie_common.contracts import device as dm
from supie_common.device_client import DeviceClient
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from .test_gateway_protocol import dev_id
from .test_gateway_support import Stack, eventually, stack, strict_frames  # noqa: F401

pytestmark = pytest.mark.usefixtures("strict_frames")


async def refused_status(url: str, **kwargs: object) -> int:
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, **kwargs):  # type: ignore[arg-type]
            pass
    return info.value.response.status_code


async def test_a_4200_character_device_id_is_refused_and_nothing_else_breaks(
    make_gateway,
) -> None:
    gw = await make_gateway(services=["gateway"])
    long_id = "d" * 4200
    assert await refused_status(gw.ws_url, additional_headers={"Device-Id": long_id}) == 400
    assert await refused_status(gw.ws_url + f"?device-id={long_id}") == 400
    assert await refused_status(gw.ws_url, additional_headers={"Client-Id": long_id}) == 400
    assert gw.service.nc.is_connected  # it used to close the NATS connection for good
    async with DeviceClient(gw.ws_url, dev_id()) as dev:
        await dev.hello()
        await dev.send_text("ping")
        await dev.expect("pong", timeout=3)
    async with httpx.AsyncClient() as client:
        health = await client.get(gw.http_url + "/healthz")
    assert health.status_code == 200 and health.json()["ok"] is True


@pytest.mark.parametrize(
    "raw", ["aa%0d%0abb", "aa%0abb", "evil%00id", "id%e2%80%aeright", "x%09y", "x%c2%85y"]
)
async def test_control_characters_in_ids_are_refused(gateway, raw: str) -> None:
    assert await refused_status(gateway.ws_url + f"?device-id={raw}") == 400
    assert await refused_status(gateway.ws_url + f"?device-id=ok&client-id={raw}") == 400


async def test_the_id_limit_is_configurable(make_gateway) -> None:
    gw = await make_gateway(server={"max_device_id_len": 8})
    assert await refused_status(gw.ws_url, additional_headers={"Device-Id": "123456789"}) == 400
    async with DeviceClient(gw.ws_url, "12345678", client_id="c") as dev:
        await dev.hello()


async def test_deep_json_gets_an_error_and_the_connection_stays(gateway) -> None:
    deep = "[" * 2000 + "]" * 2000
    nested = '{"type":"hello","features":' + '{"a":' * 2000 + "1" + "}" * 2000 + "}"
    async with DeviceClient(gateway.ws_url, dev_id()) as dev:
        await dev.hello()
        for frame in (deep, nested):
            await dev.send_text(frame)
            err = await dev.expect("error", timeout=5)
            assert err["code"] == "BAD_JSON" and "server.max_json_depth" in err["message"]
        await dev.send_text("ping")
        await dev.expect("pong", timeout=3)
        assert not dev.closed.is_set()


async def test_deep_json_to_ota_is_400(gateway) -> None:
    async with httpx.AsyncClient() as client:
        resp = await client.post(
            gateway.http_url + "/xiaozhi/ota/", content=("[" * 2000 + "]" * 2000).encode()
        )
        nested = await client.post(
            gateway.http_url + "/supie/ota/",
            content=('{"a":' * 2000 + "1" + "}" * 2000).encode(),
        )
    assert resp.status_code == 400 and "deeper" in resp.json()["error"]
    assert nested.status_code == 400


SURROGATE_MESSAGES = [
    ('{"type":"meeting","phase":"snippet","items":[{"tag":"n","text":"a\\ud800b"}]}', "meeting"),
    (
        '{"type":"workflow","event":"update","tasks":[{"id":"t\\udfff","title":"\\ud800"}]}',
        "workflow",
    ),
    ('{"type":"coding","event":"log","text":"\\ud800 boom"}', "coding"),
    ('{"type":"listen","state":"detect","text":"hi \\ud83d"}', "stt"),
]


@pytest.mark.parametrize(("frame", "reply_type"), SURROGATE_MESSAGES)
async def test_lone_surrogates_are_harmless(gateway, stack: Stack, frame: str, reply_type: str):  # type: ignore[no-untyped-def]
    async with DeviceClient(gateway.ws_url, dev_id()) as dev:
        await dev.hello()
        if reply_type == "meeting":
            await dev.send_json({"type": "mode", "state": "start", "mode": "meeting"})
            await dev.expect("mode", status="ok")
        await dev.send_text(frame)
        reply = await dev.expect(reply_type, timeout=10)
        assert "\ufffd" in json.dumps(reply, ensure_ascii=False) or reply.get("status") == "ok"
        await dev.send_text("ping")
        await dev.expect("pong", timeout=3)
        assert not dev.closed.is_set()


async def test_lookalike_ids_never_receive_each_others_messages(gateway, nc) -> None:
    a_id, b_id = "ӣd", "丽"  # they used to share the subject token "_4e3d"
    assert device_token(a_id) != device_token(b_id)
    sockets = {}
    for device in (a_id, b_id):
        ws = await connect(gateway.ws_url + f"?device-id={quote(device)}")
        await ws.send('{"type":"hello"}')
        assert json.loads(await ws.recv())["type"] == "hello"
        sockets[device] = ws
    await eventually(lambda: {a_id, b_id} <= set(gateway.service.connections), 5)
    for target in (a_id, b_id):
        out = DeviceOutbound.of(dm.Stt(text=f"for {target}"))
        await nc.publish(Subjects.device_out(target), encode(out))
    for device, ws in sockets.items():
        got = []
        try:
            while True:
                got.append(json.loads(await asyncio.wait_for(ws.recv(), 1.0)))
        except TimeoutError:
            pass
        await ws.close()
        assert [m["text"] for m in got if m["type"] == "stt"] == [f"for {device}"]


async def test_an_ordinary_disconnect_logs_one_info_line(gateway) -> None:
    from loguru import logger

    device = dev_id()
    lines: list[tuple[str, str, bool]] = []

    def sink(message) -> None:  # type: ignore[no-untyped-def]
        record = message.record
        if device in record["message"]:
            lines.append((record["level"].name, record["message"], record["exception"] is not None))

    handle = logger.add(sink, level="DEBUG")
    try:
        dev = await DeviceClient(gateway.ws_url, device).connect()
        await dev.hello()
        assert dev.ws is not None
        dev.ws.transport.abort()  # a Wi-Fi drop: no close frame
        await eventually(lambda: any("disconnected" in m for _, m, _ in lines), 5)
        await asyncio.sleep(0.2)
    finally:
        logger.remove(handle)
    gone = [x for x in lines if "disconnected" in x[1]]
    assert len(gone) == 1 and gone[0][0] == "INFO" and not gone[0][2]
    assert "1006" in gone[0][1]
    assert not [x for x in lines if x[0] in ("ERROR", "CRITICAL", "WARNING") or x[2]]


async def test_app_keepalive_reaches_a_quiet_badge(make_gateway) -> None:
    gw = await make_gateway(
        server={"app_keepalive_s": 0.3, "idle_check_interval_s": 0.05, "ping_interval_s": None}
    )
    async with DeviceClient(gw.ws_url, dev_id()) as dev:
        await dev.hello()
        first = await dev.expect("system", timeout=3, event="keepalive")
        await dev.expect("system", timeout=3, event="keepalive")  # and again
        await dev.send_text("ping")  # app-level ping works without WebSocket pings
        await dev.expect("pong", timeout=3)
    assert first == {"type": "system", "event": "keepalive"}


async def test_websocket_pings_can_be_switched_off(make_gateway) -> None:
    gw = await make_gateway(server={"ping_interval_s": None})
    device = dev_id()
    async with DeviceClient(gw.ws_url, device) as dev:
        await dev.hello()
        await asyncio.sleep(0.5)
        ws = gw.service.connections[device].ws
        assert ws.ping_interval is None and ws.latency == 0  # never pinged


async def test_undecodable_audio_gets_one_clear_rate_limited_error(gateway, stack: Stack) -> None:
    device = dev_id()
    async with DeviceClient(gateway.ws_url, device) as dev:
        await dev.hello()
        await dev.send_bytes(b"not opus")
        stream = await eventually(lambda: stack.asr.stream_of(device), 5)
        for _ in range(5):
            await stack.asr.error(stream, "opus decode failed: invalid packet")
        err = await dev.expect("error", timeout=5)
        await asyncio.sleep(0.5)
    assert err["code"] == "BAD_AUDIO" and "Opus" in err["message"]
    assert len([m for m in dev.received if m.get("code") == "BAD_AUDIO"]) == 1


async def test_binary_errors_are_rate_limited(gateway) -> None:
    async with DeviceClient(gateway.ws_url, dev_id()) as dev:
        for _ in range(30):
            await dev.send_bytes(b"\x00" * 10)  # before hello
        await dev.expect("error", timeout=3)
        await dev.hello()
    assert len([m for m in dev.received if m.get("code") == "HELLO_REQUIRED"]) == 1
