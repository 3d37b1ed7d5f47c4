"""The workflow suites on a real 3-master Valkey cluster (tests/fixtures_cluster.py), ``redis.url:
redis+cluster://...``: every test of test_workflow_events.py (device events, errors, routing,
cross-group hand-over, idempotency, greetings, resync) and test_workflow_api.py (the HTTP
operations, meeting import) runs again here with its replicas and the stand-in gateway on the
cluster, and two replica processes take concurrent changes to groups spread over every master,
hand tasks between groups on different masters, and lose a replica to SIGKILL without losing an
accepted operation. A multi-key script without its group's hash tag fails with CROSSSLOT; a
client that does not follow MOVED fails too."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from redis.asyncio.cluster import RedisCluster
from supie_common.bus import request
from supie_common.contracts import ApiReply, Subjects, WorkflowApiRequest
from supie_common.store import connect_redis
from supie_workflow.store import GroupKeys

from tests import test_workflow_api, test_workflow_events
from tests.fixtures_cluster import ValkeyCluster

# Real clusters take a while to form and fail over (~10-20 s a file on 2 cores): `make test-slow`;
# the one-node cluster tests (test_meeting_cluster.py, test_workflow_store.py) catch CROSSSLOT
# in `make test`.
pytestmark = pytest.mark.slow


def _load_support() -> Any:
    name = "workflow_test_support"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).with_name("test_workflow_support.py")
        )
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


support = _load_support()

# The suites' tests and fixtures, collected again in this module, where ``redis_url`` (below)
# is the cluster: their in-process replicas, subprocesses and stand-in gateway all use it.
_SUITE_FIXTURES = {"make_workflow", "gw", "team", "workflow"}
for _suite in (test_workflow_events, test_workflow_api):
    for _name, _value in vars(_suite).items():
        if _name.startswith("test_") or _name in _SUITE_FIXTURES:
            globals()[_name] = _value


@pytest.fixture(scope="module")
def workflow_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyCluster]:
    """One cluster for the whole module (each test uses groups of its own)."""
    cluster = ValkeyCluster(tmp_path_factory.mktemp("workflow-cluster"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def redis_url(workflow_cluster: ValkeyCluster) -> str:
    return workflow_cluster.url


@pytest.fixture(autouse=True)
def _on_the_cluster(redis: Any) -> None:
    """Every test here, the imported ones included, really talks to the cluster."""
    assert isinstance(redis, RedisCluster), type(redis)


async def _listing(nc: NATS, group: str) -> list[dict[str, Any]]:
    req = WorkflowApiRequest(op="list", params={"groupKey": group})
    reply = await request(nc, Subjects.WORKFLOW_API, req, ApiReply, timeout=10)
    assert reply.success, reply
    return list(reply.data["items"])


async def _started(spawn_service: Any, n: int) -> list[Any]:
    procs = [spawn_service("supie_workflow") for _ in range(n)]
    for p in procs:
        deadline = time.monotonic() + 60
        while "workflow started" not in p.log():
            assert p.proc.poll() is None, p.log()[-3000:]
            assert time.monotonic() < deadline, p.log()[-3000:]
            await asyncio.sleep(0.1)
    return procs


@pytest.mark.timeout(240)
async def test_two_replicas_on_every_master_with_a_hand_over_and_a_crash(
    spawn_service: Any, gw: Any, nc: NATS, redis_url: str
) -> None:
    redis = connect_redis(redis_url)
    assert isinstance(redis, RedisCluster)
    await redis.initialize()
    try:
        # Groups until every master holds some (a group's keys all sit on one master).
        groups: list[str] = []
        masters: dict[str, set[str]] = {}
        while len(masters) < 3 or len(groups) < 6:
            g = support.group_name()
            groups.append(g)
            masters.setdefault(redis.get_node_from_key(GroupKeys.of(g).tasks).name, set()).add(g)
        for g in groups:
            keys = GroupKeys.of(g)
            nodes = {
                redis.get_node_from_key(k).name for k in (keys.tasks, keys.order, keys.seen("x"))
            }
            assert len(nodes) == 1, (g, nodes)  # one hash tag per group
        procs = await _started(spawn_service, 2)
        badges = {g: await gw.badge(support.device_in(g), g) for g in groups}
        accepted: dict[str, list[str]] = {g: [] for g in groups}
        rounds = 8

        async def step(g: str, j: int) -> None:
            frames = await gw.send(badges[g], {"event": "update", "tasks": [{"id": f"{g}-{j}"}]})
            assert frames[0]["status"] == "ok", frames
            accepted[g].append(f"{g}-{j}")

        for j in range(rounds):
            work = [asyncio.create_task(step(g, j)) for g in groups]
            if j == rounds // 2:  # a replica dies with this round's requests on their way
                await asyncio.sleep(0)
                await nc.flush()
                procs[0].kill()
            await asyncio.wait_for(asyncio.gather(*work), 120)

        # A task handed from a group on one master to a group on another.
        (src, *_), (dst, *_) = (sorted(gs) for gs in list(masters.values())[:2])
        moved = f"{src}-0"
        frames = await gw.send(
            badges[src], {"event": "update", "tasks": [{"id": moved, "groupKey": dst}]}
        )
        assert frames[0]["status"] == "ok", frames
        accepted[src].remove(moved)
        accepted[dst].append(moved)
        for g in groups:
            listed = await _listing(nc, g)
            assert sorted(t["id"] for t in listed) == sorted(accepted[g]), g
            assert all(t["groupKey"] == g for t in listed)
        print(f"workflow on the cluster: {len(groups)} groups over {len(masters)} masters")
    finally:
        await redis.aclose()
    logs = "".join(p.log() for p in procs)
    for bad in ("CROSSSLOT", "MOVED", "Traceback"):
        assert bad not in logs, (bad, logs[-4000:])
