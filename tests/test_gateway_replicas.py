"""Two gateway replicas sharing one NATS and one Redis: outbound delivery, takeover, presence."""

from __future__ import annotations

import asyncio
import time

import pytest
from supie_common.contracts import DeviceOutbound, Subjects, encode
from supie_common.device_client import DeviceClient
from supie_common.store import Presence

from .test_gateway_protocol import dev_id
from .test_gateway_support import eventually, strict_frames  # noqa: F401

pytestmark = pytest.mark.usefixtures("strict_frames")


async def wait_for(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate() if asyncio.iscoroutinefunction(predicate) else predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_takeover_on_the_same_gateway(gateway) -> None:
    device = dev_id()
    old = await DeviceClient(gateway.ws_url, device).connect()
    await old.hello()
    new = await DeviceClient(gateway.ws_url, device).connect()
    await new.hello()
    notice = await old.expect("system", timeout=3)
    assert "1.5" in notice["message"]
    t0 = time.monotonic()
    await asyncio.wait_for(old.closed.wait(), 5)
    assert 1.0 <= time.monotonic() - t0 <= 3.0
    await new.send_text("ping")
    await new.expect("pong", timeout=2)
    assert not new.closed.is_set()
    await new.close()


async def test_takeover_across_gateway_replicas(make_gateway, redis) -> None:
    a, b = await make_gateway(), await make_gateway()
    device = dev_id()
    old = await DeviceClient(a.ws_url, device).connect()
    await old.hello()
    new = await DeviceClient(b.ws_url, device).connect()
    await new.hello()
    await old.expect("system", timeout=3)
    await asyncio.wait_for(old.closed.wait(), 5)
    await new.send_text("ping")
    await new.expect("pong", timeout=2)
    presence = await redis.hgetall(f"supie:presence:{device}")
    assert presence["gateway"] == b.service.instance_id
    assert not new.closed.is_set()
    await new.close()


async def test_outbound_reaches_the_device_on_any_replica(make_gateway, nc) -> None:
    a, b = await make_gateway(), await make_gateway()
    d1, d2 = dev_id(), dev_id()
    c1 = await DeviceClient(a.ws_url, d1).connect()
    c2 = await DeviceClient(b.ws_url, d2).connect()
    await c1.hello()
    await c2.hello()
    for device in (d1, d2):
        msg = DeviceOutbound(message={"type": "stt", "text": f"for {device}"})
        await nc.publish(Subjects.device_out(device), encode(msg))
    assert (await c1.expect("stt", timeout=3))["text"] == f"for {d1}"
    assert (await c2.expect("stt", timeout=3))["text"] == f"for {d2}"
    await asyncio.sleep(0.2)
    assert [m for m in c1.received if m.get("type") == "stt"] == [
        {"type": "stt", "text": f"for {d1}"}
    ]
    await c1.close()
    await c2.close()


async def test_presence_and_group_membership(gateway, redis) -> None:
    prefix = dev_id()[:9]
    devices = [prefix + "00:01:02", prefix + "00:01:03"]
    clients = [await DeviceClient(gateway.ws_url, d).connect() for d in devices]
    for c in clients:
        await c.hello()
    presence = Presence(redis)
    group = devices[0][:8]
    await wait_for(lambda: True)
    assert await presence.online_in_group(group) == sorted(devices)
    for d in devices:
        assert (await presence.where(d))["group"] == group
    await clients[0].close()

    async def gone() -> bool:
        return await presence.online_in_group(group) == [devices[1]]

    await wait_for(gone)
    assert await redis.ttl(f"supie:presence:{devices[1]}") > 0  # TTL heartbeats
    await clients[1].close()


@pytest.mark.parametrize("mode", ["coding", "working"])
async def test_reconnect_to_another_replica_keeps_mode(make_gateway, mode: str) -> None:
    a, b = await make_gateway(), await make_gateway()
    device = dev_id()
    async with DeviceClient(a.ws_url, device) as first:
        await first.hello()
        await first.send_json({"type": "mode", "state": "start", "mode": mode})
        await first.expect("mode", status="ok")
    async with DeviceClient(b.ws_url, device) as second:
        await second.hello()  # no mode start: the mode comes back by itself
        await eventually(lambda: device in b.service.connections, 5)
        session = b.service.connections[device].session
        await eventually(lambda: session.mode == mode, 5, "mode restored")
        if mode == "working":
            assert session.listen_mode == "manual"
        await second.send_json({"type": "mode", "state": "end", "mode": mode})
        await second.expect("mode", state="end")
    async with DeviceClient(a.ws_url, device) as third:
        await third.hello()
        await asyncio.sleep(0.3)
        assert a.service.connections[device].session.mode is None  # the end was kept too
