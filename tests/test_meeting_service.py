"""The meeting service as the gateway drives it over NATS, with two replicas wherever concurrency
matters: snippets (validation, limits, dedup), transcript pushes and their hot reload, lease
fail-over, 50 concurrent finalizes, snippets racing a finalize, a replica killed mid-finalize,
retention of 130 meetings, and the HTTP API operations."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.js.api import DeliverPolicy
from redis.asyncio import Redis
from supie_common.contracts import (
    ApiReply,
    ConfigUpdated,
    DeviceInbound,
    DeviceOutbound,
    MeetingApiRequest,
    MeetingFinalized,
    ModeChanged,
    Subjects,
    Transcript,
    decode,
    encode,
    new_id,
    now_ms,
)
from supie_meeting.state import MeetingKeys

Spawn = Callable[..., Any]


class Device:
    """The bus side of one badge: what the gateway would publish for it, and what it receives."""

    def __init__(self, nc: NATS, device_id: str | None = None) -> None:
        self.nc = nc
        self.device_id = device_id or f"aa:bb:{new_id()[:4]}:{new_id()[:4]}"
        self.session_id = new_id()
        self.received: list[dict[str, Any]] = []
        self.times: list[float] = []
        self._ts = 0

    async def listen(self) -> Device:
        async def cb(msg: Any) -> None:
            out = decode(DeviceOutbound, msg.data)
            if out.message is not None:
                self.received.append(out.message)
                self.times.append(time.monotonic())

        await self.nc.subscribe(Subjects.device_out(self.device_id), cb=cb)
        await self.nc.flush()
        return self

    def env(self) -> dict[str, str]:
        return {"device_id": self.device_id, "session_id": self.session_id, "gateway_id": "gw-t"}

    async def start(self, meeting_id: str) -> None:
        await self.nc.publish(
            Subjects.MODE_CHANGED,
            encode(ModeChanged(**self.env(), state="start", mode="meeting", meeting_id=meeting_id)),
        )

    async def say(self, meeting_id: str, text: str) -> None:
        # Real utterances are seconds apart; keep their timestamps distinct and increasing.
        self._ts = max(self._ts + 1, now_ms())
        await self.nc.publish(
            Subjects.MEETING_TRANSCRIPT,
            encode(
                Transcript(
                    **self.env(),
                    stream_id="s",
                    utterance_id=new_id(),
                    text=text,
                    start_ms=0,
                    end_ms=1000,
                    meeting_id=meeting_id,
                    ts_ms=self._ts,
                )
            ),
        )

    async def send(self, meeting_id: str | None, message: dict[str, Any]) -> None:
        await self.nc.publish(
            Subjects.MEETING_INBOUND,
            encode(
                DeviceInbound(**self.env(), mode="meeting", meeting_id=meeting_id, message=message)
            ),
        )

    async def snippet(self, meeting_id: str, *texts: str) -> None:
        await self.send(
            meeting_id,
            {
                "type": "meeting",
                "phase": "snippet",
                "items": [{"tag": "note", "text": t} for t in texts],
            },
        )

    async def finalize(self, meeting_id: str) -> None:
        await self.send(meeting_id, {"type": "meeting", "phase": "finalize"})

    def of(self, phase: str | None = None, **match: Any) -> list[dict[str, Any]]:
        return [
            m
            for m in self.received
            if (phase is None or m.get("phase") == phase)
            and all(m.get(k) == v for k, v in match.items())
        ]

    async def wait(self, pred: Callable[[], Any], within: float = 15.0) -> Any:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            value = pred()
            if value:
                return value
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out; device got: {json.dumps(self.received)[-3000:]}")


async def replicas(
    spawn_service: Spawn, nc: NATS, n: int = 2, env: dict[str, str] | None = None
) -> list[Any]:
    procs = [spawn_service("supie_meeting", extra_env=env) for _ in range(n)]
    for p in procs:
        await p.wait_healthy(nc, "meeting")
    # Both must be subscribed before traffic starts (health answers come from either replica).
    deadline = time.monotonic() + 30
    while not all("meeting started as" in p.log() for p in procs):
        assert time.monotonic() < deadline, [p.log()[-2000:] for p in procs]
        await asyncio.sleep(0.05)
    return procs


async def api(nc: NATS, op: str, **params: Any) -> ApiReply:
    msg = await nc.request(
        Subjects.MEETING_API,
        encode(MeetingApiRequest(op=op, params=params)),  # type: ignore[arg-type]
        timeout=10,
    )
    return decode(ApiReply, msg.data)


async def finalized_events(
    nc: NATS, wanted: set[str], within: float = 30.0
) -> dict[str, MeetingFinalized]:
    js = nc.jetstream()
    found: dict[str, MeetingFinalized] = {}
    sub = await js.subscribe(
        Subjects.MEETING_FINALIZED, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    deadline = time.monotonic() + within
    try:
        while not wanted <= set(found) and time.monotonic() < deadline:
            try:
                msg = await sub.next_msg(timeout=0.5)
            except Exception:
                continue
            ev = decode(MeetingFinalized, msg.data)
            if ev.session_id in wanted:
                found[ev.session_id] = ev
    finally:
        await sub.unsubscribe()
    return found


def _fields(summary: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "title",
        "duration",
        "bullets",
        "decisions",
        "actions",
        "risks",
        "nextSteps",
        "sourceSegments",
        "checkpoint",
    )
    return {k: summary[k] for k in keys}


def _archive(tmp_path: Path, m: str) -> dict[str, Any]:
    return json.loads((tmp_path / "data" / "meetings" / f"{m}.json").read_text())


def _archived_texts(tmp_path: Path, m: str) -> list[str]:
    segs = _archive(tmp_path, m)["segments"]
    if isinstance(segs, list):
        return [s["text"] for s in segs]
    texts: list[str] = []
    for k in range(segs["shardCount"]):
        shard = tmp_path / "data" / "meetings" / "segments" / f"{m}_shard_{k}.json"
        texts += [s["text"] for s in json.loads(shard.read_text())["segments"]]
    return texts


async def _wait_file(path: Path, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(path.exists):
        assert time.monotonic() < deadline, f"{path} not written"
        await asyncio.sleep(0.05)


# -- snippets ------------------------------------------------------------------------------------
async def test_snippet_validation_limits_and_dedup(
    spawn_service: Spawn, nc: NATS, redis: Redis
) -> None:
    # Pushes every 15 s: no push empties the pending window while this test fills it.
    await replicas(
        spawn_service,
        nc,
        1,
        {"SUPIE_MEETING__MAX_PENDING": "15", "SUPIE_MEETING__TRANSCRIPT_PUSH_INTERVAL_MS": "15000"},
    )
    dev = await Device(nc).listen()
    m = new_id()
    await dev.start(m)
    bad = [
        ({"items": "x"}, "items: expected a non-empty array of {tag,text,speakerId?}"),
        ({"items": [{"tag": "a", "text": " "}]}, "items[0].text: expected a non-empty string"),
        (
            {"items": [{"tag": "a", "text": "t"}, 7]},
            "items[1]: expected an object {tag,text,speakerId?}",
        ),
        (
            {"items": [{"tag": "a", "text": "t", "speakerId": 1}]},
            "items[0].speakerId: expected a string",
        ),
    ]
    for message, _ in bad:
        await dev.send(m, {"type": "meeting", "phase": "snippet", **message})
    await dev.send(m, {"type": "meeting", "phase": "bogus"})
    errors = await dev.wait(
        lambda: len(dev.of(None, status="error")) == 5 and dev.of(None, status="error")
    )
    assert [e["message"] for e in errors[:4]] == [b for _, b in bad]
    assert {e["code"] for e in errors} == {"SCHEMA_INVALID"}
    assert await redis.llen(MeetingKeys.segments(m)) == 0  # bad input stored nothing

    long_zh = "会" * 1000  # 3000 bytes of UTF-8
    await dev.snippet(m, "hello", long_zh)
    await dev.snippet(m, "hello")  # same text within 60 s: dropped
    acks = await dev.wait(
        lambda: len(dev.of("snippet", status="ok")) == 2 and dev.of("snippet", status="ok")
    )
    assert acks[0]["accepted"] == 2 and acks[1]["accepted"] == 0 and acks[1]["duplicates"] == 1
    stored = [json.loads(s) for s in await redis.lrange(MeetingKeys.segments(m), 0, -1)]
    assert stored[1]["text"] == "会" * 682 and stored[1]["speakerId"] == dev.device_id[:8]

    # 12 items in one second from one device: 10 pass, 2 dropped (a fresh device, fresh budget).
    dev2 = await Device(nc).listen()
    m2 = new_id()
    await dev2.start(m2)
    await dev2.snippet(m2, *[f"rate {i}" for i in range(12)])
    ack = (await dev2.wait(lambda: dev2.of("snippet")))[0]
    assert ack["accepted"] == 10 and ack["dropped"] == 2 and ack["reason"] == "rate_limited"
    await dev2.snippet(m2, "one more in the same second")
    await dev2.wait(lambda: dev2.of(None, code="RATE_LIMITED") or len(dev2.of("snippet")) > 1)
    # If the second rolled over before it arrived, that extra item was accepted (pending 11).
    extra = dev2.of("snippet")[1].get("accepted", 0) if len(dev2.of("snippet")) > 1 else 0
    # Pending cap (15 here): the next second's 10 items only fit 5 (or 4).
    await asyncio.sleep(1.05)
    await dev2.snippet(m2, *[f"pending {i}" for i in range(10)])
    ack = (
        await dev2.wait(
            lambda: [a for a in dev2.of("snippet") if a.get("reason") == "pending_full"]
        )
    )[0]
    assert ack["accepted"] == 5 - extra and ack["dropped"] == 5 + extra
    assert await redis.llen(MeetingKeys.segments(m2)) == 15


# -- pushes, hot reload, lease fail-over ---------------------------------------------------------
@pytest.mark.timeout(90)
async def test_transcript_pushes_hot_reload_and_lease_failover(
    spawn_service: Spawn, nc: NATS, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("meeting:\n  transcript_push_interval_ms: 1000\n")  # clamped to 3000
    procs = await replicas(spawn_service, nc, 2)
    dev = await Device(nc).listen()
    m = new_id()
    await dev.start(m)
    for i in range(3):
        await dev.say(m, f"first words {i}")
    pushes = lambda: dev.of("transcript")  # noqa: E731
    first = (await dev.wait(lambda: pushes(), 6))[0]
    assert [i["text"] for i in first["items"]] == [f"first words {i}" for i in range(3)]
    assert first["totalSegments"] == 3 and first["items"][0]["speakerId"] == dev.device_id[:8]
    await dev.wait(lambda: len(pushes()) >= 2, 5)
    assert pushes()[1]["items"] == [] and pushes()[1]["totalSegments"] == 3  # sent even if empty

    config.write_text("meeting:\n  transcript_push_interval_ms: 5000\n")
    await nc.publish(Subjects.CONFIG_UPDATED, encode(ConfigUpdated(source="file")))
    await dev.wait(lambda: all("next interval=5000ms" in p.log() for p in procs), 5)
    n = len(pushes())
    await dev.wait(lambda: len(pushes()) >= n + 2, 14)
    times = [
        t
        for msg, t in zip(dev.received, dev.times, strict=True)
        if msg.get("phase") == "transcript"
    ]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(2.5 < g < 3.8 for g in gaps[:2]), gaps
    assert 4.4 < gaps[-1] < 5.9, gaps  # the new interval applies from the next cycle

    # Kill the replica running the timers: the other takes the lease over and pushes on.
    holder = next(p for p in procs if f"meeting {m}: timers running here" in p.log())
    other = next(p for p in procs if p is not holder)
    holder.kill()
    await dev.say(m, "after the fail-over")
    n = len(pushes())
    await dev.wait(
        lambda: (
            len(pushes()) > n
            and any(i["text"] == "after the fail-over" for p in pushes()[n:] for i in p["items"])
        ),
        14,
    )
    assert f"meeting {m}: timers running here" in other.log()


# -- finalize ------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
async def test_fifty_concurrent_finalizes_one_summary(
    spawn_service: Spawn, nc: NATS, redis: Redis, tmp_path: Path
) -> None:
    procs = await replicas(spawn_service, nc, 2)
    dev = await Device(nc).listen()
    m = new_id()
    await dev.start(m)
    texts = [f"We decided to ship feature {i} next week." for i in range(60)]
    for t in texts:
        await dev.say(m, t)
    await nc.flush()
    deadline = time.monotonic() + 5
    while await redis.llen(MeetingKeys.segments(m)) < 60:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    t0 = time.monotonic()
    for _ in range(50):
        await dev.finalize(m)
    acks = await dev.wait(lambda: len(dev.of("finalize")) == 50 and dev.of("finalize"))
    assert all(a["sessionId"] == m and a["startedAt"] > 0 for a in acks)
    summaries = await dev.wait(lambda: len(dev.of("summary")) == 50 and dev.of("summary"), 20)
    first = [s for s in summaries if not s.get("idempotent")]
    assert len(first) == 1, first
    assert sum(1 for s in summaries if s.get("idempotent") is True) == 49
    assert all(_fields(s) == _fields(first[0]) for s in summaries)
    assert first[0]["sourceSegments"] == 60 and first[0]["checkpoint"] is False
    assert await redis.get(MeetingKeys.generations(m)) == "1"
    logs = "".join(p.log() for p in procs)
    assert logs.count(f"summary generation #1 meeting={m}") == 1
    assert logs.count(f"summary generation #2 meeting={m}") == 0
    assert all(f"finalize request meeting={m}" in p.log() for p in procs)  # both served some
    assert time.monotonic() - t0 < 15
    tail = await dev.wait(lambda: dev.of("transcript", final=True))
    assert [i["text"] for i in tail[0]["items"]] == texts[-50:]
    assert tail[0]["totalSegments"] == 60
    # ACK, then summary, then transcript tail, in that order for the generating request.
    order = [msg.get("phase") for msg in dev.received]
    assert (
        order.index("finalize")
        < order.index("summary")
        < next(i for i, msg in enumerate(dev.received) if msg.get("final"))
    )
    events = await finalized_events(nc, {m})
    assert events[m].summary["title"] == first[0]["title"]
    await _wait_file(tmp_path / "data" / "meetings" / "metrics.log")
    assert _archive(tmp_path, m)["summary"]["bullets"] == first[0]["bullets"]
    # Later finalize of a finished meeting: same summary, idempotent.
    await dev.finalize(m)
    await dev.wait(lambda: len(dev.of("summary")) == 51)
    assert dev.of("summary")[-1]["idempotent"] is True
    assert _fields(dev.of("summary")[-1]) == _fields(first[0])


@pytest.mark.timeout(60)
async def test_snippets_racing_finalize_never_enter_the_archive(
    spawn_service: Spawn, nc: NATS, tmp_path: Path
) -> None:
    await replicas(
        spawn_service,
        nc,
        2,
        {"SUPIE_MEETING__SNIPPETS_PER_SECOND": "100000", "SUPIE_MEETING__MAX_PENDING": "100000"},
    )
    dev = await Device(nc).listen()
    m = new_id()
    await dev.start(m)
    for i in range(300):
        await dev.snippet(m, f"racing snippet {i}")
        if i % 2:
            await dev.say(m, f"racing speech {i}")
        if i == 150:
            await dev.finalize(m)
    await dev.wait(lambda: dev.of("finalize"))
    for i in range(20):  # clearly after the ACK
        await dev.snippet(m, f"late snippet {i}")
        await dev.say(m, f"late speech {i}")
    acks = await dev.wait(lambda: len(dev.of("snippet")) == 320 and dev.of("snippet"))
    await _wait_file(tmp_path / "data" / "meetings" / f"{m}.json")
    archived = _archive(tmp_path, m)
    texts = _archived_texts(tmp_path, m)
    assert not any(t.startswith("late") for t in texts)  # nothing after the ACK got in
    assert all(a["sessionId"] == m for a in acks)
    ignored = sum(1 for a in acks if a.get("ignored"))
    accepted = sum(a.get("accepted", 0) for a in acks)
    snippets_in = {t for t in texts if t.startswith("racing snippet")}
    # Exactly the snippets acknowledged as accepted made it; every ignored one stayed out.
    assert ignored >= 20 and accepted == len(snippets_in) == 320 - ignored
    assert archived["sourceSegments"] == len(texts)
    assert archived["summary"]["title"]


class _SlowLlm(BaseHTTPRequestHandler):
    calls: list[float] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        _SlowLlm.calls.append(time.monotonic())
        time.sleep(2.5)
        content = json.dumps(
            {
                "title": "Slow but sure",
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
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowLlm)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


@pytest.mark.timeout(60)
async def test_replica_killed_mid_finalize_meeting_still_completes(
    spawn_service: Spawn, nc: NATS, redis: Redis, tmp_path: Path, slow_llm: str
) -> None:
    env = {
        "SUPIE_LLM__FAKE__BASE_URL": slow_llm,
        "SUPIE_LLM_BY_MODE__MEETING": "fake",
        "SUPIE_MEETING__FINALIZE_LOCK_MS": "1500",
        "SUPIE_MEETING__LLM_TIMEOUT_S": "10",
    }
    procs = await replicas(spawn_service, nc, 2, env)
    dev = await Device(nc).listen()
    m = new_id()
    await dev.start(m)
    for i in range(5):
        await dev.say(m, f"we will ship part {i}")
    await asyncio.sleep(0.3)
    _SlowLlm.calls.clear()
    await dev.finalize(m)
    await dev.wait(lambda: dev.of("finalize"))
    await dev.wait(lambda: _SlowLlm.calls, 5)  # a replica is inside the LLM call now
    generating = next(p for p in procs if f"summary generation #1 meeting={m}" in p.log())
    generating.kill()
    survivor = next(p for p in procs if p is not generating)
    summary = (await dev.wait(lambda: dev.of("summary"), 20))[0]
    assert summary["title"] == "Slow but sure" and summary["decisions"] == ["Ship it"]
    assert f"summary generation #2 meeting={m}" in survivor.log()
    assert "finalize pending without a holder" in survivor.log()
    events = await finalized_events(nc, {m})
    assert events[m].summary["title"] == "Slow but sure"
    await _wait_file(tmp_path / "data" / "meetings" / f"{m}.json")
    assert _archive(tmp_path, m)["sourceSegments"] == 5
    assert await redis.hget(MeetingKeys.meta(m), "status") == "finalized"


# -- retention -----------------------------------------------------------------------------------
@pytest.mark.timeout(120)
async def test_130_meetings_index_keeps_100_and_removes_older_files(
    spawn_service: Spawn, nc: NATS, tmp_path: Path
) -> None:
    await replicas(spawn_service, nc, 2)
    dev = await Device(nc).listen()
    ids = [f"ret{i:03d}{new_id()[:8]}" for i in range(130)]
    with_shards = {ids[0], ids[5], ids[129]}

    async def run(batch: list[str]) -> None:
        for m in batch:
            await dev.start(m)
            for i in range(130 if m in with_shards else 2):
                await dev.say(m, f"{m} words {i}")
        await nc.flush()
        await asyncio.sleep(0.5)
        for m in batch:
            await dev.finalize(m)

    await run(ids[:30])
    await finalized_events(nc, set(ids[:30]), 60)
    await run(ids[30:])
    events = await finalized_events(nc, set(ids), 90)
    assert set(events) == set(ids)
    root = tmp_path / "data" / "meetings"
    deadline = time.monotonic() + 20
    while True:  # retention runs off the request path
        index = json.loads((root / "index.json").read_text())
        mains = {p.stem for p in root.glob("*.json")} - {"index"}
        shards = {p.name.split("_shard_")[0] for p in (root / "segments").glob("*.json")}
        if mains == set(ids[30:]) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert len(index) == 100
    assert {e["sessionId"] for e in index} == set(ids[30:])
    ended = [e["endedAt"] for e in index]
    assert ended == sorted(ended, reverse=True)
    assert mains == set(ids[30:])
    assert shards == {ids[129]}
    assert len((root / "metrics.log").read_text().splitlines()) == 130


# -- HTTP API ------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
async def test_api_recent_detail_transcript_and_bad_params(
    spawn_service: Spawn, nc: NATS, tmp_path: Path
) -> None:
    await replicas(spawn_service, nc, 1)
    dev = await Device(nc, f"api:{new_id()[:8]}").listen()
    big, small = new_id(), new_id()
    await dev.start(big)
    for i in range(250):
        await dev.say(big, f"line {i}")
    await dev.start(small)
    await dev.say(small, "only line")
    await nc.flush()
    await asyncio.sleep(0.5)
    await dev.finalize(big)
    await dev.wait(lambda: dev.of("finalize", sessionId=big))  # big ends first
    await dev.finalize(small)
    await finalized_events(nc, {big, small})

    recent = await api(nc, "recent", deviceId=dev.device_id[:6].upper())
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
    assert set(detail.data["summary"]) == {
        "title",
        "duration",
        "bullets",
        "decisions",
        "actions",
        "risks",
        "nextSteps",
    }
    assert detail.data["deviceId"] == dev.device_id and detail.data["metrics"]["segmentsCount"]
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
    assert len((await api(nc, "transcript", sessionId=big)).data["items"]) == 100
    assert (
        len((await api(nc, "transcript", sessionId=big, offset=200, limit=500)).data["items"]) == 50
    )
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

    again = await api(nc, "finalize", sessionId=big)
    assert again.success and again.data["idempotent"] is True
    assert again.data["summary"]["title"] == detail.data["summary"]["title"]
    assert (await api(nc, "finalize", sessionId=new_id())).status == 404

    # HTTP finalize of a live meeting: the device gets the ACK and the summary.
    live = new_id()
    await dev.start(live)
    await dev.say(live, "we decided to finalize over http")
    await asyncio.sleep(0.3)
    reply = await api(nc, "finalize", sessionId=live)
    assert reply.status == 200 and reply.data["status"] == "finalized"
    assert reply.data["summary"]["decisions"] == ["we decided to finalize over http"]
    await dev.wait(lambda: dev.of("summary", sessionId=live))
    assert dev.of("finalize", sessionId=live)


async def test_reconnect_resumes_the_meeting_and_checkpoints(
    spawn_service: Spawn, nc: NATS
) -> None:
    await replicas(
        spawn_service,
        nc,
        1,
        {
            "SUPIE_MEETING__CHECKPOINT_INTERVAL_MIN": "0.05",
            "SUPIE_MEETING__TRANSCRIPT_PUSH_INTERVAL_MS": "3000",
        },
    )
    dev = await Device(nc).listen()
    m = new_id()
    await dev.start(m)
    await dev.say(m, "We decided to resume meetings after a reconnect.")
    # Checkpoint summaries (every 0.05 min = 3 s here) carry checkpoint:true.
    checkpoint = (await dev.wait(lambda: dev.of("summary", checkpoint=True), 10))[0]
    assert checkpoint["sourceSegments"] == 1 and checkpoint["decisions"] == [
        "We decided to resume meetings after a reconnect."
    ]
    assert checkpoint["sessionId"] == m
    dev.session_id = new_id()  # a new WebSocket session, same meeting
    await dev.start(m)
    resumed = (await dev.wait(lambda: dev.of("transcript", resumed=True)))[0]
    assert resumed["sessionId"] == m and resumed["totalSegments"] == 1
    await dev.say(m, "after the reconnect")
    await asyncio.sleep(0.3)
    await nc.publish(
        Subjects.MODE_CHANGED,
        encode(ModeChanged(**dev.env(), state="end", mode="meeting", meeting_id=m)),
    )
    summary = (await dev.wait(lambda: dev.of("summary", checkpoint=False)))[0]
    assert summary["sourceSegments"] == 2 and summary["sessionId"] == m
