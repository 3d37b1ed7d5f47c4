"""The archive interface on both backends (``meeting.archive.backend: files | nats``): the seed's
layout, reader pagination (items and bytes), retention, the orphan sweep, metrics lines and
concurrent index updates run against each. Then what is particular to each: the files backend's
writer SIGKILLed 200 times never leaves a file that does not parse (temp files removed at the
next start); the JetStream backend's index is a compare-and-set (a writer that read a stale
index merges into the newer one), writers killed mid-upload leave only complete records (their
partial uploads removed once past the grace period), and the meeting service on it serves
finalize -> detail / transcript / recent from any replica, whatever host finalized the meeting."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import multiprocessing as mp
import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from supie_common.bus import connect_nats
from supie_common.contracts import Summary, new_id
from supie_meeting.archive import ArchiveStore, index_entry, layout
from supie_meeting.archive_files import FileArchive
from supie_meeting.archive_nats import INDEX_KEY, NatsArchive
from supie_meeting.models import ArchivedMeeting, FinalizeMetrics, IndexEntry, Segment
from supie_meeting.reader import ArchiveReader


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
Badge = bus.Badge


def _segments(n: int, tag: str = "ASR", text: str = "会议") -> list[Segment]:
    return [
        Segment(ts=1000 + i, text=f"segment {i} {text}", speakerId="aabbccdd", tag=tag)
        for i in range(n)
    ]


def _meeting(sid: str, ended: int) -> ArchivedMeeting:
    return ArchivedMeeting(
        session_id=sid,
        device_id="AA:BB:cc:dd:ee:ff",
        started_at=ended - 60_000,
        ended_at=ended,
        duration_ms=60_000,
        summary=Summary(title=sid[:30], duration="00:01:00", bullets=["a"]),
        metrics=FinalizeMetrics(segments_count=1),
    )


async def _store(
    archive: ArchiveStore, sid: str, ended: int, n: int, text: str = "会议"
) -> list[str]:
    main, shards = layout(_meeting(sid, ended), _segments(n, text=text))
    await archive.write_meeting(main, shards)
    return await archive.update_index(index_entry(main))


# -- the two backends, seen from outside ----------------------------------------------------------
class Backend:
    """One archive storage, with raw access to what it stored (the test's view)."""

    kind = ""

    async def open(self, retention: int) -> ArchiveStore:
        raise NotImplementedError

    async def raw_main(self, sid: str) -> dict[str, Any] | None:
        raise NotImplementedError

    async def raw_shard(self, sid: str, k: int) -> dict[str, Any] | None:
        raise NotImplementedError

    async def raw_index(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def drop_shard(self, sid: str, k: int) -> None:
        raise NotImplementedError

    async def shard_names(self) -> list[str]:
        raise NotImplementedError

    async def metrics(self) -> list[str]:
        raise NotImplementedError

    async def close(self) -> None:
        pass


class Files(Backend):
    kind = "files"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.archive = FileArchive(root)

    async def open(self, retention: int) -> ArchiveStore:
        self.archive = FileArchive(self.root, retention=retention)
        return self.archive

    def _json(self, path: Path) -> Any:
        return json.loads(path.read_text()) if path.exists() else None

    async def raw_main(self, sid: str) -> dict[str, Any] | None:
        return self._json(self.archive.main_path(sid))  # type: ignore[no-any-return]

    async def raw_shard(self, sid: str, k: int) -> dict[str, Any] | None:
        return self._json(self.archive.shard_path(sid, k))  # type: ignore[no-any-return]

    async def raw_index(self) -> list[dict[str, Any]]:
        return self._json(self.archive.index_path) or []  # type: ignore[no-any-return]

    async def drop_shard(self, sid: str, k: int) -> None:
        self.archive.shard_path(sid, k).unlink()

    async def shard_names(self) -> list[str]:
        folder = self.archive.shards_dir
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []

    async def metrics(self) -> list[str]:
        path = self.archive.metrics_path
        return path.read_text().splitlines() if path.exists() else []


class Nats(Backend):
    kind = "nats"

    def __init__(self, nc: NATS, bucket: str) -> None:
        self.nc = nc
        self.bucket = bucket
        self.archive: NatsArchive | None = None

    async def open(self, retention: int) -> ArchiveStore:
        self.archive = await NatsArchive.open(self.nc, self.bucket, retention=retention)
        return self.archive

    @property
    def a(self) -> NatsArchive:
        assert self.archive is not None
        return self.archive

    async def _object(self, name: str) -> Any:
        try:
            return json.loads((await self.a.objects.get(name)).data or b"")
        except Exception:
            return None

    async def raw_main(self, sid: str) -> dict[str, Any] | None:
        return await self._object(f"{sid}.json")  # type: ignore[no-any-return]

    async def raw_shard(self, sid: str, k: int) -> dict[str, Any] | None:
        return await self._object(f"segments/{sid}_shard_{k}.json")  # type: ignore[no-any-return]

    async def raw_index(self) -> list[dict[str, Any]]:
        try:
            return json.loads((await self.a.index_kv.get(INDEX_KEY)).value or b"[]")  # type: ignore[no-any-return]
        except Exception:
            return []

    async def drop_shard(self, sid: str, k: int) -> None:
        assert await self.a._remove(f"segments/{sid}_shard_{k}.json")

    async def shard_names(self) -> list[str]:
        infos = await self.a._all_infos()
        return sorted(
            (i.name or "").removeprefix("segments/")
            for i in infos
            if (i.name or "").startswith("segments/")
        )

    async def metrics(self) -> list[str]:
        return await self.a.metrics_lines()


@pytest.fixture(params=["files", "nats"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "files":
        yield Files(tmp_path)
        return
    nc = await connect_nats(request.getfixturevalue("nats_url"), "archive-test")
    try:
        yield Nats(nc, f"t_{new_id()[:12]}")
    finally:
        await nc.drain()


# -- the same behaviour on both ------------------------------------------------------------------
async def test_layout_reader_and_retention(backend: Backend) -> None:
    archive = await backend.open(retention=3)
    reader = ArchiveReader(archive)
    assert await _store(archive, "big", 5000, 250) == []
    main = await backend.raw_main("big")
    assert main is not None
    assert main["segments"]["preview"] is True and len(main["segments"]["segments"]) == 50
    assert main["segments"]["totalCount"] == 250 and main["segments"]["shardCount"] == 3
    assert main["segmentsCount"] == 250 and main["summary"]["nextSteps"] == []
    offsets = [(await backend.raw_shard("big", k) or {}).get("offset") for k in range(3)]
    assert offsets == [0, 100, 200]
    assert await _store(archive, "small", 4000, 100) == []
    assert isinstance((await backend.raw_main("small") or {})["segments"], list)
    index = await backend.raw_index()
    assert [e["sessionId"] for e in index] == ["big", "small"]
    assert index[0]["shardCount"] == 3 and index[0]["preview"] is True

    page = await reader.transcript("big", 95, 10, 1 << 20)
    assert [s["ts"] for s in page["items"]] == list(range(1095, 1105)) and page["total"] == 250
    assert page["nextOffset"] == 105 and "truncated" not in page
    assert len((await reader.transcript("big", 240, 500, 1 << 20))["items"]) == 10
    assert (await reader.transcript("big", 400, 5, 1 << 20))["items"] == []
    assert len((await reader.transcript("small", 0, 500, 1 << 20))["items"]) == 100
    # Sized by bytes too: a small budget stops the page early and says where to go on.
    page = await reader.transcript("big", 0, 500, 2000)
    assert page["truncated"] is True and 0 < len(page["items"]) < 100
    assert page["nextOffset"] == len(page["items"])
    detail = await reader.detail("big", 20)
    assert detail["hasShards"] and detail["segmentsCount"] == 250
    assert len(detail["transcriptPreview"]) == 20
    # A lost shard: the preview still serves the first 50 segments.
    await backend.drop_shard("big", 0)
    assert len((await reader.transcript("big", 0, 100, 1 << 20))["items"]) == 50

    for i in range(3):
        for sid in await _store(archive, f"new{i}", 10_000 + i, 120):
            await archive.remove_meeting(sid)
    assert [e.session_id for e in await archive.read_index()] == ["new2", "new1", "new0"]
    assert await backend.raw_main("big") is None and await backend.raw_main("small") is None
    assert await archive.read_main("big") is None
    assert await backend.shard_names() == sorted(
        f"new{i}_shard_{k}.json" for i in range(3) for k in range(2)
    )
    assert await archive.list_meetings() == ["new0", "new1", "new2"]
    assert [e["sessionId"] for e in await reader.recent(2, "aa:bb", None, None)] == [
        "new2",
        "new1",
    ]
    assert await reader.recent(10, "zz", None, None) == []
    assert [e["sessionId"] for e in await reader.recent(10, None, 10_001, 10_001)] == ["new1"]
    # Orphans (crash leftovers) go only once old enough.
    main, shards = layout(_meeting("orphan", 1), _segments(150))
    await archive.write_meeting(main, shards)
    assert await archive.sweep_orphans(min_age_s=3600) == 0
    assert await archive.sweep_orphans(min_age_s=0) == 3
    assert len(await archive.read_index()) == 3
    assert await archive.list_meetings() == ["new0", "new1", "new2"]
    assert await archive.read_main("../etc") is None
    # Rewriting a meeting (a resumed finalize) gives the same records.
    assert await _store(archive, "new1", 10_001, 120) == []
    assert (await archive.read_main("new1")) == (await reader.main("new1"))
    assert len((await reader.transcript("new1", 0, 500, 1 << 20))["items"]) == 120


async def test_concurrent_index_updates_keep_every_entry(backend: Backend) -> None:
    archive = await backend.open(retention=100)
    await asyncio.gather(*(_store(archive, f"m{i:02d}", 1000 + i, 3) for i in range(40)))
    assert len(await archive.read_index()) == 40


async def test_metrics_lines_are_kept_in_order(backend: Backend) -> None:
    archive = await backend.open(retention=10)
    lines = [f"[Meeting Metrics] sessionId=m{i}, segmentsCount={i}" for i in range(12)]
    for line in lines:
        await archive.append_metrics(line)
    assert await backend.metrics() == lines


# -- files: crash safety ------------------------------------------------------------------------
def _writer_loop(root: str, seed: int) -> None:
    async def run() -> None:
        archive = FileArchive(root, retention=4)
        rng = random.Random(seed)
        n = 0
        while True:
            n += 1
            sid = f"m{n % 7}"
            for old in await _store(archive, sid, n, rng.choice([5, 150, 260])):
                await archive.remove_meeting(old)
            await archive.append_metrics(f"[Meeting Metrics] sessionId={sid}, n={n}")

    asyncio.run(run())


@pytest.mark.slow  # about 26 s on 2 cores
def test_sigkill_writer_200_times_never_leaves_a_torn_file(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    rng = random.Random(7)
    checked = 0
    root = tmp_path / "meetings"
    for i in range(200):
        proc = ctx.Process(target=_writer_loop, args=(str(tmp_path), i), daemon=True)
        proc.start()
        time.sleep(rng.uniform(0.01, 0.06))
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        for path in [*root.glob("*.json"), *root.glob("segments/*.json")]:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            json.loads(data)  # must always parse
            checked += 1
        index = (
            json.loads((root / "index.json").read_text()) if (root / "index.json").exists() else []
        )
        assert len(index) <= 4
    assert checked > 200
    lines = (root / "metrics.log").read_text().splitlines()
    assert all(line.startswith("[Meeting Metrics]") for line in lines)
    # Temp files of the killed writers: removed at the next start, whatever their age.
    leftovers = list(root.glob(".*.tmp")) + list(root.glob("segments/.*.tmp"))
    assert leftovers  # 200 kills mid-write leave some (about 60 here)
    removed = asyncio.run(FileArchive(tmp_path).clean_leftovers())
    assert removed == len(leftovers)
    assert not list(root.glob(".*.tmp")) and not list(root.glob("segments/.*.tmp"))


# -- nats: compare-and-set, partial uploads, the service on it ------------------------------------
class _StaleReader(NatsArchive):
    """Reads the index, then waits (as a slow host would) before writing it back."""

    read_done: asyncio.Event
    resume: asyncio.Event

    async def _read_index(self, budget_s: float = 3.0) -> tuple[list[IndexEntry], int | None]:
        got = await super()._read_index(budget_s)
        if not self.read_done.is_set():
            self.read_done.set()
            await self.resume.wait()
        return got


async def test_nats_index_compare_and_set_merges_a_stale_writer(nats_url: str) -> None:
    bucket = f"t_{new_id()[:12]}"
    host_a = await connect_nats(nats_url, "host-a")
    host_b = await connect_nats(nats_url, "host-b")
    try:
        a = await NatsArchive.open(host_a, bucket, retention=3)
        await _store(a, "first", 1000, 2)
        slow = await _StaleReader.open(host_b, bucket, retention=3)
        assert isinstance(slow, _StaleReader)
        slow.read_done, slow.resume = asyncio.Event(), asyncio.Event()
        late = asyncio.create_task(_store(slow, "late", 3000, 2))
        await slow.read_done.wait()  # b holds the index as of "first"
        await _store(a, "meanwhile", 2000, 2)
        await _store(a, "second", 1500, 2)
        slow.resume.set()
        evicted = await late
        # b's write was refused (the revision moved), so it merged into the newer index.
        assert slow.index_conflicts == 1
        assert [e.session_id for e in await a.read_index()] == ["late", "meanwhile", "second"]
        assert evicted == ["first"]
        # Many writers on three connections at once: every entry kept.
        hosts = [a, slow, await NatsArchive.open(host_b, bucket, retention=100)]
        for h in hosts:
            h.retention = 100
        await asyncio.gather(*(_store(hosts[i % 3], f"c{i:02d}", 5000 + i, 1) for i in range(60)))
        index = await hosts[2].read_index()
        assert {f"c{i:02d}" for i in range(60)} <= {e.session_id for e in index}
    finally:
        await host_a.drain()
        await host_b.drain()


_NATS_WRITER = """
import asyncio, random, sys
from supie_common.bus import connect_nats
from supie_common.contracts import Summary
from supie_meeting.archive import index_entry, layout
from supie_meeting.archive_nats import NatsArchive
from supie_meeting.models import ArchivedMeeting, FinalizeMetrics, Segment

async def run(url, bucket, seed):
    nc = await connect_nats(url, f"writer-{seed}")
    archive = await NatsArchive.open(nc, bucket, retention=4)
    rng = random.Random(seed)
    n = seed * 1000
    print("writing", flush=True)
    while True:
        n += 1
        sid = f"m{n % 5}"
        # up to 150 segments of ~2 KB: objects of several chunks, so kills land mid-upload
        segs = [Segment(ts=i, text=f"{i} " + "x" * 2000, tag="ASR")
                for i in range(rng.choice([5, 150]))]
        summary = Summary(title=sid, duration="00:00:00")
        meeting = ArchivedMeeting(session_id=sid, device_id="aa", started_at=n, ended_at=n,
            duration_ms=0, summary=summary, metrics=FinalizeMetrics())
        main, shards = layout(meeting, segs)
        await archive.write_meeting(main, shards)
        for old in await archive.update_index(index_entry(main)):
            await archive.remove_meeting(old)

asyncio.run(run(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


@pytest.mark.timeout(240)
async def test_nats_writers_killed_mid_upload_leave_complete_records(nats_url: str) -> None:
    bucket = f"t_{new_id()[:12]}"
    rng = random.Random(11)
    nc = await connect_nats(nats_url, "checker")
    try:
        for i in range(12):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _NATS_WRITER, nats_url, bucket, str(i),
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert proc.stdout is not None
            assert await asyncio.wait_for(proc.stdout.readline(), 60) == b"writing\n"
            await asyncio.sleep(rng.uniform(0.05, 1.0))
            proc.kill()
            await proc.wait()
        archive = await NatsArchive.open(nc, bucket, retention=4, leftover_grace_s=3600)
        # Every record there parses; every indexed meeting reads whole.
        checked = 0
        for sid in await archive.list_meetings():
            main = await archive.read_main(sid)
            assert main is not None, sid
            checked += 1
        for entry in await archive.read_index():
            reader = ArchiveReader(archive)
            page = await reader.transcript(entry.session_id, 0, 500, 1 << 22)
            assert len(page["items"]) == entry.segments_count, entry.session_id
        assert checked and len(await archive.read_index()) <= 4
        # A writer that died after its chunks, before the metadata: a partial upload.
        await nc.jetstream().publish(f"$O.{bucket}.C.partialupload", b"half of a record")

        def chunk_subjects() -> Any:
            return archive.js.stream_info(archive.stream, subjects_filter=f"$O.{bucket}.C.>")

        async def unreferenced() -> set[str]:
            subjects = set(((await chunk_subjects()).state.subjects or {}).keys())
            used = {f"$O.{bucket}.C.{i.nuid}" for i in await archive._all_infos()}
            return subjects - used

        left = await unreferenced()
        print(f"unreferenced chunk subjects after 12 kills: {len(left) - 1}")
        assert f"$O.{bucket}.C.partialupload" in left
        assert await archive.clean_leftovers() == 0  # younger than the grace: maybe in progress
        archive.leftover_grace_s = 0
        assert await archive.clean_leftovers() == len(left)
        assert await unreferenced() == set()
        for sid in await archive.list_meetings():
            assert await archive.read_main(sid) is not None
    finally:
        await nc.drain()


@pytest.mark.slow  # two service processes end to end (~30 s); the suite above runs in make test
@pytest.mark.timeout(150)
async def test_meeting_service_on_the_nats_archive_any_replica_serves_any_meeting(
    spawn_service: Any, nc: NATS, tmp_path: Path
) -> None:
    """Two replicas as on two hosts (separate data folders), archive in JetStream: meetings
    finalized by either are served by both; retention removes the evicted meetings' records."""
    bucket = f"svc_{new_id()[:10]}"
    env = {
        "SUPIE_MEETING__ARCHIVE__BACKEND": "nats",
        "SUPIE_MEETING__ARCHIVE__BUCKET": bucket,
        "SUPIE_MEETING__RETENTION": "3",
        "SUPIE_MEETING__FINALIZE_PER_MINUTE": "1000",
    }
    hosts = [
        spawn_service("supie_meeting", {**env, "SUPIE_DATA_DIR": str(tmp_path / f"host{i}")})
        for i in range(2)
    ]
    for p in hosts:
        await p.wait_healthy(nc, "meeting")
    badge = await Badge(nc, f"nats:{new_id()[:8]}").listen()
    big = await badge.start()
    for i in range(250):
        await badge.say(f"line {i}")
    await badge.finalize()
    await bus.finalized_events(nc, {big}, 60)
    small = await badge.start()
    await badge.say("we decided to keep the archive in jetstream")
    await badge.finalize()
    await bus.finalized_events(nc, {small}, 60)

    # Whichever replica answers (queue group), the same answers: ask several times.
    for _ in range(6):
        recent = await bus.api(nc, "recent", deviceId=badge.device_id[:6].upper())
        assert [e["sessionId"] for e in recent.data] == [small, big]
        detail = await bus.api(nc, "detail", sessionId=big)
        assert detail.success and detail.data["segmentsCount"] == 250
        assert detail.data["hasShards"] and len(detail.data["transcriptPreview"]) == 5
        page = (await bus.api(nc, "transcript", sessionId=big, offset="195", limit="10")).data
        assert [i["text"] for i in page["items"]] == [f"line {i}" for i in range(195, 205)]
        assert page["nextOffset"] == 205
        small_detail = await bus.api(nc, "detail", sessionId=small)
        assert small_detail.data["summary"]["decisions"] == [
            "we decided to keep the archive in jetstream"
        ]
    assert (await bus.api(nc, "detail", sessionId="nope")).status == 404
    # Nothing went to either host's folder.
    assert not list(tmp_path.glob("host*/meetings/*.json"))

    more = []
    for _ in range(3):
        m = await badge.start()
        await badge.say(f"meeting {m}")
        await badge.finalize()
        more.append(m)
    await bus.finalized_events(nc, set(more), 60)
    archive = await NatsArchive.open(nc, bucket)

    async def evicted() -> bool:
        index = [e.session_id for e in await archive.read_index()]
        return index == more[::-1] and await archive.list_meetings() == sorted(more)

    deadline = time.monotonic() + 20
    while not await evicted():
        assert time.monotonic() < deadline, (
            await archive.read_index(),
            await archive.list_meetings(),
        )
        await asyncio.sleep(0.2)
    assert (await bus.api(nc, "detail", sessionId=big)).status == 404
    names = [i.name or "" for i in await archive._all_infos()]
    assert not [n for n in names if big in n or small in n], names
    assert len(await archive.metrics_lines()) == 5
    logs = "".join(p.log() for p in hosts)
    assert "Traceback" not in logs, logs[-3000:]
