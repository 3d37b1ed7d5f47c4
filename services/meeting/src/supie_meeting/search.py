"""Full-text search over the archive: titles, summaries and transcripts, Chinese and English.

One SQLite FTS5 index per meeting replica, under ``<data_dir>/search/``, built from the
:class:`~.archive.ArchiveStore` interface (never from files directly, so it works on any
backend, a shared one included):

- at start, :meth:`SearchIndex.sync` adds the meetings the archive has and the index lacks, and
  drops the ones the archive lost (a restarted replica only catches up); again every
  :data:`SYNC_EVERY_S`, for what other replicas' retention removed;
- :class:`IndexedArchive` (the archive the finalizer writes to) indexes a meeting as soon as it
  is written on this replica, and forgets one that retention removes;
- every replica hears ``meeting.finalized`` and indexes the meeting from the archive, so a
  meeting finalized on another replica is found here too.

Tokens: Latin words as the ``unicode61`` tokenizer splits them (prefix queries: ``budg``
finds "budget"); every Chinese character its own token, so a query of Chinese characters is a
phrase of single characters and finds any substring, two-character words included (a trigram
index cannot find those). Text is folded first (Traditional to Simplified, full-width to ASCII,
lower case), the query the same way.

Each replica owns a slot file (``index-<n>.sqlite3``) under an exclusive ``flock``, so replicas
sharing a data dir never share an index, and a restarted one takes its old file back.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import sqlite3
import time
import unicodedata
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from loguru import logger
from supie_common.text import to_simplified

from .archive import ArchiveStore
from .models import ArchivedMeeting, IndexEntry, Segment, Shard

__all__ = [
    "COUNT_CAP",
    "MAX_QUERY_CHARS",
    "SYNC_EVERY_S",
    "IndexedArchive",
    "SearchHit",
    "SearchIndex",
    "SearchQuery",
    "fold",
    "match_expression",
    "tokenize",
]

SYNC_EVERY_S = 600.0
MAX_QUERY_CHARS = 200
MAX_TERMS = 12
PREFIX_MIN_CHARS = 3  # shorter Latin terms match whole words only
SNIPPET_CHARS = 120
SCHEMA_VERSION = "2"
TIE_SLOTS = 1024  # meetings ending in the same millisecond
COUNT_CAP = 1000  # totals are counted up to this ("1000+")
_MAX_SLOTS = 64
_RECENT_KEEP = 1000
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af"
_CJK_CHAR = re.compile(f"([{_CJK}])")
_TERM = re.compile(f"[{_CJK}]+|[^\\W_]+", re.UNICODE)
_IS_CJK = re.compile(f"^[{_CJK}]+$")

# A meeting's row id orders it: ``ended_at * 1024`` plus a tie-breaker, so "most recent first"
# is the FTS5 index's own reverse rowid order (a LIMIT stops early, even for a word every
# meeting has) and a time range is a rowid range. Texts live apart from the listing columns.
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meetings(
    id INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL UNIQUE,
    device_id TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    title TEXT NOT NULL,
    bullets INTEGER NOT NULL,
    segments INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS texts(
    id INTEGER PRIMARY KEY,
    summary TEXT NOT NULL,
    transcript TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS meetings_device ON meetings(device_id);
CREATE VIRTUAL TABLE IF NOT EXISTS meetings_fts USING fts5(
    title, summary, transcript, content='', tokenize='unicode61 remove_diacritics 2'
);
INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', '{SCHEMA_VERSION}');
"""


def fold(text: str) -> str:
    """The form both the index and the queries use: NFKC, Simplified Chinese, lower case."""
    return to_simplified(unicodedata.normalize("NFKC", text)).lower()


def tokenize(text: str) -> str:
    """Folded text with a space around every CJK character: one token each for ``unicode61``."""
    return _CJK_CHAR.sub(r" \1 ", fold(text))


def match_expression(query: str) -> str | None:
    """The FTS5 query of what a person typed: every term must match (AND); a run of Chinese
    characters is a phrase of its characters; a Latin word of three letters or more is a prefix,
    a shorter one a whole word. None when nothing is left to search for (only punctuation)."""
    terms = _TERM.findall(fold(query[:MAX_QUERY_CHARS]))[:MAX_TERMS]
    parts = []
    for term in terms:
        if _IS_CJK.match(term):
            parts.append('"' + " ".join(term) + '"')
        elif len(term) >= PREFIX_MIN_CHARS:
            parts.append(f'"{term}"*')
        else:  # a prefix of one or two characters would expand to a large part of the index
            parts.append(f'"{term}"')
    return " AND ".join(parts) if parts else None


@dataclass(frozen=True, slots=True)
class SearchQuery:
    q: str
    device_prefix: str | None = None
    from_ts: int | None = None
    to_ts: int | None = None
    limit: int = 20
    offset: int = 0


@dataclass(frozen=True, slots=True)
class SearchHit:
    session_id: str
    device_id: str
    title: str
    started_at: int
    ended_at: int
    duration_ms: int
    bullets: int
    segments: int
    snippet: str
    field: str

    def as_json(self) -> dict[str, Any]:
        return {
            "sessionId": self.session_id,
            "deviceId": self.device_id,
            "title": self.title,
            "startedAt": self.started_at,
            "endedAt": self.ended_at,
            "durationMs": self.duration_ms,
            "bulletsLength": self.bullets,
            "segmentsCount": self.segments,
            "snippet": self.snippet,
            "matchedIn": self.field,
        }


def _summary_text(main: ArchivedMeeting) -> str:
    s = main.summary
    return "\n".join([*s.bullets, *s.decisions, *s.actions, *s.risks, *s.next_steps])


def _snippet(text: str, query: str) -> str:
    """Around the first place a query term occurs in ``text`` (the original, not the folded
    form, is shown: folding keeps positions for CJK and Latin alike, so they line up)."""
    folded = fold(text)
    terms = _TERM.findall(fold(query[:MAX_QUERY_CHARS]))[:MAX_TERMS]
    at = -1
    for term in sorted(terms, key=len, reverse=True):
        at = folded.find(term)
        if at >= 0:
            break
    if len(folded) != len(text):  # NFKC changed lengths (ligatures): show the folded text
        text = folded
    if at < 0:
        return text[:SNIPPET_CHARS].replace("\n", " ")
    start = max(0, at - SNIPPET_CHARS // 3)
    end = min(len(text), start + SNIPPET_CHARS)
    piece = text[start:end].replace("\n", " ")
    return ("…" if start else "") + piece + ("…" if end < len(text) else "")


class _Slot:
    """An index file this process holds under an exclusive lock."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(_MAX_SLOTS):
            lock: IO[bytes] = open(folder / f"index-{n}.lock", "ab")  # noqa: SIM115
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                lock.close()
                continue
            self.lock = lock
            self.path = folder / f"index-{n}.sqlite3"
            return
        raise RuntimeError(f"no free search index slot under {folder} ({_MAX_SLOTS} in use)")

    def release(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self.lock.fileno(), fcntl.LOCK_UN)
        self.lock.close()


class SearchIndex:
    """The index and its two worker threads: one writes (sync, adds, removals), one reads
    (searches), on two SQLite connections in WAL mode, so a search never waits for a sync."""

    def __init__(self, folder: Path, archive: ArchiveStore) -> None:
        self.folder = folder
        self.archive = archive
        self.ready = asyncio.Event()  # the first sync is done
        self._slot: _Slot | None = None
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="search-write")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="search-read")
        self._w: sqlite3.Connection | None = None
        self._r: sqlite3.Connection | None = None
        self._sync_lock = asyncio.Lock()
        self._recent: dict[str, None] = {}  # indexed here lately (the finalized event skips them)
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------
    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, self._open_writer)
        await loop.run_in_executor(self._reader, self._open_reader)

    def _connect(self) -> sqlite3.Connection:
        assert self._slot is not None
        conn = sqlite3.connect(self._slot.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # a lost index is rebuilt, not restored
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    def _open_writer(self) -> None:
        self._slot = _Slot(self.folder)
        try:
            conn = self._connect()
            version = None
            with contextlib.suppress(sqlite3.Error):
                row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                version = row[0] if row else None
            if version not in (None, SCHEMA_VERSION):
                raise sqlite3.DatabaseError(f"schema {version}")
            conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:  # corrupt or from another version: start afresh
            logger.warning("search index {} unusable ({}): rebuilding", self._slot.path, exc)
            with contextlib.suppress(Exception):
                conn.close()
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{self._slot.path}{suffix}")
            conn = self._connect()
            conn.executescript(_SCHEMA)
        self._w = conn

    def _open_reader(self) -> None:
        self._r = self._connect()
        self._r.execute("PRAGMA query_only=1")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        if self._r is not None:
            await loop.run_in_executor(self._reader, self._r.close)
        if self._w is not None:
            await loop.run_in_executor(self._writer, self._w.close)
        # Both threads are idle: their last job (the close) is done.
        self._reader.shutdown(wait=False)
        self._writer.shutdown(wait=False)
        if self._slot is not None:
            self._slot.release()

    @property
    def path(self) -> Path | None:
        return self._slot.path if self._slot is not None else None

    # -- writes ------------------------------------------------------------------------------
    async def _write(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)

    async def add(self, main: ArchivedMeeting, shards: Sequence[Shard] = ()) -> None:
        """Index a meeting (again: the newer record replaces the older)."""
        segments: list[Segment] = []
        if shards:
            for shard in sorted(shards, key=lambda s: s.shard):
                segments.extend(shard.segments)
        else:
            segments = main.inline_segments()
        await self._write(self._add_rows, [(main, segments)])
        self._recent[main.session_id] = None
        while len(self._recent) > _RECENT_KEEP:
            del self._recent[next(iter(self._recent))]

    def has_recent(self, session_id: str) -> bool:
        """Whether this replica indexed the meeting itself lately (as it archived it)."""
        return session_id in self._recent

    async def add_from_archive(self, session_id: str) -> bool:
        """Index a meeting another replica archived (read through the archive). False when the
        archive does not have it (yet)."""
        main = await self.archive.read_main(session_id)
        if main is None:
            return False
        await self._write(self._add_rows, [(main, await self._segments(main))])
        return True

    async def _segments(self, main: ArchivedMeeting) -> list[Segment]:
        if main.shard_count == 0:
            return main.inline_segments()
        out: list[Segment] = []
        for k in range(main.shard_count):
            shard = await self.archive.read_shard(main.session_id, k)
            if shard is None:  # a lost shard: the preview still holds the first ones
                if k == 0:
                    out.extend(main.inline_segments())
                continue
            out.extend(shard.segments)
        return out

    def _add_rows(self, items: list[tuple[ArchivedMeeting, list[Segment]]]) -> None:
        conn = self._w
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            for main, segments in items:
                self._delete_row(conn, main.session_id)
                transcript = "\n".join(s.text for s in segments)
                summary = _summary_text(main)
                rowid = self._free_rowid(conn, main.ended_at)
                conn.execute(
                    "INSERT INTO meetings(id, session_id, device_id, started_at, ended_at,"
                    " duration_ms, title, bullets, segments) VALUES (?,?,?,?,?,?,?,?,?)",
                    (
                        rowid,
                        main.session_id,
                        main.device_id.lower(),
                        main.started_at,
                        main.ended_at,
                        main.duration_ms,
                        main.summary.title,
                        len(main.summary.bullets),
                        main.total_segments,
                    ),
                )
                conn.execute(
                    "INSERT INTO texts(id, summary, transcript) VALUES (?,?,?)",
                    (rowid, summary, transcript),
                )
                conn.execute(
                    "INSERT INTO meetings_fts(rowid, title, summary, transcript) VALUES (?,?,?,?)",
                    (rowid, tokenize(main.summary.title), tokenize(summary), tokenize(transcript)),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _free_rowid(conn: sqlite3.Connection, ended_at: int) -> int:
        base = max(ended_at, 0) * TIE_SLOTS
        row = conn.execute(
            "SELECT max(id) FROM meetings WHERE id BETWEEN ? AND ?", (base, base + TIE_SLOTS - 1)
        ).fetchone()
        if row[0] is None:
            return base
        if row[0] + 1 < base + TIE_SLOTS:
            return int(row[0]) + 1
        taken = {r[0] for r in conn.execute(
            "SELECT id FROM meetings WHERE id BETWEEN ? AND ?", (base, base + TIE_SLOTS - 1)
        )}  # fmt: skip
        free = next((i for i in range(base, base + TIE_SLOTS) if i not in taken), None)
        if free is None:
            raise sqlite3.IntegrityError(f"more than {TIE_SLOTS} meetings ended at {ended_at}")
        return free

    @staticmethod
    def _delete_row(conn: sqlite3.Connection, session_id: str) -> bool:
        row = conn.execute(
            "SELECT m.id, m.title, t.summary, t.transcript FROM meetings m"
            " JOIN texts t ON t.id = m.id WHERE m.session_id=?",
            (session_id,),
        ).fetchone()
        if row is None:
            return False
        rowid, title, summary, transcript = row
        # contentless FTS5: a delete names the tokens it removes
        conn.execute(
            "INSERT INTO meetings_fts(meetings_fts, rowid, title, summary, transcript)"
            " VALUES ('delete', ?, ?, ?, ?)",
            (rowid, tokenize(title), tokenize(summary), tokenize(transcript)),
        )
        conn.execute("DELETE FROM meetings WHERE id=?", (rowid,))
        conn.execute("DELETE FROM texts WHERE id=?", (rowid,))
        return True

    async def remove(self, session_ids: Sequence[str]) -> int:
        return int(await self._write(self._remove_rows, list(session_ids)))

    def _remove_rows(self, session_ids: list[str]) -> int:
        conn = self._w
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            removed = sum(1 for sid in session_ids if self._delete_row(conn, sid))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return removed

    def _indexed_ids(self) -> set[str]:
        assert self._w is not None
        return {r[0] for r in self._w.execute("SELECT session_id FROM meetings")}

    async def sync(self, batch: int = 100) -> tuple[int, int]:
        """Make the index hold what the archive holds: -> (added, removed)."""
        async with self._sync_lock:
            started = time.monotonic()
            in_archive = set(await self.archive.list_meetings())
            indexed = await self._write(self._indexed_ids)
            gone = sorted(indexed - in_archive)
            removed = await self.remove(gone) if gone else 0
            missing = sorted(in_archive - indexed)
            added = 0
            for i in range(0, len(missing), batch):
                rows = []
                for sid in missing[i : i + batch]:
                    try:
                        main = await self.archive.read_main(sid)
                    except Exception as exc:  # one unreadable record does not stop the rest
                        logger.warning("search index: {} unreadable: {}", sid, exc)
                        continue
                    if main is not None:
                        rows.append((main, await self._segments(main)))
                if rows:
                    await self._write(self._add_rows, rows)
                    added += len(rows)
            self.ready.set()
            if added or removed:
                logger.info(
                    "search index synced: +{} -{} in {:.1f} s ({})",
                    added,
                    removed,
                    time.monotonic() - started,
                    self.path,
                )
            return added, removed

    # -- reads -------------------------------------------------------------------------------
    async def count(self) -> int:
        def run() -> int:
            assert self._r is not None
            return int(self._r.execute("SELECT count(*) FROM meetings").fetchone()[0])

        return await asyncio.get_running_loop().run_in_executor(self._reader, run)

    async def search(self, query: SearchQuery) -> tuple[list[SearchHit], int]:
        """Matches, most recent first, and how many there are in all."""
        return await asyncio.get_running_loop().run_in_executor(self._reader, self._search, query)

    def _search(self, query: SearchQuery) -> tuple[list[SearchHit], int]:
        """Ids first (in rowid order, stopping at the page), then the rows of that page."""
        conn = self._r
        assert conn is not None
        expression = match_expression(query.q)
        if query.q.strip() and expression is None:
            return [], 0
        where: list[str] = []
        args: list[Any] = []
        if query.from_ts is not None:
            where.append("{id} >= ?")
            args.append(max(query.from_ts, 0) * TIE_SLOTS)
        if query.to_ts is not None:
            where.append("{id} <= ?")
            args.append(max(query.to_ts, 0) * TIE_SLOTS + TIE_SLOTS - 1)
        if query.device_prefix:
            prefix = query.device_prefix.lower()
            where.append("substr(m.device_id, 1, ?) = ?")
            args += [len(prefix), prefix]
        if expression is not None:
            join = " JOIN meetings m ON m.id = f.rowid" if query.device_prefix else ""
            clause = " AND ".join(
                ["meetings_fts MATCH ?", *(w.format(id="f.rowid") for w in where)]
            )
            ids_sql = (
                f"SELECT f.rowid FROM meetings_fts f{join} WHERE {clause} ORDER BY f.rowid DESC"
            )
            args = [expression, *args]
        else:
            clause = " AND ".join(w.format(id="m.id") for w in where)
            ids_sql = "SELECT m.id FROM meetings m" + (f" WHERE {clause}" if clause else "")
            ids_sql += " ORDER BY m.id DESC"
        # Matches are counted up to COUNT_CAP (a word every meeting has would cost a full
        # scan); a plain listing is counted exactly (a b-tree count).
        cap = f" LIMIT {COUNT_CAP}" if expression is not None else ""
        total = int(conn.execute(f"SELECT count(*) FROM ({ids_sql}{cap})", args).fetchone()[0])
        page = [
            r[0]
            for r in conn.execute(f"{ids_sql} LIMIT ? OFFSET ?", [*args, query.limit, query.offset])
        ]
        if not page:
            return [], total
        marks = ",".join("?" * len(page))
        rows = conn.execute(
            "SELECT m.session_id, m.device_id, m.title, m.started_at, m.ended_at,"
            " m.duration_ms, m.bullets, m.segments, t.summary, t.transcript"
            f" FROM meetings m JOIN texts t ON t.id = m.id WHERE m.id IN ({marks})"
            " ORDER BY m.id DESC",
            page,
        ).fetchall()
        hits = []
        for sid, device, title, started, ended, duration, bullets, segs, summary, text in rows:
            field, source = "transcript", text
            if expression is not None:
                for name, value in (("title", title), ("summary", summary), ("transcript", text)):
                    if _contains_all(value, query.q):
                        field, source = name, value
                        break
            hits.append(
                SearchHit(
                    sid,
                    device,
                    title,
                    started,
                    ended,
                    duration,
                    bullets,
                    segs,
                    _snippet(source, query.q) if query.q.strip() else "",
                    field,
                )
            )
        return hits, total


def _contains_all(text: str, query: str) -> bool:
    folded = fold(text)
    return all(t in folded for t in _TERM.findall(fold(query[:MAX_QUERY_CHARS]))[:MAX_TERMS])


class IndexedArchive:
    """An :class:`ArchiveStore` that keeps the search index in step with what this replica
    writes and removes (every other call goes straight through)."""

    def __init__(self, store: ArchiveStore, index: SearchIndex) -> None:
        self.store = store
        self.index = index

    @property
    def retention(self) -> int:
        return self.store.retention

    @retention.setter
    def retention(self, value: int) -> None:
        self.store.retention = value

    async def write_meeting(self, meeting: ArchivedMeeting, shards: Sequence[Shard]) -> None:
        await self.store.write_meeting(meeting, shards)
        try:
            await self.index.add(meeting, shards)
        except Exception as exc:  # the archive is what counts; the next sync catches up
            logger.warning("search index: {} not indexed: {}", meeting.session_id, exc)

    async def read_main(self, session_id: str) -> ArchivedMeeting | None:
        return await self.store.read_main(session_id)

    async def read_shard(self, session_id: str, k: int) -> Shard | None:
        return await self.store.read_shard(session_id, k)

    async def read_index(self) -> list[IndexEntry]:
        return await self.store.read_index()

    async def update_index(self, entry: IndexEntry) -> list[str]:
        return await self.store.update_index(entry)

    async def append_metrics(self, line: str) -> None:
        await self.store.append_metrics(line)

    async def remove_meeting(self, session_id: str) -> int:
        removed = await self.store.remove_meeting(session_id)
        try:
            await self.index.remove([session_id])
        except Exception as exc:
            logger.warning("search index: {} not removed: {}", session_id, exc)
        return removed

    async def list_meetings(self) -> list[str]:
        return await self.store.list_meetings()

    async def sweep_orphans(self, min_age_s: float) -> int:
        removed = await self.store.sweep_orphans(min_age_s)
        if removed:
            try:
                await self.index.sync()
            except Exception as exc:
                logger.warning("search index: sync after the sweep failed: {}", exc)
        return removed

    async def clean_leftovers(self) -> int:
        return await self.store.clean_leftovers()
