"""The meeting service's console operations over ``MEETING_API`` (what the gateway's console
routes ask): search (English words and prefixes, Chinese substrings, filters, a meeting finalized
on the other replica), active meetings, a live transcript page, exports in four formats, speaker
labels kept in Redis; and the search index on its own over a files archive (sync adds what is
missing and drops what is gone, a corrupt file is rebuilt)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from supie_common.contracts import Summary, new_id
from supie_meeting.archive import layout
from supie_meeting.archive_files import FileArchive
from supie_meeting.models import ArchivedMeeting, Segment
from supie_meeting.search import SearchIndex, SearchQuery, match_expression, tokenize


def _load(name: str, path: Path) -> Any:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


bus = _load("supie_tests_meeting_bus", Path(__file__).parent / "fixtures" / "meeting_bus.py")
vtt = _load("supie_tests_vtt", Path(__file__).parent / "fixtures" / "vtt.py")
Badge, api, until = bus.Badge, bus.api, bus.until


def test_tokens_and_query_expressions() -> None:
    assert tokenize("預算 Budget") == " 预  算  budget"
    assert match_expression("预算 budg") == '"预 算" AND "budg"*'
    assert match_expression("  !!  ") is None
    assert match_expression("ＡＢＣ") == '"abc"*'  # full-width folded


@pytest.mark.timeout(120)
async def test_console_ops_search_active_live_export_speakers(
    spawn_service: Any, nc: NATS, tmp_path: Path
) -> None:
    await bus.replicas(spawn_service, nc, 2)
    badge = await Badge(nc, f"cons:{new_id()[:8]}").listen()
    en = await badge.start()
    await badge.say("We reviewed the quarterly budget for marketing")
    await badge.say("We decided to hire two engineers next month")

    active = await api(nc, "active")
    mine = [e for e in active.data["items"] if e["sessionId"] == en]
    assert mine and mine[0]["deviceId"] == badge.device_id and mine[0]["status"] == "active"
    assert mine[0]["segmentsCount"] == 2 and mine[0]["startedAt"] > 0

    live = (await api(nc, "live", sessionId=en, offset="1", limit="5")).data
    assert [i["text"] for i in live["items"]] == ["We decided to hire two engineers next month"]
    assert live["total"] == 2 and live["nextOffset"] is None and live["status"] == "active"
    early = await api(nc, "export", sessionId=en, format="md")
    assert early.status == 409 and "active" in (early.error or "")

    speaker = badge.device_id[:8]
    renamed = await api(
        nc,
        "rename_speaker",
        sessionId=en,
        speakerId=speaker,
        label="  Alice  Chen ",
        scope="meeting",
    )
    assert renamed.success and renamed.data["label"] == "Alice Chen"
    await badge.finalize()
    await bus.finalized_events(nc, {en})

    zh = await badge.start()
    await badge.say("我们讨论了下个季度的预算和招聘计划")
    await badge.say("决定下周完成新版本的测试")
    await badge.finalize()
    await bus.finalized_events(nc, {zh})

    async def search(**params: Any) -> list[str]:
        reply = await api(nc, "search", **params)
        assert reply.success, reply.error
        return [h["sessionId"] for h in reply.data["items"]]

    # Both replicas index both meetings (a meeting archived by the other replica arrives by
    # its finalized event); the queue group picks either, so ask until six answers in a row
    # agree.
    streak = 0
    for _ in range(200):
        found = en in await search(q="budget") and zh in await search(q="预算")
        streak = streak + 1 if found else 0
        if streak >= 6:
            break
        await asyncio.sleep(0.05)
    assert streak >= 6
    assert await search(q="budg marketing") == [en]  # prefix, AND
    assert await search(q="招聘") == [zh]  # two-character word inside a sentence
    assert await search(q="預算") == [zh]  # Traditional folded to Simplified
    assert await search(q="budget nonexistentword") == []
    assert set(await search(q="", deviceId=badge.device_id[:9].upper())) == {en, zh}
    assert await search(q="budget", deviceId="nobody") == []
    hit = (await api(nc, "search", q="engineers")).data["items"][0]
    assert hit["matchedIn"] in ("transcript", "summary") and "engineers" in hit["snippet"]
    assert hit["deviceId"] == badge.device_id and hit["segmentsCount"] == 2
    for params, name in [({"limit": "0"}, "limit"), ({"fromTs": "x"}, "fromTs"), ({"q": 5}, "q")]:
        bad = await api(nc, "search", **params)
        assert bad.status == 400 and name in (bad.error or "")

    speakers = (await api(nc, "speakers", sessionId=en)).data["items"]
    assert speakers == [{"speakerId": speaker, "label": "Alice Chen", "scope": "meeting"}]
    everywhere = await api(
        nc, "rename_speaker", sessionId=zh, speakerId=speaker, label="王芳", scope="all"
    )
    assert everywhere.success
    assert (await api(nc, "speakers", sessionId=zh)).data["items"][0]["label"] == "王芳"
    assert (await api(nc, "speakers", sessionId=en)).data["items"][0]["label"] == "Alice Chen"
    bad = await api(nc, "rename_speaker", sessionId=en, speakerId=speaker, label="x", scope="x")
    assert bad.status == 400 and "scope" in (bad.error or "")
    assert (await api(nc, "speakers", sessionId=new_id())).status == 404

    md = await api(nc, "export", sessionId=en, format="md")
    assert md.content_type and md.content_type.startswith("text/markdown")
    text = str(md.data)
    assert text.startswith("# ") and "- **Device:** " + badge.device_id in text
    for heading in ("## Summary", "## Decisions", "## Actions", "## Risks", "## Next steps"):
        assert heading in text
    assert "**Alice Chen:** We reviewed the quarterly budget for marketing" in text
    txt = str((await api(nc, "export", sessionId=zh, format="txt")).data)
    assert re.search(r"^\[00:00:\d\d\] 王芳: 我们讨论了下个季度的预算和招聘计划$", txt, re.M)
    cues = vtt.parse_vtt(str((await api(nc, "export", sessionId=zh, format="vtt")).data))
    assert [c.text for c in cues] == [
        "我们讨论了下个季度的预算和招聘计划",
        "决定下周完成新版本的测试",
    ]
    assert all(c.voice == "王芳" for c in cues)
    body = json.loads(str((await api(nc, "export", sessionId=en, format="json")).data))
    assert body["sessionId"] == en and set(body["summary"]) >= {"title", "nextSteps"}
    assert [s["speaker"] for s in body["segments"]] == ["Alice Chen", "Alice Chen"]
    assert (await api(nc, "export", sessionId=en, format="pdf")).status == 400
    assert (await api(nc, "export", sessionId=new_id(), format="md")).status == 404


def _meeting(sid: str, texts: list[str], ended: int) -> ArchivedMeeting:
    segments = [Segment(ts=ended - 1000 * (len(texts) - i), text=t) for i, t in enumerate(texts)]
    return ArchivedMeeting(
        session_id=sid,
        device_id="aa:bb:cc",
        started_at=ended - 60_000,
        ended_at=ended,
        duration_ms=60_000,
        summary=Summary(title=texts[0][:30], duration="00:01:00", bullets=texts[:1]),
        segments=segments,
    )


async def test_index_sync_follows_the_archive_and_rebuilds(tmp_path: Path) -> None:
    store = FileArchive(tmp_path / "data", retention=1000)
    texts = [f"line {i} about topic{i % 7}" for i in range(230)]
    big = _meeting("big", texts, 2_000_000)
    main, shards = layout(big, big.inline_segments())
    await store.write_meeting(main, shards)
    small = _meeting("small", ["销售周报", "客户回访"], 1_000_000)
    await store.write_meeting(*layout(small, small.inline_segments()))

    index = SearchIndex(tmp_path / "search", store)
    await index.open()
    assert await index.sync() == (2, 0)
    hits, total = await index.search(SearchQuery("line 229"))  # in the last shard
    assert total == 1 and hits[0].session_id == "big" and hits[0].segments == 230
    assert (await index.search(SearchQuery("回访")))[1] == 1
    hits, total = await index.search(SearchQuery("", to_ts=1_500_000))
    assert [h.session_id for h in hits] == ["small"] and total == 1
    await store.remove_meeting("small")
    assert await index.sync() == (0, 1)
    assert (await index.search(SearchQuery("回访")))[1] == 0
    path = index.path
    await index.close()

    assert path is not None
    path.write_bytes(b"not a database at all" * 100)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    again = SearchIndex(tmp_path / "search", store)
    await again.open()
    assert again.path == path  # the same slot, taken back
    assert await again.sync() == (1, 0)
    assert (await again.search(SearchQuery("topic3")))[1] == 1
    await again.close()


@pytest.mark.timeout(60)
async def test_a_replica_without_its_index_still_runs_meetings(
    spawn_service: Any, nc: NATS, tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir(parents=True, exist_ok=True)
    (tmp_path / "data" / "search").write_text("not a folder")  # the index cannot open
    procs = await bus.replicas(spawn_service, nc, 1)
    assert "search index unavailable" in procs[0].log()
    badge = await Badge(nc, f"nosrch:{new_id()[:6]}").listen()
    m = await badge.start()
    await badge.say("meetings go on without search")
    await badge.finalize()
    await bus.finalized_events(nc, {m})
    reply = await api(nc, "search", q="meetings")
    assert reply.status == 503 and "search" in (reply.error or "")
    export = await api(nc, "export", sessionId=m, format="txt")
    assert export.status == 200 and "meetings go on without search" in str(export.data)
