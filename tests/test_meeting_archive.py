"""Archive layout, reader pagination, retention, and crash safety: a writer process SIGKILLed at
random moments 200 times never leaves a file that does not parse."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

from supie_meeting.archive import Archive, ArchiveReader


def _segments(n: int, tag: str = "ASR") -> list[dict[str, Any]]:
    return [
        {"ts": 1000 + i, "text": f"segment {i} 会议", "speakerId": "aabbccdd", "tag": tag}
        for i in range(n)
    ]


def _record(sid: str, ended: int) -> dict[str, Any]:
    return {
        "sessionId": sid,
        "deviceId": "AA:BB:cc:dd:ee:ff",
        "startedAt": ended - 60_000,
        "endedAt": ended,
        "durationMs": 60_000,
        "summary": {
            "title": sid,
            "duration": "00:01:00",
            "bullets": ["a"],
            "decisions": [],
            "actions": [],
            "risks": [],
            "nextSteps": [],
        },
        "metrics": {"x": 1},
    }


def test_layout_reader_and_retention(tmp_path: Path) -> None:
    archive = Archive(tmp_path, retention=3)
    reader = ArchiveReader(archive)
    entry = archive.write_meeting(_record("big", 5000), _segments(250))
    assert entry["shardCount"] == 3 and entry["segmentsCount"] == 250
    main = json.loads(archive.main_path("big").read_text())
    assert main["segments"]["preview"] is True and len(main["segments"]["segments"]) == 50
    assert [json.loads(archive.shard_path("big", k).read_text())["offset"] for k in range(3)] == [
        0,
        100,
        200,
    ]
    small = archive.write_meeting(_record("small", 4000), _segments(100))
    assert isinstance(json.loads(archive.main_path("small").read_text())["segments"], list)
    assert not small["preview"]
    assert archive.update_index(entry) == [] and archive.update_index(small) == []

    page = reader.transcript("big", 95, 10)
    assert [s["ts"] for s in page["items"]] == list(range(1095, 1105)) and page["total"] == 250
    assert len(reader.transcript("big", 240, 500)["items"]) == 10
    assert reader.transcript("big", 400, 5) == {
        "items": [],
        "total": 250,
        "offset": 400,
        "limit": 5,
    }
    assert len(reader.transcript("small", 0, 500)["items"]) == 100
    detail = reader.detail("big", 20)
    assert detail["hasShards"] and detail["segmentsCount"] == 250
    assert len(detail["transcriptPreview"]) == 20
    # A lost shard: the preview still serves the first 50 segments.
    archive.shard_path("big", 0).unlink()
    assert len(reader.transcript("big", 0, 100)["items"]) == 50

    for i in range(3):
        e = archive.write_meeting(_record(f"new{i}", 10_000 + i), _segments(120))
        evicted = archive.update_index(e)
        for sid in evicted:
            archive.remove_meeting(sid)
    assert [e["sessionId"] for e in archive.read_index()] == ["new2", "new1", "new0"]
    assert not archive.main_path("big").exists() and not archive.main_path("small").exists()
    assert sorted(p.name for p in archive.shards_dir.iterdir()) == sorted(
        f"new{i}_shard_{k}.json" for i in range(3) for k in range(2)
    )
    assert [e["sessionId"] for e in reader.recent(2, "aa:bb", None, None)] == ["new2", "new1"]
    assert reader.recent(10, "zz", None, None) == []
    assert [e["sessionId"] for e in reader.recent(10, None, 10_001, 10_001)] == ["new1"]
    # Orphans (crash leftovers) go only once old enough.
    archive.write_meeting(_record("orphan", 1), _segments(150))
    assert archive.sweep_orphans(min_age_s=3600) == 0
    assert archive.sweep_orphans(min_age_s=0) == 3
    assert len(archive.read_index()) == 3


def _writer_loop(root: str, seed: int) -> None:
    archive = Archive(root, retention=4)
    rng = random.Random(seed)
    n = 0
    while True:
        n += 1
        sid = f"m{n % 7}"
        entry = archive.write_meeting(_record(sid, n), _segments(rng.choice([5, 150, 260])))
        for old in archive.update_index(entry):
            archive.remove_meeting(old)
        archive.append_metrics(f"[Meeting Metrics] sessionId={sid}, n={n}")


def test_sigkill_writer_200_times_never_leaves_a_torn_file(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    rng = random.Random(7)
    checked = 0
    for i in range(200):
        proc = ctx.Process(target=_writer_loop, args=(str(tmp_path), i), daemon=True)
        proc.start()
        time.sleep(rng.uniform(0.002, 0.04))
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        root = tmp_path / "meetings"
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
    lines = (tmp_path / "meetings" / "metrics.log").read_text().splitlines()
    assert all(line.startswith("[Meeting Metrics]") for line in lines)
    # Temp files of killed writers are swept like any other orphan.
    Archive(tmp_path).sweep_orphans(min_age_s=0)
    assert not list((tmp_path / "meetings").glob(".*.tmp"))
