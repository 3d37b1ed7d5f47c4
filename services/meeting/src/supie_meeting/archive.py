"""The meeting archive under ``<data_dir>/meetings/`` (SPEC §5). Blocking file I/O: callers run
these methods in a worker thread.

Layout:
- ``<id>.json``: summary, timestamps, device, metrics and the segments inline (<= 100), or a
  preview ``{preview, totalCount, shardCount, segments: first 50}``;
- ``segments/<id>_shard_K.json`` (K from 0): 100 segments each, ``{sessionId, shard, offset,
  segments}``;
- ``index.json``: a list of the ``retention`` most recent meetings by ``endedAt`` (descending);
- ``metrics.log``: one line per finalize.
Every write is atomic (temp file, fsync, ``os.replace``), shards before the main file before the
index, so a crash at any point leaves only complete files, at worst an unindexed orphan that the
sweep removes.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from loguru import logger
from supie_common.files import append_line, read_json, write_json_atomic

__all__ = [
    "Archive",
    "ArchiveReader",
    "NotFound",
    "valid_session_id",
    "SHARD_SIZE",
    "INLINE_MAX",
    "PREVIEW_SIZE",
]

SHARD_SIZE = 100
INLINE_MAX = 100
PREVIEW_SIZE = 50
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_SHARD_NAME = re.compile(r"^(?P<id>[A-Za-z0-9_-]{1,128})_shard_(?P<k>\d+)\.json$")


def valid_session_id(value: object) -> bool:
    """Safe as a file name (no path separators, no dots)."""
    return isinstance(value, str) and bool(_SESSION_ID.match(value))


class NotFound(LookupError):
    pass


class Archive:
    """Writer side. Only the replica holding a meeting's finalize lock writes that meeting, and
    index updates are serialised by the caller (a Redis lock across replicas)."""

    def __init__(self, data_dir: str | Path, retention: int = 100) -> None:
        self.root = Path(data_dir) / "meetings"
        self.shards_dir = self.root / "segments"
        self.index_path = self.root / "index.json"
        self.metrics_path = self.root / "metrics.log"
        self.retention = retention

    def main_path(self, session_id: str) -> Path:
        return self.root / f"{session_id}.json"

    def shard_path(self, session_id: str, k: int) -> Path:
        return self.shards_dir / f"{session_id}_shard_{k}.json"

    def write_meeting(
        self, record: dict[str, Any], segments: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Write shards (if any) then the main file; return the meeting's index entry."""
        sid = record["sessionId"]
        if not valid_session_id(sid):
            raise ValueError(f"sessionId: not a safe file name: {sid!r}")
        total = len(segments)
        main = dict(record)
        if total > INLINE_MAX:
            shard_count = (total + SHARD_SIZE - 1) // SHARD_SIZE
            for k in range(shard_count):
                chunk = segments[k * SHARD_SIZE : (k + 1) * SHARD_SIZE]
                write_json_atomic(
                    self.shard_path(sid, k),
                    {"sessionId": sid, "shard": k, "offset": k * SHARD_SIZE, "segments": chunk},
                )
            main["segments"] = {
                "preview": True,
                "totalCount": total,
                "shardCount": shard_count,
                "segments": segments[:PREVIEW_SIZE],
            }
        else:
            shard_count = 0
            main["segments"] = segments
        main["segmentsCount"] = total
        write_json_atomic(self.main_path(sid), main)
        summary = record.get("summary") or {}
        return {
            "sessionId": sid,
            "deviceId": record.get("deviceId"),
            "title": summary.get("title", ""),
            "startedAt": record.get("startedAt"),
            "endedAt": record.get("endedAt"),
            "durationMs": record.get("durationMs"),
            "bulletsLength": len(summary.get("bullets") or []),
            "segmentsCount": total,
            "preview": shard_count > 0,
            "totalCount": total,
            "shardCount": shard_count,
        }

    def read_index(self) -> list[dict[str, Any]]:
        data = read_json(self.index_path, default=[])
        return (
            [e for e in data if isinstance(e, dict) and "sessionId" in e]
            if isinstance(data, list)
            else []
        )

    def update_index(self, entry: dict[str, Any]) -> list[str]:
        """Upsert ``entry``, keep the ``retention`` most recent by endedAt; return evicted ids.
        Callers must hold the index lock."""
        entries = [e for e in self.read_index() if e["sessionId"] != entry["sessionId"]]
        entries.append(entry)
        entries.sort(key=lambda e: (e.get("endedAt") or 0, e["sessionId"]), reverse=True)
        kept, evicted = entries[: self.retention], entries[self.retention :]
        write_json_atomic(self.index_path, kept)
        return [e["sessionId"] for e in evicted]

    def append_metrics(self, line: str) -> None:
        append_line(self.metrics_path, line)

    def remove_meeting(self, session_id: str) -> int:
        """Delete a meeting's main file and shards; failures are logged, never raised."""
        paths = [self.main_path(session_id)]
        if self.shards_dir.exists():
            paths += sorted(self.shards_dir.glob(f"{session_id}_shard_*.json"))
        return sum(_remove_quietly(path) for path in paths)

    def sweep_orphans(self, min_age_s: float) -> int:
        """Remove main files and shards of meetings not in the index, older than ``min_age_s``
        (younger ones may belong to a finalize that is about to update the index)."""
        keep = {e["sessionId"] for e in self.read_index()}
        cutoff = time.time() - min_age_s
        removed = 0
        candidates: list[tuple[Path, str]] = []
        if self.root.exists():
            for path in self.root.glob("*.json"):
                sid = path.stem
                if path.name == "index.json" or sid.startswith("active_"):
                    continue
                candidates.append((path, sid))
        if self.shards_dir.exists():
            for path in self.shards_dir.glob("*_shard_*.json"):
                match = _SHARD_NAME.match(path.name)
                if match:
                    candidates.append((path, match["id"]))
        for folder in (self.root, self.shards_dir):  # temp files of writers killed mid-write
            if folder.exists():
                candidates += [(p, "") for p in folder.glob(".*.tmp")]
        for path, sid in candidates:
            if sid in keep:
                continue
            try:
                if path.stat().st_mtime > cutoff:
                    continue
            except FileNotFoundError:
                continue
            removed += _remove_quietly(path)
        return removed


def _remove_quietly(path: Path) -> bool:
    """Retention tolerates failures: a file already gone is fine, others are logged."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        logger.warning("retention: cannot remove {}: {}", path.name, exc)
        return False
    return True


class ArchiveReader:
    """Read side for the HTTP API: parsed files cached by (mtime, size), bounded LRU."""

    def __init__(self, archive: Archive, cache_size: int = 512) -> None:
        self.archive = archive
        self.cache_size = cache_size
        self._cache: OrderedDict[Path, tuple[int, int, Any]] = OrderedDict()
        self._lock = threading.Lock()  # reads run in several worker threads at once

    def _load(self, path: Path) -> Any:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            with self._lock:
                self._cache.pop(path, None)
            return None
        with self._lock:
            hit = self._cache.get(path)
            if hit is not None and hit[0] == st.st_mtime_ns and hit[1] == st.st_size:
                self._cache.move_to_end(path)
                return hit[2]
        value = read_json(path)
        with self._lock:
            self._cache[path] = (st.st_mtime_ns, st.st_size, value)
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return value

    def index(self) -> list[dict[str, Any]]:
        data = self._load(self.archive.index_path)
        return [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []

    def main(self, session_id: str) -> dict[str, Any]:
        data = self._load(self.archive.main_path(session_id))
        if not isinstance(data, dict):
            raise NotFound(session_id)
        return data

    def recent(
        self, limit: int, device_prefix: str | None, from_ts: int | None, to_ts: int | None
    ) -> list[dict[str, Any]]:
        out = []
        prefix = device_prefix.lower() if device_prefix else None
        for e in self.index():
            ended = e.get("endedAt") or e.get("startedAt") or 0
            if prefix and not str(e.get("deviceId") or "").lower().startswith(prefix):
                continue
            if from_ts is not None and ended < from_ts:
                continue
            if to_ts is not None and ended > to_ts:
                continue
            out.append(e)
        out.sort(key=lambda e: e.get("endedAt") or e.get("startedAt") or 0, reverse=True)
        return out[:limit]

    @staticmethod
    def _segments_info(main: dict[str, Any]) -> tuple[list[dict[str, Any]], int, int, bool]:
        """(inline or preview segments, total, shard count, is_preview)."""
        segs = main.get("segments")
        if isinstance(segs, dict) and segs.get("preview"):
            return (
                list(segs.get("segments") or []),
                int(segs.get("totalCount") or 0),
                int(segs.get("shardCount") or 0),
                True,
            )
        items = segs if isinstance(segs, list) else []
        return items, len(items), 0, False

    def detail(self, session_id: str, preview: int) -> dict[str, Any]:
        main = self.main(session_id)
        segs, total, shards, _ = self._segments_info(main)
        summary = main.get("summary") or {}
        return {
            "sessionId": session_id,
            "summary": {
                k: summary.get(k)
                for k in (
                    "title",
                    "duration",
                    "bullets",
                    "decisions",
                    "actions",
                    "risks",
                    "nextSteps",
                )
            },
            "segmentsCount": total,
            "deviceId": main.get("deviceId"),
            "startedAt": main.get("startedAt"),
            "endedAt": main.get("endedAt"),
            "durationMs": main.get("durationMs"),
            "metrics": main.get("metrics") or {},
            "transcriptPreview": segs[:preview],
            "hasShards": shards > 0,
        }

    def transcript(self, session_id: str, offset: int, limit: int) -> dict[str, Any]:
        main = self.main(session_id)
        segs, total, shards, is_preview = self._segments_info(main)
        if not is_preview:
            items = segs[offset : offset + limit]
        else:
            items = []
            end = min(offset + limit, total)
            k = offset // SHARD_SIZE
            while offset + len(items) < end and k < shards:
                shard = self._load(self.archive.shard_path(session_id, k))
                base = k * SHARD_SIZE
                if isinstance(shard, dict):
                    chunk = shard.get("segments") or []
                else:  # shard lost: the preview still covers the first 50 segments
                    chunk = segs[base : base + SHARD_SIZE] if base < len(segs) else []
                lo = offset + len(items) - base
                items += chunk[lo : lo + end - offset - len(items)]
                if len(chunk) < SHARD_SIZE:
                    break
                k += 1
        return {"items": items, "total": total, "offset": offset, "limit": limit}
