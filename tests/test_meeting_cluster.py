"""Issue 16 item 3, meeting side: every meeting script passes its keys through ``KEYS`` and they
share one hash tag, so Redis Cluster accepts them. Checked against a real Valkey in cluster mode
(one node owning every slot: it enforces same-slot scripts exactly like a bigger cluster) with
two meeting replicas driving a whole meeting, and directly: a cross-slot script is refused."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from redis.exceptions import ResponseError
from supie_common.embedded import EmbeddedValkey, free_port
from supie_common.store import connect_redis
from supie_meeting import scripts
from supie_meeting.keys import DeviceKeys, MeetingKeys, same_slot


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


class ClusterValkey(EmbeddedValkey):
    def command(self) -> list[str]:
        # The cluster bus defaults to port + 10000, which a high free port would overflow.
        return [
            *super().command(),
            "--cluster-enabled", "yes",
            "--cluster-port", str(free_port()),
            "--cluster-config-file", str(self.data_dir / "nodes.conf"),
        ]  # fmt: skip


@pytest.fixture
async def cluster_url(tmp_path: Path) -> Any:
    server = ClusterValkey(tmp_path / "cluster")
    server.start()
    client = connect_redis(server.url)
    try:
        await client.execute_command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
        for _ in range(200):
            info = await client.execute_command("CLUSTER", "INFO")
            if "cluster_state:ok" in str(info):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"cluster not ready: {info}")
        yield server.url
    finally:
        await client.aclose()
        server.stop()


def test_no_script_names_a_key() -> None:
    for name in scripts.__all__:
        source = getattr(scripts, name)
        assert "supie:" not in source and "{m:" not in source and "{d:" not in source, name


def test_keys_of_one_meeting_or_device_share_a_tag() -> None:
    m, d = "0123abcd", "aa:bb:{odd}:device"
    assert same_slot([*MeetingKeys.all_of(m), MeetingKeys.lock(m), MeetingKeys.lease(m)])
    assert same_slot(
        [DeviceKeys.device(d), DeviceKeys.seen(d, "x"), DeviceKeys.rate(d, "items", 7)]
    )
    assert not same_slot([MeetingKeys.meta(m), DeviceKeys.device(d)])


@pytest.mark.timeout(120)
async def test_a_whole_meeting_on_a_cluster_mode_valkey(
    cluster_url: str, spawn_service: Any, nc: NATS, tmp_path: Path
) -> None:
    redis = connect_redis(cluster_url)
    try:
        # The control: this server refuses a script across slots.
        with pytest.raises(ResponseError, match="(?i)slot"):
            await redis.eval("return 1", 2, MeetingKeys.meta("a"), MeetingKeys.meta("b"))
    finally:
        await redis.aclose()
    procs = await replicas(
        spawn_service,
        nc,
        2,
        {"SUPIE_REDIS__URL": cluster_url, "SUPIE_MEETING__ABANDON_AFTER_S": "1"},
    )
    badge = await Badge(nc).listen()
    m = await badge.start()
    assert (await badge.snippet("We decided to run on a cluster."))["accepted"] == 1
    await badge.say("Every key of a script shares its tag.", utterance_id="s:1")
    await badge.say("Every key of a script shares its tag.", utterance_id="s:1")
    badge.session_id = "reconnected"
    assert (await badge.state()).status == "active"
    await badge.finalize()
    events = await bus.finalized_events(nc, {m})
    assert events[m][0].metrics["segmentsCount"] == 2
    assert bus.archived(tmp_path, m)["summary"]["decisions"] == ["We decided to run on a cluster."]
    # Abandonment and redelivery touch the device's keys and the meeting's.
    gone = await Badge(nc).listen()
    g = await gone.start()
    await gone.say("Nobody will come back for this one.")
    await gone.connected()
    await gone.close()
    await gone.disconnected()
    abandoned = await bus.finalized_events(nc, {g})
    assert abandoned[g][0].metrics["reason"] == "abandoned"
    reply = await gone.state_after_finalize()
    assert reply.status is None and '"redelivered":true' in reply.frames[0]
    logs = "".join(p.log() for p in procs)
    assert "slot" not in logs.lower() and "not persisted" not in logs
