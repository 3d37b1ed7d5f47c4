"""The workflow service as the gateway drives it: every device event, validation and semantic
errors, routing priority, cross-group hand-over, both kinds of idempotency, greetings and their
debounce, the console event and the log line. A stand-in gateway (test_workflow_support.py)
receives each badge's reply frames and pushes through one subscription, in arrival order, so a
push an operation made is always seen before its reply."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger
from nats.aio.client import Client as NATS
from redis.asyncio import Redis
from supie_common.contracts import (
    DeviceConnected,
    DeviceHello,
    InboundReply,
    ModeChanged,
    Subjects,
    WorkflowGroupChanged,
    decode,
    encode,
)
from supie_common.contracts.device import validate_server_message
from supie_workflow.store import GroupKeys


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
async def make_workflow(nats_url: str, redis_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    started: list[Any] = []

    async def make(**overrides: Any) -> Any:
        svc = await support.start_workflow(nats_url, redis_url, tmp_path, **overrides)
        started.append(svc)
        return svc

    yield make
    for svc in started:
        await svc.stop()


@pytest.fixture
async def gw(nc: NATS, redis: Redis) -> AsyncIterator[Any]:
    gateway = await support.FakeGateway(nc, redis).start()
    yield gateway
    await gateway.stop()


@pytest.fixture
async def team(gw: Any) -> tuple[Any, Any, Any]:
    """Two online badges of one group and an offline one."""
    g = support.group_name()
    a = await gw.badge(support.device_in(g), g)
    b = await gw.badge(support.device_in(g), g)
    off = await gw.badge(support.device_in(g), g, online=False)
    return a, b, off


def ids(tasks: list[dict[str, Any]] | None) -> list[str]:
    return [t["id"] for t in tasks or []]


def task(tasks: list[dict[str, Any]] | None, tid: str) -> dict[str, Any]:
    return next(t for t in tasks or [] if t["id"] == tid)


async def test_update_acks_snapshots_the_group_and_keeps_unknown_fields(
    make_workflow: Any, gw: Any, team: Any
) -> None:
    await make_workflow()
    a, b, off = team
    g = a.group
    other = await gw.badge(support.device_in(support.group_name()), support.group_name())
    frames = await gw.send(
        a,
        {
            "event": "update",
            "tasks": [
                {"id": "t1", "title": "Ship it", "priority": 1, "assignees": [], "n": 2**70},
                {"id": "t2", "title": "Write docs", "priority": 0, "meta": {"x": [1, {}]}},
                {"id": "t3", "title": "Later", "priority": 3},
            ],
        },
    )
    for f in frames:
        validate_server_message(f)  # every frame is a documented server message
    ack, snap = frames
    assert ack == {
        "type": "workflow",
        "status": "ok",
        "event": "update",
        "ids": ["t1", "t2", "t3"],
        "groups": [g],
    }
    assert snap["event"] == "update" and snap["groupKey"] == g
    assert ids(snap["tasks"]) == ["t2", "t1", "t3"]  # by priority
    t1 = task(snap["tasks"], "t1")
    assert t1["assignees"] == [] and t1["n"] == 2**70 and t1["status"] == "open"
    assert t1["groupKey"] == g and t1["createdAt"] == t1["updatedAt"] > 0
    assert task(snap["tasks"], "t2")["meta"] == {"x": [1, {}]}
    # the other online badge got the same snapshot; the sender only in its reply
    assert b.snapshots() == [snap["tasks"]]
    assert len(a.snapshots()) == 1
    assert off.frames == [] and other.frames == []


async def test_field_level_upsert_changes_only_what_it_names(
    make_workflow: Any, gw: Any, team: Any
) -> None:
    await make_workflow()
    a, b, _ = team
    await gw.send(a, {"event": "update", "tasks": [{"id": "t", "title": "Old", "extra": "kept"}]})
    created = task(a.last_snapshot(), "t")
    assert created["priority"] == 2 and created["status"] == "open"  # defaults
    await gw.send(a, {"event": "update", "tasks": [{"id": "t", "priority": 0, "owner": "ann"}]})
    t = task(a.last_snapshot(), "t")
    assert (t["title"], t["priority"], t["owner"], t["extra"]) == ("Old", 0, "ann", "kept")
    assert t["createdAt"] == created["createdAt"] and t["updatedAt"] >= created["updatedAt"]
    # an empty owner unassigns (the bus drops nulls); a null title changes nothing
    await gw.send(a, {"event": "update", "tasks": [{"id": "t", "owner": "", "title": None}]})
    t = task(a.last_snapshot(), "t")
    assert "owner" not in t and t["title"] == "Old"
    # the same update again changes nothing: idempotent, nobody else hears of it
    before = len(b.frames)
    frames = await gw.send(a, {"event": "update", "tasks": [{"id": "t", "priority": 0}]})
    assert frames[0]["idempotent"] is True and len(b.frames) == before
    # server-owned fields cannot be written
    await gw.send(a, {"event": "update", "tasks": [{"id": "t", "createdAt": 1, "updatedAt": 2}]})
    assert task(a.last_snapshot(), "t")["createdAt"] == created["createdAt"]


async def test_pull_and_list_return_the_own_group_only(
    make_workflow: Any, gw: Any, team: Any
) -> None:
    await make_workflow()
    a, b, _ = team
    stranger_group = support.group_name()
    stranger = await gw.badge(support.device_in(stranger_group), stranger_group)
    await gw.send(stranger, {"event": "update", "tasks": [{"id": "secret", "title": "theirs"}]})
    await gw.send(a, {"event": "update", "tasks": [{"id": "mine", "title": "ours"}]})
    before_b = len(b.frames)
    for message in (
        {"event": "update", "tasks": []},
        {"event": "list"},
        {"event": "list", "groupKey": stranger_group},  # asking for another group's list
        {"event": "update", "tasks": [], "groupKey": stranger_group},
    ):
        ack, snap = await gw.send(a, message)
        assert ack["status"] == "ok" and ack["event"] == message["event"]
        assert ids(snap["tasks"]) == ["mine"] and snap["groupKey"] == a.group
    assert len(b.frames) == before_b  # a pull changes nothing and pushes nothing


async def test_complete_then_complete_again_is_idempotent_without_a_push(
    make_workflow: Any, gw: Any, team: Any
) -> None:
    await make_workflow()
    a, b, _ = team
    await gw.send(a, {"event": "update", "tasks": [{"id": "x"}, {"id": "y"}]})
    ack, snap = await gw.send(a, {"event": "complete", "ids": ["x"]})
    assert ack == {"type": "workflow", "status": "ok", "event": "complete", "ids": ["x"]}
    assert task(snap["tasks"], "x")["status"] == "done"
    assert task(b.last_snapshot(), "x")["status"] == "done"
    pushes = len(b.frames)
    ack, snap = await gw.send(a, {"event": "complete", "ids": ["x"]})
    assert ack["idempotent"] is True and task(snap["tasks"], "x")["status"] == "done"
    assert len(b.frames) == pushes  # no broadcast
    # reopening is an update
    await gw.send(a, {"event": "update", "tasks": [{"id": "x", "status": "open"}]})
    assert task(b.last_snapshot(), "x")["status"] == "open"


async def test_delete_and_an_emptied_group_gets_an_empty_snapshot(
    make_workflow: Any, gw: Any, team: Any
) -> None:
    await make_workflow()
    a, b, _ = team
    await gw.send(a, {"event": "update", "tasks": [{"id": "1"}, {"id": "2"}]})
    ack, snap = await gw.send(a, {"event": "delete", "ids": ["1"]})
    assert ack["ids"] == ["1"] and ids(snap["tasks"]) == ["2"]
    await gw.send(a, {"event": "delete", "ids": ["2"]})
    last = b.frames[-1]
    assert last == {"type": "workflow", "event": "update", "tasks": [], "groupKey": a.group}
    validate_server_message(last)


async def test_assign_defaults_to_the_alias_then_the_id_and_repeats_are_idempotent(
    make_workflow: Any, gw: Any
) -> None:
    g = support.group_name()
    named, plain = support.device_in(g), support.device_in(g)
    await make_workflow(workflow={"device_alias": {named: "Ann"}})
    a = await gw.badge(named, g)
    p = await gw.badge(plain, g)
    await gw.send(a, {"event": "update", "tasks": [{"id": "1"}, {"id": "2"}]})
    await gw.send(a, {"event": "assign", "id": "1"})
    assert task(a.last_snapshot(), "1")["owner"] == "Ann"
    await gw.send(p, {"event": "assign", "id": "2"})
    assert task(p.last_snapshot(), "2")["owner"] == plain
    await gw.send(p, {"event": "assign", "id": "2", "owner": "Bob"})
    assert task(a.last_snapshot(), "2")["owner"] == "Bob"
    pushes = len(a.frames)
    ack, _ = await gw.send(p, {"event": "assign", "id": "2", "owner": "Bob"})
    assert ack["idempotent"] is True and len(a.frames) == pushes


async def test_unknown_ids_are_not_found_and_change_nothing(
    make_workflow: Any, gw: Any, team: Any, redis: Redis
) -> None:
    await make_workflow()
    a, b, _ = team
    await gw.send(a, {"event": "update", "tasks": [{"id": "1"}]})
    version = await redis.get(GroupKeys(a.group).version)
    pushes = len(b.frames)
    cases = [
        ({"event": "complete", "ids": ["1", "nope"]}, "ids[1]"),
        ({"event": "delete", "ids": ["nope", "1"]}, "ids[0]"),
        ({"event": "assign", "id": "nope"}, "id"),
    ]
    for message, field in cases:
        frames = await gw.send(a, message)
        err = frames[0]
        validate_server_message(err)
        assert err["status"] == "error" and err["code"] == "NOT_FOUND"
        assert err["field"] == field and "'nope'" in err["message"]
        assert err["event"] == message["event"]
    assert await redis.get(GroupKeys(a.group).version) == version  # nothing changed
    assert len(b.frames) == pushes
    ack, snap = await gw.send(a, {"event": "list"})
    assert task(snap["tasks"], "1")["status"] == "open"


async def test_another_groups_tasks_cannot_be_completed_assigned_or_deleted(
    make_workflow: Any, gw: Any, team: Any
) -> None:
    await make_workflow()
    a, _, _ = team
    g2 = support.group_name()
    c = await gw.badge(support.device_in(g2), g2)
    await gw.send(c, {"event": "update", "tasks": [{"id": "theirs", "title": "T"}]})
    pushes = len(c.frames)
    for message in (
        {"event": "complete", "ids": ["theirs"]},
        {"event": "assign", "id": "theirs"},
        {"event": "delete", "ids": ["theirs"]},
    ):
        frames = await gw.send(a, message)
        assert frames[0]["code"] == "NOT_FOUND"
        assert all("theirs" not in json.dumps(f.get("tasks", [])) for f in frames)
    assert len(c.frames) == pushes
    _, snap = await gw.send(c, {"event": "list"})
    t = task(snap["tasks"], "theirs")
    assert t["status"] == "open" and "owner" not in t


async def test_routing_priority_task_group_over_top_level_over_sender(
    make_workflow: Any, gw: Any, team: Any
) -> None:
    await make_workflow()
    a, a2, _ = team
    gb, gc = support.group_name(), support.group_name()
    b = await gw.badge(support.device_in(gb), gb)
    c = await gw.badge(support.device_in(gc), gc)
    ack, snap = await gw.send(
        a,
        {
            "event": "update",
            "groupKey": gb,
            "tasks": [
                {"id": "to-b", "title": "for B"},
                {"id": "to-c", "title": "for C", "groupKey": gc.upper()},  # normalised
            ],
        },
    )
    assert ack["groups"] == sorted([gb, gc])
    assert ids(b.last_snapshot()) == ["to-b"] and task(b.last_snapshot(), "to-b")["groupKey"] == gb
    assert ids(c.last_snapshot()) == ["to-c"] and task(c.last_snapshot(), "to-c")["groupKey"] == gc
    # the sender's own group was not touched: its reply snapshot is its own (empty) list, and
    # its team mate heard nothing
    assert snap["groupKey"] == a.group and snap["tasks"] == []
    assert a2.frames == []
    # without a top-level groupKey, the sender's group
    await gw.send(a, {"event": "update", "tasks": [{"id": "home"}]})
    assert ids(a2.last_snapshot()) == ["home"]
    assert ids(b.last_snapshot()) == ["to-b"]


async def test_a_task_handed_to_another_group_moves_with_its_fields(
    make_workflow: Any, gw: Any, team: Any
) -> None:
    await make_workflow()
    a, a2, _ = team
    gb = support.group_name()
    b = await gw.badge(support.device_in(gb), gb)
    await gw.send(
        a, {"event": "update", "tasks": [{"id": "m", "title": "Move me", "priority": 0, "k": 1}]}
    )
    created = task(a.last_snapshot(), "m")
    await gw.send(a, {"event": "update", "tasks": [{"id": "m", "groupKey": gb, "owner": "B"}]})
    moved = task(b.last_snapshot(), "m")
    assert (moved["title"], moved["priority"], moved["k"], moved["owner"]) == (
        "Move me", 0, 1, "B",
    )  # fmt: skip
    assert moved["groupKey"] == gb and moved["createdAt"] == created["createdAt"]
    assert a2.last_snapshot() == [] and a.last_snapshot() == []


async def test_a_full_group_refuses_and_changes_nothing(
    make_workflow: Any, gw: Any, team: Any
) -> None:
    await make_workflow(workflow={"max_tasks_per_group": 2})
    a, b, _ = team
    gb = support.group_name()
    other = await gw.badge(support.device_in(gb), gb)
    await gw.send(a, {"event": "update", "tasks": [{"id": "1"}]})
    pushes = len(b.frames)
    for message in (
        {"event": "update", "tasks": [{"id": "2"}, {"id": "3"}]},
        # cross-group: checked before either group changes
        {"event": "update", "tasks": [{"id": "x", "groupKey": gb}, {"id": "2"}, {"id": "3"}]},
    ):
        err = (await gw.send(a, message))[0]
        assert err["code"] == "SCHEMA_INVALID" and err["field"] == "tasks"
        assert "more than 2 tasks" in err["message"]
    assert len(b.frames) == pushes and other.frames == []
    ack, _ = await gw.send(a, {"event": "update", "tasks": [{"id": "1", "title": "edit ok"}]})
    assert ack["status"] == "ok"


async def test_gateway_validation_errors_name_the_field() -> None:
    """The gateway validates the shape with the same models before the service sees it."""
    from pydantic import TypeAdapter, ValidationError
    from supie_common.contracts.device import DeviceMessage, describe_validation_error

    adapter = TypeAdapter(DeviceMessage)
    cases = [
        ({"event": "update", "tasks": [{"id": "1", "priority": 7}]}, "tasks[0].priority",
         "must be an integer 0..3"),
        ({"event": "update", "tasks": [{"id": "1", "priority": True}]}, "tasks[0].priority",
         "must be an integer 0..3"),
        ({"event": "update", "tasks": [{"title": "no id"}]}, "tasks[0].id", "required"),
        ({"event": "update", "tasks": [{"id": "1", "status": "later"}]}, "tasks[0].status",
         "expected"),
        ({"event": "update", "tasks": [{"id": "1", "title": ""}]}, "tasks[0].title",
         "non-empty"),
        ({"event": "delete", "ids": []}, "ids", "at least 1"),
        ({"event": "complete"}, "ids", "required"),
        ({"event": "assign"}, "id", "required"),
        ({"event": "fly"}, "event", "expected one of"),
    ]  # fmt: skip
    for message, field, words in cases:
        with pytest.raises(ValidationError) as exc:
            adapter.validate_python({"type": "workflow", **message})
        got_field, text = describe_validation_error(exc.value, device_union=True)
        assert got_field == field, (message, got_field, text)
        assert text.startswith(f"{field}: ") and words in text, text


async def test_malformed_or_misrouted_messages_get_an_answer_and_change_nothing(
    make_workflow: Any, gw: Any, nc: NATS, team: Any
) -> None:
    await make_workflow()
    a, _, _ = team
    reply = decode(InboundReply, (await nc.request(Subjects.WORKFLOW_INBOUND, b"{", 10)).data)
    assert reply.error and not reply.retry and reply.frames == []
    inbound = gw.inbound(a, {"event": "list"}).model_dump(by_alias=True)
    inbound["message"] = {"type": "coding", "event": "start"}
    raw = await nc.request(Subjects.WORKFLOW_INBOUND, json.dumps(inbound).encode(), 10)
    err = json.loads(decode(InboundReply, raw.data).frames[0])
    assert err["code"] == "SCHEMA_INVALID" and err["field"] == "type"


async def test_a_retried_message_id_is_applied_once_and_answered_alike(
    make_workflow: Any, gw: Any, team: Any, redis: Redis
) -> None:
    await make_workflow()
    a, b, _ = team
    await gw.send(a, {"event": "update", "tasks": [{"id": "1"}, {"id": "2"}]})
    first = await gw.send(a, {"event": "complete", "ids": ["1"]}, message_id="m-1")
    version = await redis.get(GroupKeys(a.group).version)
    again = await gw.send(a, {"event": "complete", "ids": ["1"]}, message_id="m-1")
    assert again[0] == first[0]  # same answer, not "idempotent"
    assert await redis.get(GroupKeys(a.group).version) == version
    # the repeat pushes the snapshot again (the first attempt may have died before it)
    assert task(b.last_snapshot(), "1")["status"] == "done"
    fresh = await gw.send(a, {"event": "complete", "ids": ["1"]})
    assert fresh[0]["idempotent"] is True
    # a repeated delete answers like the first, not NOT_FOUND
    d1 = await gw.send(a, {"event": "delete", "ids": ["2"]}, message_id="m-2")
    d2 = await gw.send(a, {"event": "delete", "ids": ["2"]}, message_id="m-2")
    assert d1[0] == d2[0] and d2[0]["status"] == "ok"


async def test_request_id_is_applied_once_per_device(
    make_workflow: Any, gw: Any, team: Any, redis: Redis
) -> None:
    await make_workflow()
    a, b, _ = team
    msg = {"event": "update", "requestId": "req-1", "tasks": [{"id": "r", "title": "first"}]}
    first = await gw.send(a, msg)
    assert first[0]["requestId"] == "req-1"
    version = await redis.get(GroupKeys(a.group).version)
    # a retry with a new message id but the same requestId, even with other content
    retry = {**msg, "tasks": [{"id": "r", "title": "second"}, {"id": "s"}]}
    again = await gw.send(a, retry)
    assert again[0] == first[0]
    assert await redis.get(GroupKeys(a.group).version) == version
    assert ids(again[1]["tasks"]) == ["r"] and again[1]["tasks"][0]["title"] == "first"
    # the key is the device's: another badge's request with the same requestId is its own
    other = await gw.send(b, {**msg, "tasks": [{"id": "r2"}]})
    assert other[0]["ids"] == ["r2"]
    ttl = await redis.ttl(GroupKeys(a.group).seen("r:" + a.device_id + ":req-1"))
    assert 23 * 3600 < ttl <= 24 * 3600


async def test_greetings_on_connect_hello_and_working_mode_start_are_debounced(
    make_workflow: Any, gw: Any, nc: NATS, team: Any
) -> None:
    await make_workflow(workflow={"snapshot_debounce_ms": 600})
    await make_workflow(workflow={"snapshot_debounce_ms": 600})  # two replicas agree
    a, _, _ = team
    await gw.send(a, {"event": "update", "tasks": [{"id": "1"}]})
    newcomer = await gw.badge(support.device_in(a.group), a.group)
    env = {
        "device_id": newcomer.device_id,
        "session_id": newcomer.session_id,
        "gateway_id": gw.gateway_id,
    }
    await nc.publish(Subjects.DEVICE_CONNECTED, encode(DeviceConnected(**env, group_key=a.group)))
    await nc.publish(Subjects.DEVICE_HELLO, encode(DeviceHello(**env, group_key=a.group)))
    await nc.publish(
        Subjects.MODE_CHANGED,
        encode(ModeChanged(**env, state="start", mode="working", group_key=a.group)),
    )
    await support.wait_for(lambda: newcomer.snapshots(), what="a greeting")
    await asyncio.sleep(0.3)  # inside the debounce window: the other two were swallowed
    assert newcomer.snapshots() == [a.last_snapshot()]
    await asyncio.sleep(0.5)  # the window has passed
    await nc.publish(Subjects.DEVICE_HELLO, encode(DeviceHello(**env, group_key=a.group)))
    await support.wait_for(lambda: len(newcomer.snapshots()) == 2, what="a second greeting")
    # only entering *working* mode greets
    await asyncio.sleep(0.7)
    for state, mode in (("start", "meeting"), ("end", "working")):
        await nc.publish(
            Subjects.MODE_CHANGED,
            encode(ModeChanged(**env, state=state, mode=mode, group_key=a.group)),
        )
    await gw.send(newcomer, {"event": "list"})  # the bus has handled what came before
    await asyncio.sleep(0.3)
    assert len(newcomer.snapshots()) == 3  # the two above: none; the list reply: one


async def test_group_changes_are_published_for_live_views(
    make_workflow: Any, gw: Any, nc: NATS, team: Any
) -> None:
    await make_workflow()
    a, _, _ = team
    events: list[WorkflowGroupChanged] = []

    async def on(msg: Any) -> None:
        events.append(decode(WorkflowGroupChanged, msg.data))

    sub = await nc.subscribe(Subjects.workflow_group(a.group), cb=on)
    await gw.send(a, {"event": "update", "tasks": [{"id": "1", "title": "Live"}]})
    await gw.send(a, {"event": "complete", "ids": ["1"]})
    await gw.send(a, {"event": "complete", "ids": ["1"]})  # idempotent: no event
    await support.wait_for(lambda: len(events) >= 2, what="group events")
    await asyncio.sleep(0.2)
    await sub.unsubscribe()
    assert [(e.op, e.group_key, e.by) for e in events] == [
        ("update", a.group, a.device_id),
        ("complete", a.group, a.device_id),
    ]
    assert events[-1].tasks[0].status == "done"


async def test_one_log_line_per_operation_without_task_contents(
    make_workflow: Any, gw: Any, team: Any
) -> None:
    await make_workflow()
    a, _, _ = team
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="INFO", format="{message}")
    try:
        await gw.send(a, {"event": "update", "tasks": [{"id": "1", "title": "TOP-SECRET"}]})
        await gw.send(a, {"event": "complete", "ids": ["1"]})
        await gw.send(a, {"event": "complete", "ids": ["1"]})
    finally:
        logger.remove(sink)
    ours = [line.strip() for line in lines if line.startswith("[Workflow]")]
    assert ours == [
        f"[Workflow] op=update groups=[{a.group}] count=1 by={a.device_id} idempotent=false",
        f"[Workflow] op=complete groups=[{a.group}] count=1 by={a.device_id} idempotent=false",
        f"[Workflow] op=complete groups=[] count=0 by={a.device_id} idempotent=true",
    ]
    assert not any("TOP-SECRET" in line for line in lines)


async def test_an_overtaken_snapshot_is_repaired_by_a_resync(
    make_workflow: Any, gw: Any, team: Any, nc: NATS
) -> None:
    """Another replica's older snapshot arrives after the newest one: the sender of the older one
    finds the group moved on (after a flush) and resyncs the group's online badges."""
    from supie_common.contracts import DeviceOutbound

    svc = await make_workflow()
    a, b, _ = team
    await gw.send(a, {"event": "update", "tasks": [{"id": "1", "title": "old"}]})
    old = await svc.store.snapshot(a.group)
    await gw.send(a, {"event": "update", "tasks": [{"id": "1", "title": "new"}]})
    current = b.last_snapshot()
    # the overtaken push, as a slow replica would deliver it
    await nc.publish(Subjects.device_out(b.device_id), encode(DeviceOutbound(frame=old.frame)))
    await support.wait_for(lambda: b.last_snapshot()[0]["title"] == "old", what="stale push")
    svc.pusher.check({a.group: old.version})
    await support.wait_for(lambda: b.last_snapshot() == current, what="the resync")
    assert a.last_snapshot() == current  # every online badge of the group got it
    assert svc.pusher.resyncs == 1
