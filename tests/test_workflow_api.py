"""The workflow HTTP operations over ``workflow.api`` (the gateway turns the routes into these):
list by group key or a longer id, groups, operate on behalf of a group, and import from a meeting
against a stand-in meeting API responder (``meeting.api``: recent / detail)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from redis.asyncio import Redis
from supie_common.bus import request
from supie_common.contracts import (
    ApiReply,
    MeetingApiRequest,
    Queues,
    Subjects,
    WorkflowApiRequest,
    decode,
    encode,
)


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
async def workflow(nats_url: str, redis_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    svc = await support.start_workflow(nats_url, redis_url, tmp_path)
    yield svc
    await svc.stop()


@pytest.fixture
async def gw(nc: NATS, redis: Redis) -> AsyncIterator[Any]:
    gateway = await support.FakeGateway(nc, redis).start()
    yield gateway
    await gateway.stop()


async def api(nc: NATS, op: str, params: dict[str, Any] | None = None, **body: Any) -> ApiReply:
    req = WorkflowApiRequest(op=op, params=params or {}, body=body)
    return await request(nc, Subjects.WORKFLOW_API, req, ApiReply, timeout=10)


class MeetingStandIn:
    """Answers meeting.api like the meeting service (reply shapes of supie_meeting.api)."""

    def __init__(self, meetings: dict[str, dict[str, Any]]) -> None:
        self.meetings = meetings  # sessionId -> summary, most recent last
        self.calls: list[MeetingApiRequest] = []
        self.sub: Any = None

    async def start(self, nc: NATS) -> MeetingStandIn:
        async def on(msg: Any) -> None:
            req = decode(MeetingApiRequest, msg.data)
            self.calls.append(req)
            if req.op == "recent":
                items = [{"sessionId": sid} for sid in reversed(self.meetings)]
                reply = ApiReply(data=items[: int(req.params.get("limit", 10))])
            elif req.op == "detail" and req.params.get("sessionId") in self.meetings:
                sid = req.params["sessionId"]
                reply = ApiReply(data={"sessionId": sid, "summary": self.meetings[sid]})
            else:
                reply = ApiReply(status=404, success=False, error="meeting not found")
            await msg.respond(encode(reply))

        self.sub = await nc.subscribe(Subjects.MEETING_API, queue=Queues.MEETING, cb=on)
        await nc.flush()
        return self

    async def stop(self) -> None:
        await self.sub.unsubscribe()


def summary(actions: list[str], next_steps: list[str]) -> dict[str, Any]:
    return {
        "title": "Weekly",
        "duration": "00:10:00",
        "bullets": ["x"],
        "decisions": [],
        "actions": actions,
        "risks": [],
        "nextSteps": next_steps,
    }


async def test_list_by_group_key_or_a_longer_id(workflow: Any, gw: Any, nc: NATS) -> None:
    g = support.group_name()
    device = support.device_in(g)
    badge = await gw.badge(device, g)
    await gw.send(badge, {"event": "update", "tasks": [{"id": "b", "priority": 3}, {"id": "a"}]})
    for key in (g, device, device.upper()):
        reply = await api(nc, "list", {"groupKey": key})
        assert reply.success and reply.data["groupKey"] == g
        assert [t["id"] for t in reply.data["items"]] == ["a", "b"]
        assert reply.data["items"][0]["groupKey"] == g
    empty = await api(nc, "list", {"groupKey": support.group_name()})
    assert empty.success and empty.data["items"] == []
    missing = await api(nc, "list")
    assert (missing.status, missing.success, missing.error) == (400, False, "groupKey: required")
    unknown = await api(nc, "fly")
    assert unknown.status == 404 and "op" in (unknown.error or "")


async def test_groups_lists_every_group_with_its_count(workflow: Any, gw: Any, nc: NATS) -> None:
    g1, g2 = support.group_name(), support.group_name()
    b1 = await gw.badge(support.device_in(g1), g1)
    b2 = await gw.badge(support.device_in(g2), g2)
    await gw.send(b1, {"event": "update", "tasks": [{"id": "1"}, {"id": "2"}]})
    await gw.send(b2, {"event": "update", "tasks": [{"id": "1"}]})
    reply = await api(nc, "groups")
    counts = {i["groupKey"]: i["count"] for i in reply.data["items"]}
    assert counts[g1] == 2 and counts[g2] == 1


async def test_operate_takes_the_badges_code_path_and_badges_hear_it(
    workflow: Any, gw: Any, nc: NATS
) -> None:
    g = support.group_name()
    badge = await gw.badge(support.device_in(g), g)
    reply = await api(
        nc,
        "operate",
        groupKey=g,
        by="alice",
        message={"event": "update", "tasks": [{"id": "c1", "title": "From the console"}]},
    )
    assert reply.success and reply.data["groups"] == [g]
    assert reply.data["frames"][0]["status"] == "ok"
    assert [t["id"] for t in badge.last_snapshot()] == ["c1"]
    assert (await api(nc, "operate", groupKey=g, message={"event": "assign", "id": "c1"})).success
    assert badge.last_snapshot()[0]["owner"] == "console"
    bad = await api(nc, "operate", groupKey=g, message={"event": "update", "tasks": [{"id": 5}]})
    assert bad.status == 400 and bad.error == "message.tasks[0].id: expected a string"
    nf = await api(nc, "operate", groupKey=g, message={"event": "complete", "ids": ["zz"]})
    assert nf.status == 404 and "'zz'" in (nf.error or "")
    assert (await api(nc, "operate", message={"event": "list"})).status == 400


async def test_import_from_meeting_makes_tasks_once(workflow: Any, gw: Any, nc: NATS) -> None:
    meetings = MeetingStandIn(
        {
            "old": summary(["Old action"], []),
            "m42": summary(["Send the report", "Book the room"], ["Plan the demo"]),
        }
    )
    await meetings.start(nc)
    try:
        g = support.group_name()
        badge = await gw.badge(support.device_in(g), g)
        reply = await api(nc, "import_from_meeting", groupKey=g)  # default: the most recent
        assert reply.success, reply
        expected = ["MEET-m42-A1", "MEET-m42-A2", "MEET-m42-N1"]
        assert reply.data == {"imported": 3, "ids": expected, "sessionId": "m42"}
        snap = badge.last_snapshot()
        assert [t["id"] for t in snap] == expected
        assert [t["title"] for t in snap] == ["Send the report", "Book the room", "Plan the demo"]
        assert snap[0]["source"] == "meeting" and snap[0]["sessionId"] == "m42"
        # the team works on them; importing again changes nothing and pushes nothing
        await gw.send(badge, {"event": "complete", "ids": ["MEET-m42-A1"]})
        pushes = len(badge.frames)
        again = await api(nc, "import_from_meeting", {"groupKey": g, "sessionId": "m42"})
        assert again.data == {"imported": 0, "ids": expected, "sessionId": "m42"}
        assert len(badge.frames) == pushes
        listed = await api(nc, "list", {"groupKey": g})
        assert listed.data["items"][0]["status"] == "done"
        # an older meeting by id, as a query parameter
        older = await api(nc, "import_from_meeting", {"groupKey": g, "sessionId": "old"})
        assert older.data["ids"] == ["MEET-old-A1"] and older.data["imported"] == 1
        nf = await api(nc, "import_from_meeting", groupKey=g, sessionId="nope")
        assert nf.status == 404
        assert (await api(nc, "import_from_meeting")).status == 400
        assert [c.op for c in meetings.calls[:2]] == ["recent", "detail"]
    finally:
        await meetings.stop()


async def test_import_with_no_meetings_or_no_meeting_service(workflow: Any, nc: NATS) -> None:
    g = support.group_name()
    meetings = await MeetingStandIn({}).start(nc)
    try:
        reply = await api(nc, "import_from_meeting", groupKey=g)
        assert reply.success and reply.data["imported"] == 0 and reply.data["ids"] == []
    finally:
        await meetings.stop()
    workflow.settings.nats.request_timeout_s = 0.5
    down = await api(nc, "import_from_meeting", groupKey=g)
    assert down.status == 503 and down.error == "the meeting service is unavailable"
