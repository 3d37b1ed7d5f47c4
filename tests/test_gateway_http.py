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
from .test_gateway_support import Stack, stack, strict_frames  # noqa: F401

pytestmark = pytest.mark.usefixtures("strict_frames")


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
    assert 'supie_gateway_errors_total{code="BAD_JSON"} 1.0' in text
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
        # a non-ASCII token is a wrong token (401), never a server error
        for bad in ("s3crét", "пароль", "🔑"):
            resp = await client.get(url, headers={"X-API-Token": bad.encode()})
            assert resp.status_code == 401, bad
            resp = await client.get(url, params={"token": bad})
            assert resp.status_code == 401, bad
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


AUTH = {
    "enabled": True,
    "tokens": ["static-tok"],
    "auth_key": "k",
    "allowed_devices": ["AA:00:00:00:00:01"],
    "ota_activation_secret": "activate-me",
}


async def _refused(url: str, headers: dict[str, str]) -> int:
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, additional_headers=headers):
            pass
    return info.value.response.status_code


async def test_device_auth_when_enabled(make_gateway) -> None:
    import time

    gw = await make_gateway(server={"auth": AUTH})
    device = dev_id()
    assert await _refused(gw.ws_url, {"Device-Id": device}) == 401
    assert await _refused(gw.ws_url, {"Device-Id": device, "Authorization": "Bearer nope"}) == 401
    wrong_key = mint_token("other-key", "cid", device)
    assert (
        await _refused(
            gw.ws_url,
            {"Device-Id": device, "Client-Id": "cid", "Authorization": f"Bearer {wrong_key}"},
        )
        == 401
    )
    other_device = mint_token("k", "cid", dev_id())  # a valid token, for another device
    assert (
        await _refused(
            gw.ws_url,
            {"Device-Id": device, "Client-Id": "cid", "Authorization": f"Bearer {other_device}"},
        )
        == 401
    )
    future = mint_token("k", "cid", device, ts=int(time.time()) + 10 * 365 * 86400)
    assert (
        await _refused(
            gw.ws_url,
            {"Device-Id": device, "Client-Id": "cid", "Authorization": f"Bearer {future}"},
        )
        == 401
    )
    expired = mint_token("k", "cid", device, ts=int(time.time()) - 31 * 86400)
    assert (
        await _refused(
            gw.ws_url,
            {"Device-Id": device, "Client-Id": "cid", "Authorization": f"Bearer {expired}"},
        )
        == 401
    )
    non_ascii = "Bearer tök€n".encode().decode("latin-1")
    assert await _refused(gw.ws_url, {"Device-Id": device, "Authorization": non_ascii}) == 401
    async with DeviceClient(gw.ws_url, dev_id(), token="static-tok") as dev:
        await dev.hello()
    async with DeviceClient(
        gw.ws_url, device, client_id="cid", token=mint_token("k", "cid", device)
    ) as dev:
        await dev.hello()
    async with DeviceClient(gw.ws_url, "aa:00:00:00:00:01") as dev:
        await dev.hello()


async def test_ota_hands_a_token_only_to_allowed_or_activated_devices(make_gateway) -> None:
    gw = await make_gateway(server={"auth": AUTH})
    url = gw.http_url + "/xiaozhi/ota/"
    stranger = dev_id()
    async with httpx.AsyncClient() as client:
        refused = await client.get(url, headers={"Device-Id": stranger, "Client-Id": "c"})
        wrong = await client.get(
            url, headers={"Device-Id": stranger, "Client-Id": "c", "Activation-Secret": "nope"}
        )
        activated = await client.get(
            url,
            headers={"Device-Id": stranger, "Client-Id": "c", "Activation-Secret": "activate-me"},
        )
        allowed = await client.get(
            url, headers={"Device-Id": "AA:00:00:00:00:01", "Client-Id": "c"}
        )
    assert refused.status_code == wrong.status_code == 200
    assert refused.json()["websocket"]["token"] == "" == wrong.json()["websocket"]["token"]
    token = activated.json()["websocket"]["token"]
    assert token and allowed.json()["websocket"]["token"]
    async with DeviceClient(gw.ws_url, stranger, client_id="c", token=token) as dev:
        await dev.hello()  # the activated token really opens the door


async def test_workflow_routes_go_to_the_workflow_service(gateway, stack: Stack) -> None:
    async with httpx.AsyncClient() as client:
        listed = await client.get(gateway.http_url + "/supie/workflow", params={"groupKey": "g1"})
        imported = await client.post(
            gateway.http_url + "/supie/workflow/import-from-meeting",
            json={"groupKey": "g1", "sessionId": "m1"},
        )
        by_query = await client.post(
            gateway.http_url + "/supie/workflow/import-from-meeting",
            params={"groupKey": "g2", "sessionId": "m2"},
        )
        bad = await client.post(
            gateway.http_url + "/supie/workflow/import-from-meeting", content=b"[1, 2]"
        )
    assert listed.status_code == 200 and listed.json() == {"success": True, "data": {"tasks": []}}
    assert imported.status_code == by_query.status_code == 200
    assert bad.status_code == 400 and bad.json()["success"] is False
    ops = [(r.op, r.params, r.body) for r in stack.workflow.api]
    assert ops == [
        ("list", {"groupKey": "g1"}, {}),
        ("import_from_meeting", {}, {"groupKey": "g1", "sessionId": "m1"}),
        ("import_from_meeting", {"groupKey": "g2", "sessionId": "m2"}, {}),
    ]


async def test_an_api_reply_with_a_content_type_is_sent_as_is(gateway, stack: Stack) -> None:
    stack.workflow.api_reply = ApiReply(data="# Tasks\n- ship\n", content_type="text/markdown")
    async with httpx.AsyncClient() as client:
        resp = await client.get(gateway.http_url + "/supie/workflow", params={"groupKey": "g"})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/markdown")
    assert resp.text == "# Tasks\n- ship\n"


async def test_workflow_api_without_the_service_is_503(make_gateway) -> None:
    gw = await make_gateway(nats={"request_timeout_s": 0.5})
    async with httpx.AsyncClient() as client:
        resp = await client.get(gw.http_url + "/supie/workflow", params={"groupKey": "g"})
    assert resp.status_code == 503 and "workflow" in resp.json()["error"]


async def test_an_open_api_on_a_public_address_is_warned_about(make_gateway) -> None:
    from loguru import logger

    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="WARNING", format="{message}")
    try:
        await make_gateway(server={"ip": "0.0.0.0"})
        await make_gateway(server={"ip": "127.0.0.1"})
        await make_gateway(server={"ip": "0.0.0.0", "api_token": "t"})
    finally:
        logger.remove(sink)
    warned = [x for x in lines if "open to anyone" in x]
    assert len(warned) == 1 and "server.api_token" in warned[0]
