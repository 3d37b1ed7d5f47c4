"""Limits on the HTTP port (issue 9 item 3): request bodies (413), slow clients (cut off while
sending headers, 408 while sending a body), and /healthz answering JSON whatever is down. Real
sockets, written byte by byte where the test is about timing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from supie_common.embedded import EmbeddedNats


async def _raw(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _status_line(reader: asyncio.StreamReader, timeout: float = 10) -> bytes:
    return await asyncio.wait_for(reader.readline(), timeout)


async def test_a_50_mb_body_is_refused_with_413_before_it_is_read(make_gateway) -> None:
    gw = await make_gateway()
    port = gw.service.http_port
    reader, writer = await _raw(port)
    writer.write(
        b"POST /supie/ota/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 52428800\r\n\r\n"
    )
    await writer.drain()
    assert b" 413 " in await _status_line(reader)
    writer.close()
    async with httpx.AsyncClient() as client:  # the port carries on
        assert (await client.get(gw.http_url + "/supie/ota/")).status_code == 200


async def test_a_chunked_body_past_the_limit_is_413(make_gateway) -> None:
    gw = await make_gateway(server={"http_max_body_bytes": 64 * 1024})
    reader, writer = await _raw(gw.service.http_port)
    writer.write(
        b"POST /supie/workflow/import-from-meeting HTTP/1.1\r\nHost: x\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"x" * 16384
    try:
        for _ in range(16):  # 256 KB, four times the limit
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await writer.drain()
    except ConnectionError:
        pass  # the server may stop reading once it has answered
    assert b" 413 " in await _status_line(reader)
    writer.close()


async def test_a_small_body_is_fine(make_gateway) -> None:
    gw = await make_gateway(server={"http_max_body_bytes": 2048})
    async with httpx.AsyncClient() as client:
        ok = await client.post(gw.http_url + "/supie/ota/", json={"mac_address": "aa"})
        big = await client.post(gw.http_url + "/supie/ota/", content=b"{" + b" " * 4096 + b"}")
    assert ok.status_code == 200 and big.status_code == 413
    assert big.json()["success"] is False and "server.http_max_body_bytes" in big.json()["error"]


async def test_a_slow_client_is_cut_off_while_sending_headers(make_gateway) -> None:
    gw = await make_gateway(server={"http_header_timeout_s": 1.0})
    reader, writer = await _raw(gw.service.http_port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    await writer.drain()
    t0 = time.monotonic()
    closed_after: float | None = None
    for _ in range(40):  # one header byte every 0.2 s: never a complete request head
        try:
            writer.write(b"X")
            await writer.drain()
        except ConnectionError:
            closed_after = time.monotonic() - t0
            break
        try:
            data = await asyncio.wait_for(reader.read(100), 0.2)
        except TimeoutError:
            continue
        if data == b"":
            closed_after = time.monotonic() - t0
            break
    writer.close()
    assert closed_after is not None and closed_after < 5, closed_after
    async with httpx.AsyncClient() as client:  # everyone else is served meanwhile
        assert (await client.get(gw.http_url + "/supie/ota/")).status_code == 200


async def test_an_idle_connection_that_never_sends_is_cut_off(make_gateway) -> None:
    gw = await make_gateway(server={"http_header_timeout_s": 0.5})
    reader, writer = await _raw(gw.service.http_port)
    data = await asyncio.wait_for(reader.read(100), 5)
    assert data == b""  # closed by the server
    writer.close()


async def test_a_body_that_stalls_gets_408(make_gateway) -> None:
    gw = await make_gateway(server={"http_header_timeout_s": 0.8})
    reader, writer = await _raw(gw.service.http_port)
    writer.write(
        b"POST /supie/ota/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    await writer.drain()
    assert b" 408 " in await _status_line(reader)
    writer.close()


async def test_healthz_answers_json_when_nats_is_down(make_gateway, tmp_path: Path) -> None:
    own = EmbeddedNats(tmp_path / "nats")
    own.start()
    try:
        gw = await make_gateway(nats={"url": own.url}, services=["gateway"])
        async with httpx.AsyncClient(timeout=15) as client:
            assert (await client.get(gw.http_url + "/healthz")).status_code == 200
            own.stop()
            for _ in range(50):
                if not gw.service.nc.is_connected:
                    break
                await asyncio.sleep(0.1)
            resp = await client.get(gw.http_url + "/healthz")
    finally:
        own.stop()
    assert resp.status_code == 503
    body = resp.json()
    assert body["ok"] is False and body["nats"] == "down"
    assert set(body["services"]) == {"gateway"}


@pytest.mark.parametrize("path", ["/supie/ota/", "/xiaozhi/ota/"])
async def test_ota_refuses_bad_device_ids_with_400(gateway, path: str) -> None:
    async with httpx.AsyncClient() as client:
        long = await client.get(gateway.http_url + path, headers={"Device-Id": "a" * 500})
        ctl = await client.get(gateway.http_url + path, headers={"Device-Id": b"a\x01b"})
    assert long.status_code == 400 and ctl.status_code == 400
