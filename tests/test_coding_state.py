"""The coding service's Redis layer on its own: the batcher (commands packed by us on one server,
a redis-py pipeline on a cluster), and the per-device state through it, on both."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError
from supie_coding.signals import LogLine
from supie_coding.state import CodingKeys, CodingState
from supie_common.batcher import Batcher, BatcherStopped
from supie_common.contracts import new_id
from supie_common.resp import pack
from supie_common.store import connect_redis

from tests.fixtures_cluster import ValkeyCluster


def test_pack_writes_resp_bulk_strings() -> None:
    assert pack(("SET", "k", "vé")) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\xc3\xa9\r\n"
    assert pack(("EXPIRE", b"raw", 10, True)) == (
        b"*4\r\n$6\r\nEXPIRE\r\n$3\r\nraw\r\n$2\r\n10\r\n$1\r\n1\r\n"
    )
    with pytest.raises(TypeError, match="float"):
        pack(("SET", "k", 1.5))  # type: ignore[arg-type]


@pytest.fixture
async def batcher(redis: Redis) -> AsyncIterator[Batcher]:
    b = Batcher(redis)
    task = asyncio.create_task(b.run())
    await asyncio.sleep(0)  # running
    yield b
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_batch_answers_each_command_and_an_error_stays_with_its_command(
    batcher: Batcher,
) -> None:
    key = f"supie:test:{new_id()}"
    replies = await asyncio.gather(
        batcher.call("SET", key, "v", "NX", "PX", 60000),
        batcher.call("SET", key, "w", "NX", "PX", 60000),  # taken: nil
        batcher.call("HSET", key, "f", "1"),  # WRONGTYPE: this command's error only
        batcher.call("EVALSHA", "0" * 40, 0),  # NOSCRIPT: the class callers catch
        batcher.call("GET", key),
        batcher.call("ZRANGEBYSCORE", f"{key}:z", "-inf", "+inf"),
        return_exceptions=True,
    )
    assert replies[0] == "OK" and replies[1] is None
    assert isinstance(replies[2], ResponseError) and "WRONGTYPE" in str(replies[2])
    assert isinstance(replies[3], NoScriptError)
    assert replies[4] == "v" and replies[5] == []


async def test_many_concurrent_calls_each_get_their_own_reply(batcher: Batcher) -> None:
    key = f"supie:test:{new_id()}"
    replies = await asyncio.gather(*(batcher.call("INCR", key) for _ in range(1000)))
    assert sorted(replies) == list(range(1, 1001))


async def test_a_stopped_batcher_refuses_and_answers_what_it_held(redis: Redis) -> None:
    b = Batcher(redis)
    with pytest.raises(BatcherStopped):
        b.submit(("PING",), lambda reply, error: None)
    task = asyncio.create_task(b.run())
    await asyncio.sleep(0)
    assert await b.call("PING") == "PONG"
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    with pytest.raises(BatcherStopped):
        await b.call("PING")


async def _exercise_state(client: Any, devices: list[str]) -> None:
    """Log lines (the task-free path and the awaited one), the schedule, the lock, a claim."""
    state = CodingState(client, max_lines=50)
    await state.load_scripts()
    task = asyncio.create_task(state.batcher.run())
    await asyncio.sleep(0)
    try:
        answered: list[Any] = []
        done = asyncio.Event()

        def then(result: Any, error: BaseException | None) -> None:
            answered.append(error or result)
            if len(answered) == len(devices):
                done.set()

        for n, device in enumerate(devices):
            line = LogLine(f"line {n}")
            state.submit_apply(device, f"m-{n}", 1_000, line, 2_000, "grp", then)
        await asyncio.wait_for(done.wait(), 30)
        assert all(a.applied and a.due_written == 2_000 for a in answered), answered
        for device in devices:
            again = await state.apply(
                device, "m-again", "log", 1_100, entry=LogLine("warn line", level="warn")
            )
            assert again.applied
            repeated = await state.apply(
                device, "m-again", "log", 1_200, entry=LogLine("warn line", level="warn")
            )
            assert not repeated.applied  # the same message id: applied once
            await state.schedule(device, 2_000)
            assert await state.lock(device, "me", 10_000)
            assert not await state.lock(device, "other", 10_000)
            claim = await state.claim(device, 5_000)
            assert claim.kind == "insight"
            assert [line.text for line in claim.lines][-2:] == [
                f"line {devices.index(device)}",
                "warn line",
            ]
            assert claim.int_of("warns") == 1
            await state.finish(device, claim.int_of("seq"), "sha")
            await state.unlock(device, "me")
            await state.settle(device)
            assert await state.lock(device, "other", 10_000)
        assert await state.due_devices(10_000, 100) == []
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_device_state_through_the_batcher_on_one_server(redis: Redis) -> None:
    await _exercise_state(redis, [f"one:{n}:{new_id()[:6]}" for n in range(6)])


@pytest.fixture
async def cluster_client(valkey_cluster: ValkeyCluster) -> AsyncIterator[Any]:
    client: Any = connect_redis(valkey_cluster.url)
    await client.initialize()  # learn the slot map now
    yield client
    await client.aclose()


async def test_device_state_through_the_batcher_on_a_cluster(cluster_client: Any) -> None:
    devices = [f"cl:{n}:{new_id()[:6]}" for n in range(12)]
    slots = {cluster_client.get_node_from_key(CodingKeys.state(d)).name for d in devices}
    assert len(slots) > 1  # the batch really spans masters
    await _exercise_state(cluster_client, devices)
