"""Group isolation as a property: random operations from random badges in random groups (own
group, a top-level groupKey, per-task groupKeys, moves, completes, deletes, assigns, pulls).
Every snapshot a badge receives holds only its own group's tasks, nothing reaches an offline
badge, and each group ends as a reference model of the rules (SPEC §7) says it should."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NATS
from redis.asyncio import Redis


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

GROUPS = 3
IDS = ["t1", "t2", "t3", "t4"]
OWNERS = ["ann", "bob"]

group_ref = st.none() | st.integers(0, GROUPS - 1)
patch = st.fixed_dictionaries(
    {"id": st.sampled_from(IDS), "group": group_ref},
    optional={"status": st.sampled_from(["open", "done"]), "owner": st.sampled_from(OWNERS)},
)
operation = st.one_of(
    st.tuples(st.just("update"), st.lists(patch, min_size=1, max_size=3), group_ref),
    st.tuples(st.just("complete"), st.lists(st.sampled_from(IDS), min_size=1, max_size=2)),
    st.tuples(st.just("delete"), st.lists(st.sampled_from(IDS), min_size=1, max_size=2)),
    st.tuples(st.just("assign"), st.sampled_from(IDS), st.sampled_from(OWNERS)),
    st.tuples(st.just("list")),
)
program = st.lists(st.tuples(st.integers(0, 2 * GROUPS - 1), operation), min_size=1, max_size=15)

Model = list[dict[str, dict[str, Any]]]  # per group: id -> {status, owner}


def apply(model: Model, sender: int, op: tuple[Any, ...], names: list[str]) -> None:
    """The rules, restated: what each operation does to the groups."""
    kind = op[0]
    mine = model[sender]
    if kind == "update":
        _, patches, top = op
        home = sender if top is None else top
        base = {k: dict(v) for k, v in model[home].items()}
        targets: dict[int, list[dict[str, Any]]] = {}
        for p in patches:
            targets.setdefault(home if p["group"] is None else p["group"], []).append(p)
        moved = {p["id"] for g, ps in targets.items() if g != home for p in ps if p["id"] in base}
        for g, ps in targets.items():
            for p in ps:
                start = model[g].get(p["id"]) or (base.get(p["id"]) if g != home else None)
                task = dict(start or {"status": "open", "owner": None})
                task.update({k: p[k] for k in ("status", "owner") if k in p})
                model[g][p["id"]] = task
        for tid in moved:
            model[home].pop(tid, None)
    elif kind in ("complete", "delete"):
        ids = op[1]
        if all(i in mine for i in ids):
            for i in ids:
                if kind == "delete":
                    mine.pop(i, None)
                else:
                    mine[i]["status"] = "done"
    elif kind == "assign":
        if op[1] in mine:
            mine[op[1]]["owner"] = op[2]


def message(op: tuple[Any, ...], names: list[str]) -> dict[str, Any]:
    kind = op[0]
    if kind == "update":
        _, patches, top = op
        tasks = []
        for p in patches:
            t: dict[str, Any] = {"id": p["id"]}
            if p["group"] is not None:
                t["groupKey"] = names[p["group"]]
            t.update({k: p[k] for k in ("status", "owner") if k in p})
            tasks.append(t)
        out: dict[str, Any] = {"event": "update", "tasks": tasks}
        if top is not None:
            out["groupKey"] = names[top]
        return out
    if kind in ("complete", "delete"):
        return {"event": kind, "ids": op[1]}
    if kind == "assign":
        return {"event": "assign", "id": op[1], "owner": op[2]}
    return {"event": "list"}


@pytest.fixture
async def workflow(nats_url: str, redis_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    svc = await support.start_workflow(nats_url, redis_url, tmp_path)
    yield svc
    await svc.stop()


@pytest.fixture
async def gw(nc: NATS, redis: Redis) -> AsyncIterator[Any]:
    gateway = await support.FakeGateway(nc, redis).start()
    yield gateway
    await gateway.stop()


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=program)
async def test_every_snapshot_a_badge_gets_is_its_own_groups(
    workflow: Any, gw: Any, steps: list[tuple[int, tuple[Any, ...]]]
) -> None:
    names = [support.group_name() for _ in range(GROUPS)]
    badges = [await gw.badge(support.device_in(g), g) for g in names for _ in range(2)]
    offline = [await gw.badge(support.device_in(g), g, online=False) for g in names]
    model: Model = [{} for _ in names]
    for who, op in steps:
        sender = badges[who]
        frames = await gw.send(sender, message(op, names))
        apply(model, who // 2, op, names)
        assert frames and frames[0]["type"] == "workflow"
    await asyncio.sleep(0.05)  # any settle re-sends
    for badge in badges:
        for f in badge.frames:
            if "tasks" in f:
                assert f["groupKey"] == badge.group
                assert all(t["groupKey"] == badge.group for t in f["tasks"]), (badge.group, f)
    assert all(b.frames == [] for b in offline)
    for g in range(len(names)):
        _, snap = await gw.send(badges[2 * g], {"event": "list"})
        got = {t["id"]: {"status": t["status"], "owner": t.get("owner")} for t in snap["tasks"]}
        assert got == model[g], (g, steps)
        # every badge's last snapshot is the group's list
        for badge in badges[2 * g : 2 * g + 2]:
            if badge.last_snapshot() is not None:
                assert badge.last_snapshot() == snap["tasks"]
