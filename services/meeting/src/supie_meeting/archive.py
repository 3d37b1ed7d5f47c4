"""The meeting archive behind one small interface (SPEC §5, §11).

:class:`ArchiveStore` is what the finalizer writes to and the API reads from; the layout is the
seed's whatever the backend: a main record per meeting (segments inline up to
:data:`INLINE_MAX`, else a preview of the first :data:`PREVIEW_SIZE` plus shards of
:data:`SHARD_SIZE`), an index of the ``retention`` most recent meetings by ``endedAt``, and one
metrics line per finalize. :func:`layout` splits a meeting into those records, so every backend
stores the same ones. ``archive_files.FileArchive`` (``meeting.archive.backend: files``) is the
local-folder implementation; a JetStream Object Store + KV backend implements the same protocol.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from .models import ArchivedMeeting, IndexEntry, Segment, SegmentPreview, Shard

__all__ = [
    "IndexGroupCommit",
    "INLINE_MAX",
    "PREVIEW_SIZE",
    "SHARD_SIZE",
    "ArchiveStore",
    "index_entry",
    "layout",
    "merge_index",
    "valid_session_id",
]

SHARD_SIZE = 100
INLINE_MAX = 100
PREVIEW_SIZE = 50
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def valid_session_id(value: object) -> bool:
    """Safe as a file name or an object key (no separators, no dots)."""
    return isinstance(value, str) and bool(_SESSION_ID.match(value))


class ArchiveStore(Protocol):
    """Where finalized meetings are kept. Writes of one meeting come from the one generation
    holding its finalize lock; :meth:`update_index` serialises itself across replicas."""

    retention: int

    async def write_meeting(self, meeting: ArchivedMeeting, shards: Sequence[Shard]) -> None:
        """Store the shards, then the main record (a reader never sees a main record whose
        shards are missing). Idempotent: the same meeting written twice is the same."""
        ...

    async def read_main(self, session_id: str) -> ArchivedMeeting | None: ...

    async def read_shard(self, session_id: str, k: int) -> Shard | None: ...

    async def read_index(self) -> list[IndexEntry]: ...

    async def update_index(self, entry: IndexEntry) -> list[str]:
        """Upsert ``entry``, keep the ``retention`` most recent; -> the ids that fell out."""
        ...

    async def append_metrics(self, line: str) -> None: ...

    async def remove_meeting(self, session_id: str) -> int:
        """Delete a meeting's records (failures logged, never raised); -> records removed."""
        ...

    async def list_meetings(self) -> list[str]:
        """Ids of every stored main record, indexed or not."""
        ...

    async def sweep_orphans(self, min_age_s: float) -> int:
        """Remove records of meetings not in the index, older than ``min_age_s``."""
        ...

    async def clean_leftovers(self) -> int:
        """At start: remove what interrupted writes left behind (temp files, partial uploads)."""
        ...


def layout(
    meeting: ArchivedMeeting, segments: Sequence[Segment]
) -> tuple[ArchivedMeeting, list[Shard]]:
    """The main record (segments inline, or a preview) and the shards of a meeting."""
    total = len(segments)
    if total <= INLINE_MAX:
        main = meeting.model_copy(update={"segments": list(segments), "segments_count": total})
        return main, []
    shard_count = (total + SHARD_SIZE - 1) // SHARD_SIZE
    shards = [
        Shard(
            session_id=meeting.session_id,
            shard=k,
            offset=k * SHARD_SIZE,
            segments=list(segments[k * SHARD_SIZE : (k + 1) * SHARD_SIZE]),
        )
        for k in range(shard_count)
    ]
    preview = SegmentPreview(
        total_count=total, shard_count=shard_count, segments=list(segments[:PREVIEW_SIZE])
    )
    return meeting.model_copy(update={"segments": preview, "segments_count": total}), shards


def index_entry(main: ArchivedMeeting) -> IndexEntry:
    return IndexEntry(
        session_id=main.session_id,
        device_id=main.device_id,
        title=main.summary.title,
        started_at=main.started_at,
        ended_at=main.ended_at,
        duration_ms=main.duration_ms,
        bullets_length=len(main.summary.bullets),
        segments_count=main.total_segments,
        preview=main.shard_count > 0,
        total_count=main.total_segments,
        shard_count=main.shard_count,
    )


def merge_index(
    entries: Sequence[IndexEntry], entry: IndexEntry, retention: int
) -> tuple[list[IndexEntry], list[str]]:
    """The index with ``entry`` upserted, most recent first, cut to ``retention``; and the ids
    that fell out."""
    merged = [e for e in entries if e.session_id != entry.session_id]
    merged.append(entry)
    merged.sort(key=lambda e: e.sort_key, reverse=True)
    return merged[:retention], [e.session_id for e in merged[retention:]]


class IndexGroupCommit:
    """Group commit of index updates, for every backend: entries that arrive while an update is
    being written go together into the next one (one read-modify-write for a burst of
    finalizes). The ids a batch evicts are returned to one of its callers; when the writer is
    interrupted, everyone waiting gets ``interrupted(reason)`` and tries again later."""

    def __init__(
        self,
        apply: Callable[[list[IndexEntry]], Awaitable[list[str]]],
        interrupted: Callable[[str], Exception],
    ) -> None:
        self._apply = apply
        self._interrupted = interrupted
        self._pending: list[tuple[IndexEntry, asyncio.Future[list[str]]]] = []
        self._flushing = False

    async def submit(self, entry: IndexEntry) -> list[str]:
        done: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._pending.append((entry, done))
        if not self._flushing:
            self._flushing = True
            try:
                while self._pending:
                    batch, self._pending = self._pending, []
                    try:
                        evicted = await self._apply([e for e, _ in batch])
                    except BaseException as exc:
                        for _, fut in batch:
                            if not fut.done():
                                fut.set_exception(self._interrupted(str(exc) or "cancelled"))
                        raise
                    for i, (_, fut) in enumerate(batch):
                        if not fut.done():
                            fut.set_result(evicted if i == 0 else [])
            finally:
                self._flushing = False
                for _, fut in self._pending:
                    if not fut.done():
                        fut.set_exception(self._interrupted("index writer interrupted"))
                self._pending = []
        return await done
