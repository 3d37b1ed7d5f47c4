"""The shared archive (``meeting.archive.backend: nats``) on JetStream Object Store + KV,
replicated by the NATS cluster (``meeting.archive.replicas``): meeting replicas on every host see
every meeting, and no other service is needed. The records are the files backend's
(:func:`~.archive.layout`), under the same names:

- object store ``<bucket>``: ``<id>.json`` (the meeting) and ``segments/<id>_shard_K.json``
  (100 segments each); the object store chunks them, so no record is too big for the bus;
- KV ``<bucket>_index``, key ``index``: the ``retention`` most recent meetings by ``endedAt``
  (the JSON of ``index.json``, zlib-deflated once over :data:`DEFLATE_OVER`), replaced only by a
  compare-and-set on its revision: concurrent finalizes on any number of hosts never lose an
  entry, without a lock;
- KV ``<bucket>_metrics``: one key per metrics line (named by its digest, so a resumed finalize
  that appends its line again does not double it), kept in the order written.

An object's chunks are stored before its metadata, which is one message: a reader never sees a
torn record. Chunks whose metadata never came (a writer killed mid-upload) or that an overwrite
left behind are removed at start and by the orphan sweep once older than a grace period (another
host may be uploading them at that moment). NATS errors are retried for a while (a stream leader
election takes seconds), then raised as :class:`ArchiveUnavailable`, an ``OSError`` like a failing
disk on the files backend: the finalize is resumed later, an API read answers 503.

Object Store layout (the NATS object store format): stream ``OBJ_<bucket>``, metadata on
``$O.<bucket>.M.<base64url(name)>``, chunks on ``$O.<bucket>.C.<nuid>``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import re
import time
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TypeVar

import nats.errors
import nats.js.errors
from loguru import logger
from nats.aio.client import Client as NATS
from nats.js.api import KeyValueConfig, ObjectInfo, StorageType
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore
from pydantic import BaseModel, TypeAdapter, ValidationError
from supie_common.bus import ensure_replicas

from .archive import IndexGroupCommit, merge_index, valid_session_id
from .models import ArchivedMeeting, IndexEntry, Shard

__all__ = [
    "DEFLATE_OVER",
    "INDEX_KEY",
    "LEFTOVER_GRACE_S",
    "ArchiveUnavailable",
    "NatsArchive",
]

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

INDEX_KEY = "index"
DEFLATE_OVER = 64 * 1024  # an index this big is stored deflated (room for ~20x the entries)
LEFTOVER_GRACE_S = 300.0  # unreferenced chunks younger than this may be an upload in progress
WRITE_RETRY_S = 30.0  # a write keeps trying through a leader election for this long
READ_RETRY_S = 3.0  # a read gives up sooner: the API answers 503 and the client asks again
JS_TIMEOUT_S = 3.0
CACHE_SIZE = 512
PAYLOAD_HEADROOM = 4096
_INDEX = TypeAdapter(list[IndexEntry])
_MAIN_NAME = re.compile(r"^(?P<id>[A-Za-z0-9_-]{1,128})\.json$")
_SHARD_NAME = re.compile(r"^segments/(?P<id>[A-Za-z0-9_-]{1,128})_shard_(?P<k>\d+)\.json$")
# Not worth retrying: the request itself is wrong, or the answer is final.
_PERMANENT: tuple[type[BaseException], ...] = (
    nats.js.errors.NotFoundError,
    nats.js.errors.KeyWrongLastSequenceError,
    nats.js.errors.BadRequestError,
    nats.errors.MaxPayloadError,
    nats.js.errors.InvalidBucketNameError,
    nats.js.errors.InvalidKeyError,
    nats.js.errors.BadObjectMetaError,
)
_TRANSIENT = (nats.errors.Error, TimeoutError, ConnectionError)


class ArchiveUnavailable(OSError):
    """The archive could not be reached in time (NATS down or electing a leader)."""


def _main_name(session_id: str) -> str:
    return f"{session_id}.json"


def _shard_name(session_id: str, k: int) -> str:
    return f"segments/{session_id}_shard_{k}.json"


def _owner(name: str) -> str | None:
    """The meeting a record belongs to (None: not one of ours)."""
    match = _MAIN_NAME.match(name) or _SHARD_NAME.match(name)
    return match["id"] if match else None


def _dump(model: BaseModel) -> bytes:
    return model.model_dump_json(by_alias=True, exclude_none=True).encode()


def _digest(data: bytes) -> str:
    return "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()


def _mtime(info: ObjectInfo) -> float | None:
    """The object's write time (RFC 3339, perhaps with nanoseconds) as epoch seconds."""
    raw = info.mtime
    if not raw:
        return None
    raw = re.sub(r"(\.\d{6})\d+", r"\1", raw.replace("Z", "+00:00"))
    try:
        return datetime.fromisoformat(raw).timestamp()
    except ValueError:
        return None


async def _retrying(op: Callable[[], Awaitable[T]], what: str, budget_s: float) -> T:
    """``op()`` until it succeeds, fails for good, or ``budget_s`` is spent (then
    :class:`ArchiveUnavailable`)."""
    deadline = time.monotonic() + budget_s
    backoff = 0.1
    while True:
        try:
            return await op()
        except _PERMANENT:
            raise
        except _TRANSIENT as exc:
            if time.monotonic() + backoff > deadline:
                raise ArchiveUnavailable(f"archive: {what} failed: {exc!r}") from exc
            logger.debug("archive: {} failed ({!r}), retrying", what, exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)


class NatsArchive:
    """:class:`~.archive.ArchiveStore` on JetStream. Open it with :meth:`open`."""

    def __init__(
        self,
        js: JetStreamContext,
        objects: ObjectStore,
        index_kv: KeyValue,
        metrics_kv: KeyValue,
        *,
        bucket: str,
        budget: int,
        retention: int = 100,
        leftover_grace_s: float = LEFTOVER_GRACE_S,
    ) -> None:
        self.js = js
        self.objects = objects
        self.index_kv = index_kv
        self.metrics_kv = metrics_kv
        self.bucket = bucket
        self.stream = f"OBJ_{bucket}"
        self.budget = budget
        self.retention = retention
        self.leftover_grace_s = leftover_grace_s
        self.index_conflicts = 0  # compare-and-set retries (another writer was first)
        self._cache: OrderedDict[str, tuple[str, BaseModel]] = OrderedDict()
        self._index_commit = IndexGroupCommit(self._apply, ArchiveUnavailable)

    @classmethod
    async def open(
        cls,
        nc: NATS,
        bucket: str = "supie_meetings",
        *,
        retention: int = 100,
        replicas: int = 1,
        leftover_grace_s: float = LEFTOVER_GRACE_S,
        timeout_s: float = WRITE_RETRY_S,
    ) -> NatsArchive:
        """Open the buckets, creating them (file storage, ``replicas``) when missing; buckets
        with fewer replicas are raised to ``replicas``."""
        js = nc.jetstream(timeout=JS_TIMEOUT_S)

        async def objects() -> ObjectStore:
            try:
                return await js.object_store(bucket)
            except nats.js.errors.BucketNotFoundError:
                pass
            try:
                return await js.create_object_store(
                    bucket, storage=StorageType.FILE, replicas=replicas
                )
            except nats.js.errors.BadRequestError:  # another replica created it just now
                return await js.object_store(bucket)

        async def kv(name: str) -> KeyValue:
            try:
                return await js.key_value(name)
            except nats.js.errors.BucketNotFoundError:
                pass
            config = KeyValueConfig(
                bucket=name, history=1, storage=StorageType.FILE, replicas=replicas
            )
            try:
                return await js.create_key_value(config)
            except nats.js.errors.BadRequestError:
                return await js.key_value(name)

        store = await _retrying(objects, f"opening object store {bucket}", timeout_s)
        index = await _retrying(lambda: kv(f"{bucket}_index"), "opening the index", timeout_s)
        metrics = await _retrying(lambda: kv(f"{bucket}_metrics"), "opening metrics", timeout_s)
        for stream in (f"OBJ_{bucket}", f"KV_{bucket}_index", f"KV_{bucket}_metrics"):
            await ensure_replicas(js, stream, replicas)
        budget = max(nc.max_payload - PAYLOAD_HEADROOM, 16 * 1024)
        return cls(
            js,
            store,
            index,
            metrics,
            bucket=bucket,
            budget=budget,
            retention=retention,
            leftover_grace_s=leftover_grace_s,
        )

    # -- objects -------------------------------------------------------------------------------
    def _meta_subject(self, name: str) -> str:
        return f"$O.{self.bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"

    def _chunk_subject(self, nuid: str) -> str:
        return f"$O.{self.bucket}.C.{nuid}"

    async def _put(self, name: str, data: bytes) -> None:
        await _retrying(lambda: self.objects.put(name, data), f"writing {name}", WRITE_RETRY_S)
        self._cache.pop(name, None)

    async def _info(self, name: str, budget_s: float = READ_RETRY_S) -> ObjectInfo | None:
        async def get() -> ObjectInfo | None:
            try:
                return await self.objects.get_info(name)
            except nats.js.errors.NotFoundError:
                return None

        return await _retrying(get, f"reading {name}", budget_s)

    async def _chunks(self, info: ObjectInfo) -> bytes | None:
        """The object's bytes, read chunk by chunk with direct stream reads (no consumer); None
        when they are gone (deleted or overwritten meanwhile)."""
        assert info.nuid is not None
        subject = self._chunk_subject(info.nuid)
        parts: list[bytes] = []
        seq = 1
        try:
            for _ in range(info.chunks or 0):
                msg = await self.js.get_msg(self.stream, seq=seq, subject=subject, next=True)
                if msg.seq is None or msg.subject != subject:
                    return None
                parts.append(msg.data or b"")
                seq = msg.seq + 1
        except nats.js.errors.NotFoundError:
            return None
        data = b"".join(parts)
        if info.digest and info.digest.upper() != _digest(data).upper():
            return None
        return data

    async def _read(self, name: str, model: type[M]) -> M | None:
        for _ in range(3):  # an overwrite between the metadata and the chunks: look again
            info = await self._info(name)
            if info is None or info.nuid is None:
                return None
            hit = self._cache.get(name)
            if hit is not None and hit[0] == info.nuid:
                self._cache.move_to_end(name)
                return hit[1]  # type: ignore[return-value]

            async def fetch(info: ObjectInfo = info) -> bytes | None:
                return await self._chunks(info)

            data = await _retrying(fetch, f"reading {name}", READ_RETRY_S)
            if data is None:
                continue
            try:
                if len(data) > 256 * 1024:
                    value = await asyncio.to_thread(model.model_validate_json, data)
                else:
                    value = model.model_validate_json(data)
            except (ValidationError, ValueError) as exc:
                logger.warning("archive: {} does not parse: {}", name, str(exc)[:200])
                return None
            self._cache[name] = (info.nuid, value)
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
            return value
        logger.warning("archive: {} changed under three reads in a row, or lost its chunks", name)
        return None

    async def _remove(self, name: str, info: ObjectInfo | None = None) -> bool:
        """Metadata first (the record is gone at once for every reader), then the chunks; no
        tombstone is kept. Failures are logged (what is left is swept later)."""
        try:
            if info is None:
                info = await self._info(name, WRITE_RETRY_S)
            if info is None:
                return False
            await _retrying(
                lambda: self.js.purge_stream(self.stream, subject=self._meta_subject(name)),
                f"removing {name}",
                WRITE_RETRY_S,
            )
            self._cache.pop(name, None)
            if info.nuid:
                await _retrying(
                    lambda: self.js.purge_stream(
                        self.stream, subject=self._chunk_subject(info.nuid or "")
                    ),
                    f"removing the chunks of {name}",
                    WRITE_RETRY_S,
                )
        except (ArchiveUnavailable, nats.errors.Error) as exc:
            logger.warning("archive: cannot remove {}: {}", name, exc)
            return False
        return True

    async def _all_infos(self) -> list[ObjectInfo]:
        async def listing() -> list[ObjectInfo]:
            try:
                infos = await asyncio.wait_for(self.objects.list(ignore_deletes=True), 60)
            except nats.js.errors.NotFoundError:
                return []
            return [i for i in infos if not i.deleted and i.name]

        return await _retrying(listing, "listing the objects", WRITE_RETRY_S)

    # -- writes ---------------------------------------------------------------------------------
    async def write_meeting(self, meeting: ArchivedMeeting, shards: Sequence[Shard]) -> None:
        if not valid_session_id(meeting.session_id):
            raise ValueError("sessionId: not a safe object name")
        for shard in shards:
            await self._put(_shard_name(meeting.session_id, shard.shard), _dump(shard))
        await self._put(_main_name(meeting.session_id), _dump(meeting))

    async def update_index(self, entry: IndexEntry) -> list[str]:
        """Group commit (a burst of finalizes here is one compare-and-set); the ids evicted by a
        batch are returned to one of its callers."""
        return await self._index_commit.submit(entry)

    async def _apply(self, entries: list[IndexEntry]) -> list[str]:
        deadline = time.monotonic() + WRITE_RETRY_S
        while True:
            index, revision = await self._read_index(WRITE_RETRY_S)
            evicted: list[str] = []
            for entry in entries:
                index, out = merge_index(index, entry, self.retention)
                evicted += out
            data = self._encode_index(index)

            async def write(data: bytes = data, revision: int | None = revision) -> None:
                if revision is None:
                    await self.index_kv.create(INDEX_KEY, data)
                else:
                    await self.index_kv.update(INDEX_KEY, data, last=revision)

            try:
                await _retrying(write, "writing the index", max(deadline - time.monotonic(), 1))
            except nats.js.errors.KeyWrongLastSequenceError:
                # Another host wrote it first: merge into theirs.
                self.index_conflicts += 1
                if time.monotonic() > deadline:
                    raise ArchiveUnavailable("index: too many concurrent writers") from None
                await asyncio.sleep(random.random() * 0.02)
                continue
            kept = {e.session_id for e in index}
            return [sid for sid in dict.fromkeys(evicted) if sid not in kept]

    def _encode_index(self, index: list[IndexEntry]) -> bytes:
        data = json.dumps(
            [e.model_dump(by_alias=True, exclude_none=True) for e in index],
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        if len(data) > DEFLATE_OVER:
            data = zlib.compress(data, 6)
        if len(data) > self.budget:
            raise ArchiveUnavailable(
                f"the index of {len(index)} meetings is {len(data)} bytes, over the bus limit "
                f"({self.budget}): lower meeting.retention or raise the server's max_payload"
            )
        return data

    async def append_metrics(self, line: str) -> None:
        key = hashlib.sha256(line.encode()).hexdigest()[:40]
        await _retrying(
            lambda: self.metrics_kv.put(key, line.encode()), "appending metrics", WRITE_RETRY_S
        )

    async def remove_meeting(self, session_id: str) -> int:
        if not valid_session_id(session_id):
            return 0
        try:
            main = await self._read(_main_name(session_id), ArchivedMeeting)
        except ArchiveUnavailable as exc:
            logger.warning("archive: cannot remove {}: {}", session_id, exc)
            return 0
        removed = 0
        if main is not None:
            # Shards first: while the main record is there, it says how many there are.
            for k in range(main.shard_count):
                removed += await self._remove(_shard_name(session_id, k))
        else:
            k = 0
            while await self._remove(_shard_name(session_id, k)):
                removed += 1
                k += 1
        return removed + await self._remove(_main_name(session_id))

    # -- reads ----------------------------------------------------------------------------------
    async def _read_index(
        self, budget_s: float = READ_RETRY_S
    ) -> tuple[list[IndexEntry], int | None]:
        async def get() -> tuple[bytes | None, int | None]:
            try:
                entry = await self.index_kv.get(INDEX_KEY)
            except nats.js.errors.KeyNotFoundError:
                return None, None
            return entry.value, entry.revision

        raw, revision = await _retrying(get, "reading the index", budget_s)
        if not raw:
            return [], revision
        try:
            data = raw if raw[:1] == b"[" else zlib.decompress(raw)
            return _INDEX.validate_json(data), revision
        except (ValidationError, ValueError, zlib.error) as exc:
            logger.warning("archive: the index does not parse: {}", str(exc)[:200])
            return [], revision

    async def read_index(self) -> list[IndexEntry]:
        return (await self._read_index())[0]

    async def read_main(self, session_id: str) -> ArchivedMeeting | None:
        if not valid_session_id(session_id):
            return None
        return await self._read(_main_name(session_id), ArchivedMeeting)

    async def read_shard(self, session_id: str, k: int) -> Shard | None:
        if not valid_session_id(session_id) or k < 0:
            return None
        return await self._read(_shard_name(session_id, k), Shard)

    async def list_meetings(self) -> list[str]:
        infos = await self._all_infos()
        return sorted({m["id"] for i in infos if (m := _MAIN_NAME.match(i.name or ""))})

    async def metrics_lines(self) -> list[str]:
        """Every metrics line, oldest first (for operators and tests)."""

        async def read() -> list[str]:
            watcher = await self.metrics_kv.watchall(ignore_deletes=True)
            lines: list[str] = []
            try:
                while (entry := await watcher.updates(timeout=10)) is not None:
                    if entry.value:
                        lines.append(entry.value.decode())
            finally:
                await watcher.stop()
            return lines

        return await _retrying(read, "reading metrics", WRITE_RETRY_S)

    # -- housekeeping -----------------------------------------------------------------------------
    async def sweep_orphans(self, min_age_s: float) -> int:
        keep = {e.session_id for e in await self.read_index()}
        cutoff = time.time() - min_age_s
        removed = 0
        for info in await self._all_infos():
            owner = _owner(info.name or "")
            if owner is None or owner in keep:
                continue
            written = _mtime(info)
            if written is not None and written > cutoff:
                continue
            removed += await self._remove(info.name or "", info)
        return removed + await self._clean_chunks(min_age_s)

    async def _clean_chunks(self, grace_s: float) -> int:
        """Chunks no metadata points to (interrupted uploads, overwrites cut short), older
        than ``grace_s``."""
        prefix = f"$O.{self.bucket}.C."
        info = await _retrying(
            lambda: self.js.stream_info(self.stream, subjects_filter=f"{prefix}>"),
            "listing chunks",
            WRITE_RETRY_S,
        )
        subjects = list((info.state.subjects or {}).keys())
        if not subjects:
            return 0
        referenced = {i.nuid for i in await self._all_infos()}
        now = time.time()
        removed = 0
        for subject in subjects:
            if subject[len(prefix) :] in referenced:
                continue
            try:
                last = await self.js.get_last_msg(self.stream, subject)
                if last.time is not None and now - last.time.timestamp() < grace_s:
                    continue
                await self.js.purge_stream(self.stream, subject=subject)
                removed += 1
            except nats.js.errors.NotFoundError:
                continue
            except nats.errors.Error as exc:
                logger.warning("archive: cannot remove leftover chunks {}: {}", subject, exc)
        return removed

    async def clean_leftovers(self) -> int:
        return await self._clean_chunks(self.leftover_grace_s)
