"""Issue 10 item 5: every input path (device snippets, typed text, ASR finals) goes through one
intake with the same limits, and everything the service publishes fits a bus message: 300 typed
texts of 10 KB are split across pushes under NATS's ``max_payload``, and transcript pages of more
than 1 MB are answered (truncated, with ``nextOffset``), never with a 503."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from redis.asyncio import Redis
from supie_common.contracts import (
    DeviceOutbound,
    InboundReply,
    Subjects,
    Transcript,
    decode,
    encode,
    new_id,
)
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


async def stored(redis: Redis, m: str) -> list[dict[str, Any]]:
    return [json.loads(s) for s in await redis.lrange(MeetingKeys.segments(m), 0, -1)]


@pytest.mark.timeout(90)
async def test_every_input_path_has_the_same_limits(
    spawn_service: Any, nc: NATS, redis: Redis
) -> None:
    # Pushes every 15 s: none empties the pending window while the test fills it.
    await replicas(
        spawn_service,
        nc,
        1,
        {
            "SUPIE_MEETING__MAX_PENDING": "8",
            "SUPIE_MEETING__SNIPPETS_PER_SECOND": "3",
            "SUPIE_MEETING__TRANSCRIPT_PUSH_INTERVAL_MS": "15000",
        },
    )
    # 3000 bytes of UTF-8 each: cut to 2048 bytes = 682 characters
    long_zh = ["会" * 1000, "议" * 1000, "言" * 1000]

    # The 2 KB cut, on every path.
    cut = await Badge(nc).listen()
    m = await cut.start()
    await cut.snippet(long_zh[0])
    await cut.say(long_zh[1], source="text")
    await cut.say(long_zh[2])
    texts = [s["text"] for s in await stored(redis, m)]
    assert texts == [t[:682] for t in long_zh]
    assert [s["tag"] for s in await stored(redis, m)] == ["note", "TEXT", "ASR"]

    # The rate (3 items/s per device): a snippet's items beyond it are dropped and counted ...
    rate = await Badge(nc).listen()
    m = await rate.start()
    ack = await rate.snippet(*[f"rate {i}" for i in range(12)])
    assert ack["accepted"] == 3 and ack["dropped"] == 9 and ack["reason"] == "rate_limited"
    # ... typed text over it is refused with RATE_LIMITED (12 at once span at most 2 windows) ...
    typing = await Badge(nc).listen()
    mt = await typing.start()
    replies = await asyncio.gather(*(typing.say(f"typed {i}", source="text") for i in range(12)))
    limited = [r for r in replies if r.frames]
    assert len(limited) >= 6
    assert {json.loads(r.frames[0])["code"] for r in limited} == {"RATE_LIMITED"}
    assert len(await stored(redis, mt)) == 12 - len(limited)
    # ... and speech is slowed down, never dropped: the router is asked to retry.
    speech = await Badge(nc).listen()
    ms = await speech.start()
    await asyncio.gather(*(speech.say(f"spoken {i}") for i in range(7)))
    assert sorted(s["text"] for s in await stored(redis, ms)) == sorted(
        f"spoken {i}" for i in range(7)
    )

    # Duplicates within the window: same text dropped for snippets and typed text; a spoken
    # sentence is a new utterance (its id), so it is kept.
    dup = await Badge(nc).listen()
    md = await dup.start()
    await dup.snippet("same words")
    assert (await dup.snippet("same words"))["duplicates"] == 1
    await dup.say("same words", source="text")
    await asyncio.sleep(1.1)  # a fresh rate window
    await dup.say("same words")
    await dup.say("same words")
    assert [s["tag"] for s in await stored(redis, md)] == ["note", "ASR", "ASR"]

    # The pending cap (8): snippets and typed text beyond it are dropped and said so; speech
    # beyond it waits (retry) until a push makes room.
    full = await Badge(nc).listen()
    mf = await full.start()
    for i in range(3):
        await full.snippet(f"a{i}", f"b{i}", f"c{i}")
        await asyncio.sleep(1.05)
    ack = full.of("snippet")[-1]
    assert ack["accepted"] == 2 and ack["dropped"] == 1 and ack["reason"] == "pending_full"
    typed = await full.say("one more typed", source="text")
    assert json.loads(typed.frames[0])["code"] == "RATE_LIMITED"
    t = Transcript(
        **full.env(),
        stream_id="s",
        utterance_id=f"s:{new_id()[:6]}",
        text="one more spoken",
        start_ms=0,
        end_ms=1,
        meeting_id=mf,
    )
    msg = await nc.request(Subjects.MEETING_TRANSCRIPT, encode(t), timeout=10)
    assert decode(InboundReply, msg.data).retry is True
    assert len(await stored(redis, mf)) == 8


@pytest.mark.slow  # about 20 s on 2 cores
@pytest.mark.timeout(180)
async def test_300_texts_of_10_kb_fit_the_bus(spawn_service: Any, nc: NATS, tmp_path: Path) -> None:
    """The seed crashed its push timer with the next push over 1 MB, and answered 503 to
    transcript pages over 1 MB."""
    procs = await replicas(
        spawn_service,
        nc,
        1,
        {
            "SUPIE_MEETING__SNIPPET_MAX_BYTES": "10240",
            "SUPIE_MEETING__MAX_PENDING": "1000",
            "SUPIE_MEETING__SNIPPETS_PER_SECOND": "100000",
            "SUPIE_MEETING__TRANSCRIPT_PUSH_INTERVAL_MS": "15000",
        },
    )
    badge = await Badge(nc).listen()
    sizes: list[int] = []
    frames: list[dict[str, Any]] = []

    async def raw(msg: Any) -> None:
        sizes.append(len(msg.data))
        frame = decode(DeviceOutbound, msg.data).frame
        if frame:
            frames.append(json.loads(frame))

    await nc.subscribe(Subjects.device_out(badge.device_id), cb=raw)
    m = await badge.start()
    texts = [f"{i:03d} " + "x" * 10_236 for i in range(300)]
    for i in range(0, 300, 20):
        await asyncio.gather(*(badge.say(t, source="text") for t in texts[i : i + 20]))

    def pushes() -> list[dict[str, Any]]:
        return [f for f in frames if f.get("phase") == "transcript" and not f.get("final")]

    await until(lambda: sum(len(p["items"]) for p in pushes()) >= 300, 40)
    items = [i["text"] for p in pushes() for i in p["items"]]
    assert sorted(items) == texts  # every text, whole, across several messages
    big = [p for p in pushes() if p["items"]]
    assert len(big) >= 3 and max(p["totalSegments"] for p in big) == 300
    assert max(sizes) < nc.max_payload
    # A reconnect gets the newest items in one reply (trimmed if they did not fit:
    # tests/test_meeting_wire.py).
    badge.session_id = new_id()
    reply = await badge.state()
    tail = json.loads(reply.frames[0])
    assert tail["resumed"] and tail["totalSegments"] == 300
    assert len(tail["items"]) == 50 and {i["text"] for i in tail["items"]} <= set(texts)
    assert len(encode(reply)) < nc.max_payload

    await badge.finalize()
    await bus.finalized_events(nc, {m}, within=60)
    final = next(f for f in frames if f.get("final"))
    assert final["totalSegments"] == 300 and final["items"]
    # Transcript pages: 500 items of 10 KB would be 5 MB: the page stops in time.
    page = await api(nc, "transcript", sessionId=m, limit=500)
    assert page.status == 200 and page.data["truncated"] is True
    assert len(encode(page)) < nc.max_payload
    got = list(page.data["items"])
    while page.data["nextOffset"] is not None:
        page = await api(nc, "transcript", sessionId=m, offset=page.data["nextOffset"], limit=500)
        assert page.status == 200 and len(encode(page)) < nc.max_payload
        got += page.data["items"]
    assert sorted(i["text"] for i in got) == texts
    assert "over the bus limit" not in procs[0].log()
    assert (await api(nc, "detail", sessionId=m)).status == 200
