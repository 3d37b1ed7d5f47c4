"""The task store underneath the service, against real Valkey: field values round-trip byte for
byte through the scripts, snapshot frames and group events are what the models make, every key a
script touches comes through KEYS with its group's hash tag, and the store runs unchanged on a
Redis Cluster client (a one-node Valkey cluster)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from supie_common.contracts import WorkflowGroupChanged, decode, new_id, to_frame
from supie_common.contracts.device import Task, TaskPatch, WorkflowSnapshot
from supie_common.embedded import free_port, valkey_server_binary, wait_for_port
from supie_workflow.lua import READ_SCRIPT, WRITE_SCRIPT
from supie_workflow.operations import patch_op
from supie_workflow.push import group_changed_payload
from supie_workflow.store import GroupKeys, TaskStore

TRICKY: dict[str, Any] = {
    "text": 'quotes " and \\ backslashes, tabs\tand\nnewlines',
    "unicode": "完成第二个任务 ✅ 𝄞",
    "big": 2**70,
    "negative": -12345678901234567890,
    "float": 0.1,
    "tiny": 1e-300,
    "empty_list": [],
    "empty_object": {},
    "nested": {"a": [1, {"b": None}, [True, False]]},
    "null": None,
}


@pytest.fixture
async def store(redis: Redis) -> AsyncIterator[TaskStore]:
    yield TaskStore(redis, max_tasks=50, seen_ttl_s=60, presence_ttl_s=30)


def group() -> str:
    return f"s{new_id()[:7]}"


async def test_unknown_field_values_round_trip_exactly(store: TaskStore) -> None:
    g = group()
    patch = TaskPatch.model_validate({"id": "t", "title": "标题", **TRICKY})
    result = await store.update(g, f"m:{new_id()}", [patch_op(patch)])
    assert result.status == "ok" and result.ids == ["t"]
    (stored,) = result.snapshot.dicts()
    for key, value in TRICKY.items():
        assert stored[key] == value and type(stored[key]) is type(value), key
    assert stored["title"] == "标题"
    # and again from a fresh read, through the model
    (task,) = (await store.snapshot(g)).tasks
    assert task.model_extra is not None and task.model_extra["big"] == 2**70


async def test_snapshot_frame_and_group_event_match_the_models(store: TaskStore) -> None:
    g = group()
    patches = [
        TaskPatch.model_validate({"id": "b", "priority": 3, "x": [1]}),
        TaskPatch.model_validate({"id": "a", "title": "Ä", "priority": 0}),
        TaskPatch.model_validate({"id": "c", "priority": 3}),
    ]
    result = await store.update(g, f"m:{new_id()}", [patch_op(p) for p in patches])
    snap = result.snapshot
    assert [t.id for t in snap.tasks] == ["a", "b", "c"]  # priority, then creation
    expected = json.loads(to_frame(WorkflowSnapshot(tasks=snap.tasks, group_key=g)))
    assert json.loads(snap.frame) == expected
    event = decode(WorkflowGroupChanged, group_changed_payload(snap, "update", "dev"))
    assert (event.group_key, event.op, event.by) == (g, "update", "dev")
    assert event.tasks == snap.tasks and all(isinstance(t, Task) for t in event.tasks)


def test_scripts_touch_keys_only_through_KEYS() -> None:
    calls = re.findall(r"redis\.call\('(\w+)',\s*([^,)]+)", READ_SCRIPT + WRITE_SCRIPT)
    assert calls
    for command, first in calls:
        assert first.strip().startswith("KEYS["), (command, first)


def test_every_key_of_a_group_carries_its_hash_tag() -> None:
    def tag(key: str) -> str:
        start = key.index("{")
        return key[start + 1 : key.index("}", start)]

    for g in ("aa:bb:cc", "Team Alpha", "a}b{c", "组一"):
        keys = GroupKeys(g)
        tags = {tag(k) for k in (keys.tasks, keys.order, keys.version, keys.seen("m:x"))}
        assert len(tags) == 1 and tags.pop().startswith("g:")
    assert tag(GroupKeys("x").tasks) != tag(GroupKeys("y").tasks)


async def test_a_recorded_request_answers_alike_without_applying_again(store: TaskStore) -> None:
    g = group()
    await store.update(g, "m:1", [patch_op(TaskPatch(id="t"))])
    first = await store.complete(g, "m:2", ["t"])
    again = await store.complete(g, "m:2", ["t"])
    assert (first.status, first.ids, first.repeated) == ("ok", ["t"], False)
    assert (again.status, again.ids, again.repeated) == ("ok", ["t"], True)
    assert again.snapshot.version == first.snapshot.version
    fresh = await store.complete(g, "m:3", ["t"])
    assert fresh.status == "idempotent"


async def test_many_concurrent_changes_to_one_group_lose_nothing(store: TaskStore) -> None:
    g = group()
    await asyncio.gather(
        *(
            store.update(g, f"m:{i}", [patch_op(TaskPatch.model_validate({"id": "t", f"f{i}": i}))])
            for i in range(40)
        )
    )
    (task,) = (await store.snapshot(g)).dicts()
    assert all(task[f"f{i}"] == i for i in range(40))
    assert (await store.snapshot(g)).version == 40


@pytest.fixture
def cluster_node(tmp_path: Path) -> Iterator[int]:
    """A one-node Valkey cluster holding every slot."""
    port = free_port()
    bus_port = free_port()  # not port + 10000, which may be past 65535
    proc = subprocess.Popen(
        [
            valkey_server_binary(),
            "--cluster-port",
            str(bus_port),
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(tmp_path),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(tmp_path / "nodes.conf"),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port("127.0.0.1", port, 30)
        import redis

        admin = redis.Redis(port=port)
        admin.execute_command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
        deadline = time.monotonic() + 30
        while b"cluster_state:ok" not in admin.execute_command("CLUSTER", "INFO"):
            assert time.monotonic() < deadline, "the cluster never got ready"
            time.sleep(0.1)
        admin.close()
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


async def test_the_store_runs_on_a_redis_cluster_client(cluster_node: int) -> None:
    client = RedisCluster(host="127.0.0.1", port=cluster_node, decode_responses=True)
    try:
        await client.initialize()
        store = TaskStore(client, max_tasks=10, seen_ttl_s=60, presence_ttl_s=30)
        g = group()
        r = await store.update(g, "m:1", [patch_op(TaskPatch(id="t", title="x"))])
        assert r.status == "ok" and r.online == []
        assert (await store.assign(g, "m:2", "t", "ann")).status == "ok"
        assert (await store.complete(g, "m:3", ["t"])).status == "ok"
        snap = await store.snapshot(g)
        assert snap.tasks[0].status == "done" and snap.tasks[0].owner == "ann"
        assert await store.version(g) == 3 and g in await store.groups()
        assert (await store.delete(g, "m:4", ["t"])).snapshot.items == ()
    finally:
        await client.aclose()
