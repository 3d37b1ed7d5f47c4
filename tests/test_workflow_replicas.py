"""Two workflow replicas (real processes) under concurrency and crashes, and Valkey restarted
under load. "Accepted" = the stand-in gateway got the reply; it retries everything else with the
same message id, as the real gateway does (dataflow.md §2)."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from redis.asyncio import Redis
from supie_common.bus import request
from supie_common.contracts import ApiReply, Subjects, WorkflowApiRequest
from supie_common.embedded import EmbeddedValkey
from supie_common.store import connect_redis


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


@pytest.fixture
async def gw(nc: NATS, redis: Redis) -> AsyncIterator[Any]:
    gateway = await support.FakeGateway(nc, redis).start()
    yield gateway
    await gateway.stop()


async def start_replicas(spawn_service: Any, n: int = 2, env: dict[str, str] | None = None) -> Any:
    procs = [spawn_service("supie_workflow", env) for _ in range(n)]
    for p in procs:
        deadline = time.monotonic() + 60
        while "workflow started" not in p.log():
            assert p.proc.poll() is None, p.log()[-3000:]
            assert time.monotonic() < deadline, p.log()[-3000:]
            await asyncio.sleep(0.1)
    return procs


async def listing(nc: NATS, group: str) -> list[dict[str, Any]]:
    req = WorkflowApiRequest(op="list", params={"groupKey": group})
    reply = await request(nc, Subjects.WORKFLOW_API, req, ApiReply, timeout=10)
    assert reply.success, reply
    return list(reply.data["items"])


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_200_concurrent_updates_from_20_badges_on_two_replicas(
    spawn_service: Any, gw: Any, nc: NATS
) -> None:
    procs = await start_replicas(spawn_service)
    g = support.group_name()
    badges = [await gw.badge(support.device_in(g), g) for _ in range(20)]
    rounds = 10

    async def run(i: int, badge: Any) -> None:
        for j in range(rounds):  # one message at a time per badge, as the gateway hands them
            await gw.send(
                badge,
                {
                    "event": "update",
                    "tasks": [
                        {"id": f"shared-{j}", f"by{i}": j},  # everyone writes its own field
                        {"id": f"own-{i}", "round": j, "priority": j % 4},  # last one wins
                    ],
                },
            )

    await asyncio.gather(*(run(i, b) for i, b in enumerate(badges)))
    final = await listing(nc, g)
    # the serial result: whatever the interleaving, the fields end as one badge-by-badge run
    got = {
        t["id"]: {k: v for k, v in t.items() if k not in ("createdAt", "updatedAt")} for t in final
    }
    expected = {}
    for j in range(rounds):
        expected[f"shared-{j}"] = {
            "id": f"shared-{j}", "title": "", "priority": 2, "status": "open", "groupKey": g,
            **{f"by{i}": j for i in range(20)},
        }  # fmt: skip
    for i in range(20):
        expected[f"own-{i}"] = {
            "id": f"own-{i}", "title": "", "priority": (rounds - 1) % 4, "status": "open",
            "groupKey": g, "round": rounds - 1,
        }  # fmt: skip
    assert got == expected
    # every badge's last snapshot is the final list (reply snapshots and pushes from both
    # replicas may overtake each other on the way; the settle step makes the last one current)
    await support.wait_for(
        lambda: all(b.last_snapshot() == final for b in badges), within=30, what="convergence"
    )
    served = [p.log().count("[Workflow] op=update") for p in procs]
    assert sum(served) >= 200 and all(n > 0 for n in served), served  # both replicas worked


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_replica_killed_mid_run_loses_no_accepted_operation(
    spawn_service: Any, gw: Any, nc: NATS
) -> None:
    procs = await start_replicas(spawn_service)
    groups = [support.group_name() for _ in range(4)]
    badges = [await gw.badge(support.device_in(g), g) for g in groups for _ in range(5)]
    accepted: list[tuple[str, str]] = []  # (group, task id)
    rounds = 15

    async def step(i: int, badge: Any, j: int) -> None:
        tid = f"{i}-{j}"
        frames = await gw.send(badge, {"event": "update", "tasks": [{"id": tid}]})
        assert frames[0]["status"] == "ok"
        accepted.append((badge.group, tid))
        if j % 3 == 2:  # and a completion, on top of the create
            await gw.send(badge, {"event": "complete", "ids": [f"{i}-{j - 1}"]})

    for j in range(rounds):
        round_ = [asyncio.create_task(step(i, b, j)) for i, b in enumerate(badges)]
        if j == rounds // 2:
            # Kill a replica while this round's 20 requests are on their way to (or inside) it:
            # every task has published its request once it first waits.
            await asyncio.sleep(0)
            await nc.flush()
            procs[0].kill()
        await asyncio.wait_for(asyncio.gather(*round_), 120)

    assert len(accepted) == 20 * rounds
    assert gw.attempts > 20 * rounds + 20 * (rounds // 3)  # the killed replica's were retried
    for g in groups:
        final = {t["id"]: t for t in await listing(nc, g)}
        mine = sorted(tid for group, tid in accepted if group == g)
        assert sorted(final) == mine
        for tid, t in final.items():
            j = int(tid.split("-")[1])
            assert t["status"] == ("done" if j % 3 == 1 else "open"), tid
    for b in badges:
        await support.wait_for(
            lambda b=b: b.last_snapshot() is not None and len(b.last_snapshot()) == 5 * rounds,
            within=30,
            what="every badge holds its group's whole list",
        )


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_valkey_restarted_mid_run_loses_no_accepted_task(
    nats_url: str, nc: NATS, tmp_path: Path
) -> None:
    valkey = EmbeddedValkey(tmp_path / "own-valkey")  # not the shared one
    valkey.start()
    redis = connect_redis(valkey.url)
    svc = await support.start_workflow(nats_url, valkey.url, tmp_path)
    gw = await support.FakeGateway(nc, redis).start()
    try:
        g = support.group_name()
        badges = [await gw.badge(support.device_in(g), g) for _ in range(10)]
        accepted: list[str] = []
        retried: list[int] = []

        async def run(i: int, badge: Any) -> None:
            for j in range(30):
                before = gw.attempts
                await gw.send(badge, {"event": "update", "tasks": [{"id": f"{i}-{j}"}]})
                accepted.append(f"{i}-{j}")
                retried.append(gw.attempts - before - 1)

        work = asyncio.gather(*(run(i, b) for i, b in enumerate(badges)))
        await support.wait_for(lambda: len(accepted) >= 50, within=60, what="some accepted work")
        valkey.stop()  # SIGTERM: a restart; what it acknowledged is in the append-only file
        await asyncio.sleep(1.0)
        valkey.start()
        await asyncio.wait_for(work, 180)
        assert sum(retried) > 0  # the outage was felt: requests were answered "retry"
        # and the data are the AOF's: crash the server (no shutdown save), start it again
        # appendfsync everysec: written within a second, or within 2 s when Valkey postpones
        # its AOF write behind a slow fsync (a busy disk)
        await asyncio.sleep(3.0)
        valkey.kill()
        valkey.start()
        final = await support.wait_for_async(lambda: listing(nc, g), within=30)
        assert sorted(t["id"] for t in final) == sorted(accepted)
        assert len(accepted) == 300
        assert not list((tmp_path / "own-valkey").glob("*.rdb"))  # nothing but the AOF
    finally:
        await gw.stop()
        await svc.stop()
        await redis.aclose()
        valkey.stop()
