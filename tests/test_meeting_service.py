"""The meeting service as the gateway drives it over NATS (request/reply, docs/dataflow.md), with
two replicas wherever concurrency matters: transcript pushes and their hot reload, lease
fail-over, 50 concurrent finalizes of one meeting, snippets racing a finalize, a replica killed
mid-finalize, retention of 130 meetings, the HTTP API operations, reconnect and checkpoints."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from redis.asyncio import Redis
from supie_common.contracts import ConfigUpdated, Subjects, encode, new_id
from supie_meeting.keys import MeetingKeys


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
Badge, api, until, replicas = bus.Badge, bus.api, bus.until, bus.replicas
SEVEN = ("title", "duration", "bullets", "decisions", "actions", "risks", "nextSteps")


def _fields(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: summary[k] for k in (*SEVEN, "sourceSegments", "checkpoint")}


# -- pushes, hot reload, lease fail-over ---------------------------------------------------------
@pytest.mark.slow  # kills and waits: `make test-slow`
@pytest.mark.timeout(90)
async def test_transcript_pushes_hot_reload_and_lease_failover(
    spawn_service: Any, nc: NATS, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("meeting:\n  transcript_push_interval_ms: 1000\n")  # clamped to 3000
    procs = await replicas(spawn_service, nc, 2)
    badge = await Badge(nc).listen()
    m = await badge.start()
    for i in range(3):
        await badge.say(f"first words {i}")
    pushes: list[tuple[float, dict[str, Any]]] = []
    seen = 0

    def collect() -> list[tuple[float, dict[str, Any]]]:
        nonlocal seen
        for frame in badge.pushed[seen:]:
            if frame.get("phase") == "transcript":
                pushes.append((time.monotonic(), frame))
        seen = len(badge.pushed)
        return pushes

    first = (await until(collect, 6))[0][1]
    assert [i["text"] for i in first["items"]] == [f"first words {i}" for i in range(3)]
    assert first["totalSegments"] == 3 and first["items"][0]["speakerId"] == badge.device_id[:8]
    assert first["items"][0]["tag"] == "ASR"
    await until(lambda: len(collect()) >= 2, 5)
    assert pushes[1][1]["items"] == [] and pushes[1][1]["totalSegments"] == 3  # even if empty

    config.write_text("meeting:\n  transcript_push_interval_ms: 5000\n")
    await nc.publish(Subjects.CONFIG_UPDATED, encode(ConfigUpdated(source="file")))
    await until(lambda: all("next interval=5000ms" in p.log() for p in procs), 10)
    n = len(pushes)
    await until(lambda: len(collect()) >= n + 2, 14)
    times = [t for t, _ in pushes]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(2.5 < g < 3.8 for g in gaps[:2]), gaps
    assert 4.4 < gaps[-1] < 5.9, gaps  # the new interval applies from the next cycle

    # Kill the replica running the timers: the other takes the lease over and pushes on.
    holder = next(p for p in procs if f"meeting {m}: timers running here" in p.log())
    other = next(p for p in procs if p is not holder)
    holder.kill()
    await badge.say("after the fail-over")
    n = len(pushes)
    await until(
        lambda: any(
            i["text"] == "after the fail-over" for _, p in collect()[n:] for i in p["items"]
        ),
        20,
    )
    assert f"meeting {m}: timers running here" in other.log()


# -- finalize ------------------------------------------------------------------------------------
@pytest.mark.timeout(90)
async def test_fifty_concurrent_finalizes_one_summary(
    spawn_service: Any, nc: NATS, redis: Redis, tmp_path: Path
) -> None:
    procs = await replicas(spawn_service, nc, 2, {"SUPIE_MEETING__FINALIZE_PER_MINUTE": "100"})
    badge = await Badge(nc).listen()
    m = await badge.start()
    texts = [f"We decided to ship feature {i} next week." for i in range(60)]
    for t in texts:
        await badge.say(t)
    replies = await asyncio.gather(*(badge.finalize() for _ in range(50)))
    acks = [r[0] for r in replies]
    assert all(a["phase"] == "finalize" and a["sessionId"] == m for a in acks)
    assert sum(1 for a in acks if not a.get("idempotent")) == 1
    summaries = await badge.wait(lambda: badge.of("summary"), 30)
    pushed = [f for f in badge.pushed if f.get("phase") == "summary"]
    assert len(pushed) == 1 and not pushed[0].get("idempotent")  # one summary sent
    assert all(_fields(s) == _fields(pushed[0]) for s in summaries)  # replies: the same one
    assert pushed[0]["sourceSegments"] == 60 and pushed[0]["checkpoint"] is False
    await until(lambda: any(f.get("final") for f in badge.pushed), 10)
    meta = await redis.hgetall(MeetingKeys.meta(m))
    assert meta["generations"] == "1" and meta["commits"] == "1"
    logs = "".join(p.log() for p in procs)
    assert logs.count(f"summary generation #1 meeting={m}") == 1
    assert f"summary generation #2 meeting={m}" not in logs
    assert all(f"finalize request meeting={m}" in p.log() for p in procs)  # both served some
    tail = next(f for f in badge.pushed if f.get("final"))
    assert [i["text"] for i in tail["items"]] == texts[-50:] and tail["totalSegments"] == 60
    # ACK, then summary, then transcript tail.
    order = [f.get("phase") for f in badge.received]
    assert order.index("finalize") < order.index("summary")
    assert badge.pushed.index(pushed[0]) < badge.pushed.index(tail)
    events = await bus.finalized_events(nc, {m}, settle=1.0)
    assert len(events[m]) == 1 and events[m][0].summary.title == pushed[0]["title"]
    assert events[m][0].fence == 1
    await until(lambda: (bus.archive_root(tmp_path) / "metrics.log").exists(), 10)
    assert bus.archived(tmp_path, m)["summary"]["bullets"] == pushed[0]["bullets"]
    # After it the device has no meeting, but a finalize repeated soon after (its ACK may have
    # been lost) gets the same ACK and summary, marked idempotent (SPEC §6); so does the API.
    ack, repeated = await badge.finalize()
    assert ack["sessionId"] == m and ack["idempotent"] is True
    assert repeated["phase"] == "summary" and repeated["idempotent"] is True
    assert repeated["title"] == pushed[0]["title"] and "code" not in ack
    again = await api(nc, "finalize", sessionId=m)
    assert again.data["idempotent"] is True and again.data["summary"]["title"] == pushed[0]["title"]


@pytest.mark.timeout(90)
async def test_snippets_racing_finalize_never_enter_the_archive(
    spawn_service: Any, nc: NATS, tmp_path: Path
) -> None:
    await replicas(
        spawn_service,
        nc,
        2,
        {"SUPIE_MEETING__SNIPPETS_PER_SECOND": "100000", "SUPIE_MEETING__MAX_PENDING": "100000"},
    )
    badge = await Badge(nc).listen()
    m = await badge.start()
    finalized = asyncio.Event()
    acks: dict[str, dict[str, Any]] = {}

    async def snippets(first: int, last: int) -> None:
        for i in range(first, last):
            acks[f"racing snippet {i}"] = await badge.snippet(f"racing snippet {i}")
            if i % 2:
                await badge.say(f"racing speech {i}")

    async def finalize() -> None:
        await asyncio.sleep(0.3)
        await badge.finalize()
        finalized.set()

    # Three "connections" race the finalize (the gateway serialises per socket; replicas and
    # several paths need not be).
    await asyncio.gather(snippets(0, 100), snippets(100, 200), snippets(200, 300), finalize())
    await finalized.wait()
    late = [await badge.snippet(f"late snippet {i}") for i in range(20)]
    events = await bus.finalized_events(nc, {m})
    texts = bus.archived_texts(tmp_path, m)
    assert not any(t.startswith("late") for t in texts)
    assert all(a.get("ignored") or a.get("code") == "NO_ACTIVE_MEETING" for a in late)
    accepted = {t for t, a in acks.items() if a.get("accepted") == 1}
    # after the ACK: ignored while finalizing, then the device has no meeting any more
    refused = {
        t for t, a in acks.items() if a.get("ignored") or a.get("code") == "NO_ACTIVE_MEETING"
    }
    assert accepted | refused == set(acks) and accepted and refused
    # Exactly the snippets acknowledged as accepted made it; every ignored one stayed out.
    assert {t for t in texts if t.startswith("racing snippet")} == accepted
    assert any(a.get("ignored") for a in acks.values())
    assert any(a.get("ignored") for a in acks.values())
    assert events[m][0].metrics["segmentsCount"] == len(texts)


class _SlowLlm(BaseHTTPRequestHandler):
    calls: list[float] = []
    delay_s = 2.5

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        _SlowLlm.calls.append(time.monotonic())
        n = len(_SlowLlm.calls)
        time.sleep(_SlowLlm.delay_s)
        content = json.dumps(
            {
                "title": f"Slow but sure #{n}",
                "bullets": ["Shipping is agreed"],
                "decisions": ["Ship it"],
                "actions": [],
                "risks": [],
                "nextSteps": [],
            }
        )
        body = json.dumps({"choices": [{"message": {"content": content}}]}).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the caller was killed


@pytest.fixture
def slow_llm() -> Iterator[str]:
    _SlowLlm.calls.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowLlm)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


@pytest.mark.timeout(90)
async def test_replica_killed_mid_finalize_meeting_still_completes(
    spawn_service: Any, nc: NATS, redis: Redis, tmp_path: Path, slow_llm: str
) -> None:
    env = {
        "SUPIE_LLM__FAKE__BASE_URL": slow_llm,
        "SUPIE_LLM_BY_MODE__MEETING": "fake",
        "SUPIE_MEETING__FINALIZE_LOCK_MS": "1500",
        "SUPIE_MEETING__LLM_TIMEOUT_S": "10",
    }
    procs = await replicas(spawn_service, nc, 2, env)
    badge = await Badge(nc).listen()
    m = await badge.start()
    for i in range(5):
        await badge.say(f"we will ship part {i}")
    await badge.finalize()
    await until(lambda: _SlowLlm.calls, 10)  # a replica is inside the LLM call now
    generating = next(p for p in procs if f"summary generation #1 meeting={m}" in p.log())
    generating.kill()
    survivor = next(p for p in procs if p is not generating)
    summary = (await badge.wait(lambda: badge.of("summary"), 30))[0]
    assert summary["title"] == "Slow but sure #2" and summary["decisions"] == ["Ship it"]
    assert f"summary generation #2 meeting={m}" in survivor.log()
    assert "finalize pending without a holder" in survivor.log()
    events = await bus.finalized_events(nc, {m})
    assert events[m][0].summary.title == "Slow but sure #2" and events[m][0].fence == 2
    assert bus.archived(tmp_path, m)["sourceSegments"] == 5
    meta = await redis.hgetall(MeetingKeys.meta(m))
    assert meta["status"] == "finalized" and meta["generations"] == "2" and meta["commits"] == "1"


# -- retention -----------------------------------------------------------------------------------
@pytest.mark.slow  # about 65 s on 2 cores
@pytest.mark.timeout(180)
async def test_130_meetings_index_keeps_100_and_removes_older_files(
    spawn_service: Any, nc: NATS, tmp_path: Path
) -> None:
    await replicas(spawn_service, nc, 2, {"SUPIE_MEETING__FINALIZE_PER_MINUTE": "1000"})
    badge = await Badge(nc).listen()
    ids: list[str] = []
    with_shards: set[str] = set()

    async def run(count: int) -> list[str]:
        batch = []
        for _ in range(count):
            m = await badge.start()
            n = 130 if len(ids) + len(batch) in (0, 5, 129) else 2
            if n > 2:
                with_shards.add(m)
            for i in range(n):
                await badge.say(f"{m} words {i}")
            await badge.finalize()
            batch.append(m)
        return batch

    ids += await run(30)
    await bus.finalized_events(nc, set(ids), 60)
    ids += await run(100)
    events = await bus.finalized_events(nc, set(ids), 90)
    assert set(events) == set(ids)
    root = bus.archive_root(tmp_path)
    keep = set(ids[30:])

    def settled() -> bool:  # retention runs off the request path
        mains = {p.stem for p in root.glob("*.json")} - {"index"}
        return mains == keep

    await until(settled, 20, lambda: len(list(root.glob("*.json"))))
    index = json.loads((root / "index.json").read_text())
    assert len(index) == 100 and {e["sessionId"] for e in index} == keep
    ended = [e["endedAt"] for e in index]
    assert ended == sorted(ended, reverse=True)
    shards = {p.name.split("_shard_")[0] for p in (root / "segments").glob("*.json")}
    assert shards == with_shards & keep
    assert len((root / "metrics.log").read_text().splitlines()) == 130


# -- HTTP API ------------------------------------------------------------------------------------
@pytest.mark.timeout(90)
async def test_api_recent_detail_transcript_and_bad_params(
    spawn_service: Any, nc: NATS, tmp_path: Path
) -> None:
    await replicas(spawn_service, nc, 1)
    badge = await Badge(nc, f"api:{new_id()[:8]}").listen()
    big = await badge.start()
    for i in range(250):
        await badge.say(f"line {i}")
    await badge.finalize()
    await bus.finalized_events(nc, {big})  # big ends first
    small = await badge.start()
    await badge.say("only line")
    await badge.finalize()
    await bus.finalized_events(nc, {small})

    recent = await api(nc, "recent", deviceId=badge.device_id[:6].upper())
    assert [e["sessionId"] for e in recent.data] == [small, big]
    assert [e["sessionId"] for e in (await api(nc, "recent", limit="1")).data] == [small]
    assert (await api(nc, "recent", deviceId="nobody")).data == []
    for params, name in [
        ({"limit": "abc"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"fromTs": "x"}, "fromTs"),
    ]:
        reply = await api(nc, "recent", **params)
        assert reply.status == 400 and not reply.success and name in (reply.error or "")

    detail = await api(nc, "detail", sessionId=big)
    assert detail.success and detail.data["segmentsCount"] == 250 and detail.data["hasShards"]
    assert len(detail.data["transcriptPreview"]) == 5
    assert set(detail.data["summary"]) == set(SEVEN)
    assert detail.data["deviceId"] == badge.device_id and detail.data["metrics"]["segmentsCount"]
    for preview, expected in [("100", 20), ("0", 1), ("-3", 1), ("7", 7)]:
        d = await api(nc, "detail", sessionId=big, preview=preview)
        assert len(d.data["transcriptPreview"]) == expected
    bad = await api(nc, "detail", sessionId=big, preview="many")
    assert bad.status == 400 and "preview" in (bad.error or "")
    assert (await api(nc, "detail", sessionId="nope")).status == 404
    assert (await api(nc, "detail", sessionId="../../etc/passwd")).status == 400
    assert (await api(nc, "detail")).status == 400

    page = (await api(nc, "transcript", sessionId=big, offset="95", limit="10")).data
    assert [i["text"] for i in page["items"]] == [f"line {i}" for i in range(95, 105)]
    assert page["total"] == 250 and page["offset"] == 95 and page["limit"] == 10
    assert page["nextOffset"] == 105
    assert len((await api(nc, "transcript", sessionId=big)).data["items"]) == 100
    last = (await api(nc, "transcript", sessionId=big, offset=200, limit=500)).data
    assert len(last["items"]) == 50 and last["nextOffset"] is None
    out = (await api(nc, "transcript", sessionId=big, offset=999)).data
    assert out["items"] == [] and out["total"] == 250
    assert (await api(nc, "transcript", sessionId=small)).data["items"][0]["text"] == "only line"
    for params, name in [
        ({"offset": "-1"}, "offset"),
        ({"limit": "501"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"offset": "1.5"}, "offset"),
    ]:
        reply = await api(nc, "transcript", sessionId=big, **params)
        assert reply.status == 400 and name in (reply.error or "")
    assert (await api(nc, "nonsense")).status == 400

    again = await api(nc, "finalize", sessionId=big)
    assert again.success and again.data["idempotent"] is True
    assert again.data["summary"]["title"] == detail.data["summary"]["title"]
    assert (await api(nc, "finalize", sessionId=new_id())).status == 404
    assert (await api(nc, "finalize", deviceId=badge.device_id)).status == 404  # none active

    # HTTP finalize of a live meeting (by device): the badge gets the summary too.
    live = await badge.start()
    await badge.say("we decided to finalize over http")
    reply = await api(nc, "finalize", deviceId=badge.device_id)
    assert reply.status == 200 and reply.data["status"] == "finalized"
    assert reply.data["sessionId"] == live
    assert reply.data["summary"]["decisions"] == ["we decided to finalize over http"]
    await badge.wait(lambda: badge.of("summary", sessionId=live))


@pytest.mark.timeout(60)
async def test_reconnect_resumes_the_meeting_and_checkpoints(spawn_service: Any, nc: NATS) -> None:
    await replicas(
        spawn_service,
        nc,
        1,
        {
            "SUPIE_MEETING__CHECKPOINT_INTERVAL_MIN": "0.05",
            "SUPIE_MEETING__TRANSCRIPT_PUSH_INTERVAL_MS": "3000",
        },
    )
    badge = await Badge(nc).listen()
    m = await badge.start()
    await badge.say("We decided to resume meetings after a reconnect.")
    # Checkpoint summaries (every 0.05 min = 3 s here) carry checkpoint:true.
    checkpoint = (await badge.wait(lambda: badge.of("summary", checkpoint=True), 15))[0]
    assert checkpoint["sourceSegments"] == 1 and checkpoint["decisions"] == [
        "We decided to resume meetings after a reconnect."
    ]
    assert checkpoint["sessionId"] == m
    badge.session_id = new_id()  # a new WebSocket session, same meeting
    reply = await badge.state()
    resumed = json.loads(reply.frames[0])
    assert resumed["sessionId"] == m and resumed["totalSegments"] == 1 and resumed["resumed"]
    await badge.say("after the reconnect")
    await badge.control("end", "mode_end")
    summary = (await badge.wait(lambda: badge.of("summary", checkpoint=False)))[0]
    assert summary["sourceSegments"] == 2 and summary["sessionId"] == m
