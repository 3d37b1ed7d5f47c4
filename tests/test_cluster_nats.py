"""A 3-node NATS cluster (tests/fixtures_cluster.py) keeps a 3-replica JetStream stream through
the loss of its leader: publishing resumes on a new leader, and every acknowledged message is in
the stream exactly once. Prints the measured failover time as one JSON line."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats
import pytest
from nats.errors import Error as NatsError
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import Error as JsError

from tests.fixtures_cluster import NatsCluster

# Real clusters take a while to form and fail over (~10-20 s a file on 2 cores): `make test-slow`;
# the one-node cluster tests (test_meeting_cluster.py, test_workflow_store.py) catch CROSSSLOT
# in `make test`.
pytestmark = pytest.mark.slow

STREAM = "FAILOVER"
T = TypeVar("T")


async def _stream_ready(js, replicas: int) -> bool:  # type: ignore[no-untyped-def]
    try:
        info = await js.stream_info(STREAM)
    except (NatsError, JsError, TimeoutError):
        return False
    cluster = info.cluster
    if cluster is None or not cluster.leader:
        return False
    current = [r for r in (cluster.replicas or []) if r.current and not r.offline]
    return len(current) == replicas - 1


async def _retrying(op: Callable[[], Awaitable[T]], within: float = 60.0) -> T:
    """A JetStream API call until it answers: right after a node dies the meta leader (which
    answers stream lookups and consumer creation) may itself be re-electing, and the calls
    time out meanwhile."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await op()
        except (NatsError, JsError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


@pytest.mark.timeout(180)
async def test_a_replicated_stream_survives_killing_its_leader(nats_cluster: NatsCluster) -> None:
    nc = await nats.connect(
        servers=nats_cluster.urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2
    )
    js = nc.jetstream(timeout=2.0)
    try:
        config = StreamConfig(
            name=STREAM, subjects=["failover.>"], num_replicas=3, storage=StorageType.FILE
        )
        await _retrying(lambda: js.add_stream(config), within=30)
        for _ in range(300):
            if await _stream_ready(js, 3):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("stream replicas never current")

        acked: list[int] = []
        acked_at: dict[int, float] = {}
        sent_at: dict[int, float] = {}
        failures = 0

        async def publish(seq: int) -> None:
            nonlocal failures
            sent_at[seq] = time.monotonic()
            while True:
                try:
                    # The message id makes a retry of an already stored message a no-op.
                    await js.publish(
                        f"failover.{seq % 7}", str(seq).encode(), headers={"Nats-Msg-Id": str(seq)}
                    )
                    break
                except (NatsError, JsError, TimeoutError):
                    failures += 1
                    await asyncio.sleep(0.1)
            acked.append(seq)
            acked_at[seq] = time.monotonic()

        before = 200
        for seq in range(before):
            await publish(seq)
        leader = (await _retrying(lambda: js.stream_info(STREAM))).cluster.leader  # type: ignore[union-attr]
        assert leader in {n.name for n in nats_cluster.nodes}
        killed_at = time.monotonic()
        nats_cluster.kill(leader)

        after = 200
        for seq in range(before, before + after):
            await publish(seq)
        first_after = min(acked_at[s] for s in range(before, before + after))
        failover_s = first_after - killed_at

        info = await _retrying(lambda: js.stream_info(STREAM))
        assert info.cluster is not None and info.cluster.leader not in (None, leader)
        assert info.state.messages == before + after, info.state

        async def read_all() -> list[int]:
            # stream= skips the stream lookup by subject; a read cut short starts over.
            sub = await js.subscribe("failover.>", stream=STREAM, ordered_consumer=True)
            try:
                return [int((await sub.next_msg(timeout=10)).data) for _ in range(before + after)]
            finally:
                await sub.unsubscribe()

        seen = await _retrying(read_all)
        assert sorted(seen) == list(range(before + after))  # nothing lost, nothing doubled

        # The killed node comes back and catches up as a replica.
        nats_cluster.start_node(nats_cluster.node(leader))
        for _ in range(300):
            if await _stream_ready(js, 3):
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("the restarted node never caught up")
        print(
            json.dumps(
                {
                    "test": "nats_stream_leader_failover",
                    "replicas": 3,
                    "failover_s": round(failover_s, 2),
                    "publish_retries": failures,
                    "messages": before + after,
                    "lost": 0,
                    "duplicated": 0,
                }
            )
        )
    finally:
        await nc.close()
