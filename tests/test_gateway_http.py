"""The gateway's HTTP port: OTA, health, metrics, API guard (auth, rate limit, CORS)."""

from __future__ import annotations

import httpx
import pytest
from supie_common.contracts import ApiReply, MeetingApiRequest, Subjects, decode, encode
from supie_common.device_client import DeviceClient
from supie_gateway.auth import mint_token
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from .test_gateway_protocol import dev_id


@pytest.mark.parametrize("path", ["/supie/ota/", "/xiaozhi/ota/"])
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_ota_hands_out_the_websocket_and_no_mqtt(gateway, path: str, method: str) -> None:
    headers = {
        "Device-Id": "AA:BB:CC:DD:EE:FF",
        "Client-Id": "c-1",
        "Content-Type": "application/json",
    }
    async with httpx.AsyncClient() as client:
        resp = await client.request(
            method,
            gateway.http_url + path,
            headers=headers,
            content=b'{"version":2,"mac_address":"aa:bb:cc:dd:ee:ff"}'
            if method == "POST"
            else None,
        )
    assert resp.status_code == 200
    body = resp.json()
    assert "mqtt" not in body
    assert body["websocket"]["url"].endswith(path.replace("ota", "v1"))
    assert body["websocket"]["url"].startswith("ws://")
    assert "token" in body["websocket"]
    assert isinstance(body["server_time"]["timestamp"], int)
    assert "timezone_offset" in body["server_time"]
    assert set(body["firmware"]) >= {"version", "url"}


async def test_ota_rejects_a_non_object_body(gateway) -> None:
    async with httpx.AsyncClient() as client:
        resp = await client.post(gateway.http_url + "/supie/ota/", content=b"[1]")
    assert resp.status_code == 400 and resp.json()["success"] is False


async def test_healthz_names_what_is_down(gateway) -> None:
    async with httpx.AsyncClient() as client:
        resp = await client.get(gateway.http_url + "/healthz")
    body = resp.json()
    assert resp.status_code == 503
    assert body["nats"] == "ok" and body["redis"] == "ok"
    assert body["services"]["gateway"] == "ok"
    assert body["services"]["asr"].startswith("down")


async def test_healthz_ok_when_everything_answers(make_gateway) -> None:
    gw = await make_gateway(services=["gateway"])
    async with httpx.AsyncClient() as client:
        resp = await client.get(gw.http_url + "/healthz")
    assert resp.status_code == 200 and resp.json()["ok"] is True


async def test_metrics_count_connections_frames_and_messages(gateway) -> None:
    async with DeviceClient(gateway.ws_url, dev_id()) as dev:
        await dev.hello()
        await dev.send_text("ping")
        await dev.expect("pong")
        await dev.send_text("{oops")
        await dev.expect("error")
    async with httpx.AsyncClient() as client:
        text = (await client.get(gateway.http_url + "/metrics")).text
    assert 'supie_gateway_messages_in_total{type="hello"} 1.0' in text
    assert 'supie_gateway_messages_out_total{type="pong"} 1.0' in text
    assert 'supie_gateway_errors_total{code="INVALID_JSON"} 1.0' in text
    assert "supie_gateway_accepted_connections_total 1.0" in text


async def _fake_meeting_api(nc):  # type: ignore[no-untyped-def]
    async def answer(msg) -> None:  # type: ignore[no-untyped-def]
        req = decode(MeetingApiRequest, msg.data)
        await msg.respond(encode(ApiReply(data={"op": req.op, "params": req.params})))

    return await nc.subscribe(Subjects.MEETING_API, cb=answer)


async def test_api_token_auth_and_rate_limit(make_gateway, nc) -> None:
    gw = await make_gateway(
        server={"api_token": "s3cret", "api_rate_limit": 2, "api_rate_burst": 3}
    )
    sub = await _fake_meeting_api(nc)
    url = gw.http_url + "/supie/meetings/abc?preview=3"
    async with httpx.AsyncClient() as client:
        assert (await client.get(url)).status_code == 401
        assert (await client.get(url, headers={"X-API-Token": "nope"})).status_code == 401
        ok = await client.get(url, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert ok.json() == {
            "success": True,
            "data": {"op": "detail", "params": {"preview": "3", "sessionId": "abc"}},
        }
        codes = [
            (await client.get(url, headers={"X-API-Token": "s3cret"})).status_code for _ in range(6)
        ]
    assert 429 in codes
    await sub.unsubscribe()


async def test_api_cors_preflight(gateway) -> None:
    async with httpx.AsyncClient() as client:
        resp = await client.options(
            gateway.http_url + "/supie/meetings/recent",
            headers={"Origin": "http://example.test", "Access-Control-Request-Method": "GET"},
        )
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] in ("*", "http://example.test")


async def test_api_without_meeting_service_is_503(make_gateway) -> None:
    gw = await make_gateway(nats={"request_timeout_s": 0.5})
    async with httpx.AsyncClient() as client:
        resp = await client.get(gw.http_url + "/supie/meetings/recent")
    assert resp.status_code == 503 and resp.json()["success"] is False


async def test_openapi_document(gateway) -> None:
    async with httpx.AsyncClient() as client:
        doc = (await client.get(gateway.http_url + "/openapi.json")).json()
    assert "/supie/meetings/{session_id}/transcript" in doc["paths"]


async def test_device_auth_when_enabled(make_gateway) -> None:
    auth = {
        "enabled": True,
        "tokens": ["static-tok"],
        "auth_key": "k",
        "allowed_devices": ["AA:00:00:00:00:01"],
    }
    gw = await make_gateway(server={"auth": auth})
    with pytest.raises(InvalidStatus) as info:
        async with connect(gw.ws_url, additional_headers={"Device-Id": dev_id()}):
            pass
    assert info.value.response.status_code == 401
    async with DeviceClient(gw.ws_url, dev_id(), token="static-tok") as dev:
        await dev.hello()
    device = dev_id()
    async with DeviceClient(
        gw.ws_url, device, client_id="cid", token=mint_token("k", "cid", device)
    ) as dev:
        await dev.hello()
    async with DeviceClient(gw.ws_url, "aa:00:00:00:00:01") as dev:
        await dev.hello()
