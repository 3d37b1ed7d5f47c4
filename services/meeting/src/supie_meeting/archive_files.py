"""The local-files archive (``meeting.archive.backend: files``, the default) under
``<data_dir>/meetings/``:

- ``<id>.json``: the meeting (:class:`~.models.ArchivedMeeting`);
- ``segments/<id>_shard_K.json`` (K from 0): 100 segments each;
- ``index.json``: the ``retention`` most recent meetings by ``endedAt``, descending;
- ``metrics.log``: one line per finalize.

Every write is atomic (a temp file named after the writing process, fsync, ``os.replace``,
fsync of the folder), shards before the main file before the index, so a crash at any point
leaves only complete files; at start, temp files of processes that no longer exist are removed
(:meth:`FileArchive.clean_leftovers`), and unindexed meetings are swept once old enough.
Blocking file work runs in worker threads; parsed files are cached by (mtime, size).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar

from loguru import logger
from pydantic import BaseModel, TypeAdapter, ValidationError
from supie_common.files import append_line

from .archive import IndexGroupCommit, merge_index, valid_session_id
from .models import ArchivedMeeting, IndexEntry, Shard

__all__ = ["CACHE_SIZE", "FileArchive", "IndexLock", "IndexUpdateInterrupted", "TEMP_GRACE_S"]

IndexLock = Callable[[], AbstractAsyncContextManager[None]]
CACHE_SIZE = 512  # parsed files kept in memory for the API
TEMP_GRACE_S = 300  # a temp file without a known live writer is a leftover after this
_SHARD_NAME = re.compile(r"^(?P<id>[A-Za-z0-9_-]{1,128})_shard_(?P<k>\d+)\.json$")
_TEMP_NAME = re.compile(r"^\..+\.(?P<pid>\d+)\.[^.]+\.tmp$")
_INDEX = TypeAdapter(list[IndexEntry])
M = TypeVar("M", bound=BaseModel)


class IndexUpdateInterrupted(OSError):
    """The index write this entry waited for did not happen (the finalize is resumed later)."""


def _write_atomic(path: Path, data: bytes) -> None:
    """Temp file (named with our pid, so a restart knows whose it was), fsync, replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _dump(model: BaseModel) -> bytes:
    return model.model_dump_json(by_alias=True, exclude_none=True).encode()


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _remove_quietly(path: Path) -> bool:
    """Retention tolerates failures: a file already gone is fine, others are logged."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        logger.warning("archive: cannot remove {}: {}", path.name, exc)
        return False
    return True


@contextlib.asynccontextmanager
async def _local_lock(lock: asyncio.Lock) -> AsyncIterator[None]:
    async with lock:
        yield


class FileArchive:
    """:class:`~.archive.ArchiveStore` on a local folder. ``index_lock`` serialises index
    updates across replicas sharing the folder (the service passes a Redis lock); without one,
    updates are serialised within this process only."""

    def __init__(
        self, data_dir: str | Path, retention: int = 100, index_lock: IndexLock | None = None
    ) -> None:
        self.root = Path(data_dir) / "meetings"
        self.shards_dir = self.root / "segments"
        self.index_path = self.root / "index.json"
        self.metrics_path = self.root / "metrics.log"
        self.retention = retention
        own = asyncio.Lock()
        self._index_lock: IndexLock = index_lock or (lambda: _local_lock(own))
        self._cache: OrderedDict[Path, tuple[int, int, Any]] = OrderedDict()
        self._cache_lock = threading.Lock()  # reads run in several worker threads at once
        self._index_commit = IndexGroupCommit(self._apply, IndexUpdateInterrupted)

    def main_path(self, session_id: str) -> Path:
        return self.root / f"{session_id}.json"

    def shard_path(self, session_id: str, k: int) -> Path:
        return self.shards_dir / f"{session_id}_shard_{k}.json"

    # -- writes ----------------------------------------------------------------------------------
    async def write_meeting(self, meeting: ArchivedMeeting, shards: Sequence[Shard]) -> None:
        if not valid_session_id(meeting.session_id):
            raise ValueError("sessionId: not a safe file name")

        def write() -> None:
            for shard in shards:
                _write_atomic(self.shard_path(meeting.session_id, shard.shard), _dump(shard))
            _write_atomic(self.main_path(meeting.session_id), _dump(meeting))

        await asyncio.to_thread(write)

    async def update_index(self, entry: IndexEntry) -> list[str]:
        """Group commit: entries that arrive while an update is being written go together into
        the next one (one lock, one read-modify-write, one fsync for a burst of finalizes). The
        ids evicted by a batch are returned to one of its callers."""
        return await self._index_commit.submit(entry)

    async def _apply(self, entries: list[IndexEntry]) -> list[str]:
        def rewrite() -> list[str]:
            index = self._read_index()
            evicted: list[str] = []
            for entry in entries:
                index, out = merge_index(index, entry, self.retention)
                evicted += out
            data = json.dumps(
                [e.model_dump(by_alias=True, exclude_none=True) for e in index],
                ensure_ascii=False,
                separators=(",", ":"),
            ).encode()
            _write_atomic(self.index_path, data)
            kept = {e.session_id for e in index}
            return [sid for sid in dict.fromkeys(evicted) if sid not in kept]

        async with self._index_lock():
            return await asyncio.to_thread(rewrite)

    async def append_metrics(self, line: str) -> None:
        await asyncio.to_thread(append_line, self.metrics_path, line)

    async def remove_meeting(self, session_id: str) -> int:
        def remove() -> int:
            paths = [self.main_path(session_id)]
            if self.shards_dir.exists():
                paths += sorted(self.shards_dir.glob(f"{session_id}_shard_*.json"))
            return sum(_remove_quietly(p) for p in paths)

        return await asyncio.to_thread(remove)

    # -- reads -----------------------------------------------------------------------------------
    def _load(self, path: Path, parse: Callable[[bytes], Any]) -> Any:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            with self._cache_lock:
                self._cache.pop(path, None)
            return None
        with self._cache_lock:
            hit = self._cache.get(path)
            if hit is not None and hit[0] == st.st_mtime_ns and hit[1] == st.st_size:
                self._cache.move_to_end(path)
                return hit[2]
        try:
            value = parse(path.read_bytes())
        except FileNotFoundError:
            return None
        except (ValidationError, ValueError) as exc:
            logger.warning("archive: {} does not parse: {}", path.name, str(exc)[:200])
            return None
        with self._cache_lock:
            self._cache[path] = (st.st_mtime_ns, st.st_size, value)
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return value

    def _read_index(self) -> list[IndexEntry]:
        return self._load(self.index_path, _INDEX.validate_json) or []

    async def read_index(self) -> list[IndexEntry]:
        return await asyncio.to_thread(self._read_index)

    async def read_main(self, session_id: str) -> ArchivedMeeting | None:
        if not valid_session_id(session_id):
            return None
        path = self.main_path(session_id)
        return await asyncio.to_thread(self._load, path, ArchivedMeeting.model_validate_json)

    async def read_shard(self, session_id: str, k: int) -> Shard | None:
        if not valid_session_id(session_id):
            return None
        path = self.shard_path(session_id, k)
        return await asyncio.to_thread(self._load, path, Shard.model_validate_json)

    async def list_meetings(self) -> list[str]:
        def names() -> list[str]:
            if not self.root.exists():
                return []
            return sorted(p.stem for p in self.root.glob("*.json") if p.name != "index.json")

        return await asyncio.to_thread(names)

    # -- housekeeping ------------------------------------------------------------------------------
    async def sweep_orphans(self, min_age_s: float) -> int:
        def sweep() -> int:
            keep = {e.session_id for e in self._read_index()}
            cutoff = time.time() - min_age_s
            candidates: list[tuple[Path, str]] = []
            if self.root.exists():
                candidates += [
                    (p, p.stem) for p in self.root.glob("*.json") if p.name != "index.json"
                ]
            if self.shards_dir.exists():
                for p in self.shards_dir.glob("*_shard_*.json"):
                    match = _SHARD_NAME.match(p.name)
                    if match:
                        candidates.append((p, match["id"]))
            removed = 0
            for path, sid in candidates:
                if sid in keep:
                    continue
                try:
                    if path.stat().st_mtime > cutoff:
                        continue
                except FileNotFoundError:
                    continue
                removed += _remove_quietly(path)
            return removed + self._clean_temp(max_age_s=min_age_s)

        return await asyncio.to_thread(sweep)

    def _clean_temp(self, max_age_s: float) -> int:
        """Temp files whose writer is gone (by pid), or older than ``max_age_s``."""
        removed = 0
        cutoff = time.time() - max_age_s
        for folder in (self.root, self.shards_dir):
            if not folder.exists():
                continue
            for path in folder.glob(".*.tmp"):
                match = _TEMP_NAME.match(path.name)
                try:
                    old = path.stat().st_mtime < cutoff
                except FileNotFoundError:
                    continue
                if old or (match is not None and not _pid_alive(int(match["pid"]))):
                    removed += _remove_quietly(path)
        return removed

    async def clean_leftovers(self) -> int:
        return await asyncio.to_thread(self._clean_temp, TEMP_GRACE_S)
