"""The meeting service's core paths on a real 3-master Valkey cluster (tests/fixtures_cluster.py),
``redis.url: redis+cluster://...``: meetings whose keys land on every master, snippets and
routed finals (with a repeat), transcript pushes from the lease holder, the lease taken over when
that replica is SIGKILLed, concurrent finalizes (fenced locks, the files archive's index lock on
the cluster), abandonment and the summary redelivered on the next connect. Any multi-key
operation without a shared hash tag fails here with CROSSSLOT, and a client that does not follow
MOVED fails too."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from redis.asyncio.cluster import RedisCluster
from supie_common.store import connect_redis
from supie_meeting.keys import DeviceKeys, MeetingKeys

from tests.fixtures_cluster import ValkeyCluster

# Real clusters take a while to form and fail over (~10-20 s a file on 2 cores): `make test-slow`;
# the one-node cluster tests (test_meeting_cluster.py, test_workflow_store.py) catch CROSSSLOT
# in `make test`.
pytestmark = pytest.mark.slow


def load_meeting_bus() -> Any:
    name = "supie_tests_meeting_bus"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).parent / "fixtures" / "meeting_bus.py"
        )
        assert spec is not None and spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


bus = load_meeting_bus()
Badge, until, replicas = bus.Badge, bus.until, bus.replicas
MEETINGS = 9


@pytest.mark.timeout(240)
async def test_meeting_core_paths_on_a_three_master_cluster(
    valkey_cluster: ValkeyCluster, spawn_service: Any, nc: NATS, tmp_path: Path
) -> None:
    env = {
        "SUPIE_REDIS__URL": valkey_cluster.url,
        "SUPIE_MEETING__ABANDON_AFTER_S": "1",
        "SUPIE_MEETING__TRANSCRIPT_PUSH_INTERVAL_MS": "3000",
        "SUPIE_MEETING__FINALIZE_PER_MINUTE": "100",
    }
    procs = await replicas(spawn_service, nc, 2, env)
    redis = connect_redis(valkey_cluster.url)
    assert isinstance(redis, RedisCluster)
    try:
        await redis.initialize()
        badges = [await Badge(nc).listen() for _ in range(MEETINGS)]
        ids = await asyncio.gather(*(b.start() for b in badges))
        masters = {redis.get_node_from_key(MeetingKeys.meta(m)).name for m in ids}
        devices = {redis.get_node_from_key(DeviceKeys.device(b.device_id)).name for b in badges}
        assert len(masters) == 3 and len(devices) >= 2, (masters, devices)

        async def talk(badge: Any, k: int) -> None:
            assert (await badge.snippet(f"We decided to use master {k}."))["accepted"] == 1
            for i in range(3):
                await badge.say(f"Meeting {k} says line {i}.", utterance_id=f"u:{k}:{i}")
            await badge.say("Meeting repeat.", utterance_id=f"u:{k}:0")  # a redelivered final

        await asyncio.gather(*(talk(b, k) for k, b in enumerate(badges)))

        def pushed(badge: Any) -> list[str]:
            return [
                i["text"]
                for f in badge.pushed
                if f.get("phase") == "transcript"
                for i in f["items"]
            ]

        for badge in badges:
            await badge.wait(lambda b=badge: len(pushed(b)) >= 4, 20)

        # The replica running the first meeting's timers dies: the other takes the lease over.
        first = ids[0]
        holder = next(p for p in procs if f"meeting {first}: timers running here" in p.log())
        survivor = next(p for p in procs if p is not holder)
        holder.kill()
        await badges[0].say("After the fail-over.", utterance_id="u:0:late")
        await badges[0].wait(lambda: "After the fail-over." in pushed(badges[0]), 30)
        assert f"meeting {first}: timers running here" in survivor.log()
        # A new replica joins, as after a restart.
        procs += await replicas(spawn_service, nc, 1, env)

        # Every badge reconnects (state), then finalizes twice at once.
        for badge in badges:
            assert (await badge.state()).status == "active"
        acks = await asyncio.gather(*(b.finalize() for b in badges for _ in range(2)))
        assert all(a[0]["phase"] == "finalize" for a in acks)
        events = await bus.finalized_events(nc, set(ids), 60, settle=1.0)
        assert {m: len(e) for m, e in events.items()} == dict.fromkeys(ids, 1)
        for k, (badge, m) in enumerate(zip(badges, ids, strict=True)):
            summaries = await badge.wait(lambda b=badge: b.of("summary"), 30)
            assert {s["sessionId"] for s in summaries} == {m}
            assert events[m][0].metrics["segmentsCount"] == 4 + (k == 0)
            archived = bus.archived(tmp_path, m)
            assert archived["summary"]["decisions"] == [f"We decided to use master {k}."]
        index = json.loads((bus.archive_root(tmp_path) / "index.json").read_text())
        assert {e["sessionId"] for e in index} == set(ids)  # the index lock held on the cluster

        # Abandonment and the summary redelivered on the next connect.
        gone = await Badge(nc).listen()
        g = await gone.start()
        await gone.say("Nobody will come back for this one.")
        await gone.connected()
        await gone.close()
        await gone.disconnected()
        abandoned = await bus.finalized_events(nc, {g}, 60)
        assert abandoned[g][0].metrics["reason"] == "abandoned"
        reply = await gone.state_after_finalize()
        assert reply.status is None and '"redelivered":true' in reply.frames[0]
    finally:
        await redis.aclose()
    logs = "".join(p.log() for p in procs)
    for bad in ("CROSSSLOT", "MOVED", "slot", "not persisted", "Traceback"):
        assert bad not in logs, (bad, logs[-4000:])
