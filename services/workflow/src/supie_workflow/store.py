"""Tasks in Redis: one atomic script call per change to one group (see :mod:`.lua`).

Keys of group ``g`` (``<t>`` = ``device_token(g)``) share the hash tag ``{g:<t>}``:
``supie:wf:{g:<t>}:tasks`` (hash id -> packed task), ``:order`` (zset, creation order),
``:version`` (counter, +1 per change), ``:entries`` (hash id -> the task's JSON text, with its
priority, for snapshots), ``:seen:<key>`` (a request's recorded outcome, with a TTL).
``supie:wf:groups`` (a set) indexes the groups ever written, for listings; it is written before the
group's first change, so it never misses a group that has tasks.

A snapshot comes back from the script as the tasks' JSON texts: pushed to badges as they are
(one frame per group and change, no re-encoding), parsed into :class:`Task` models only where
code reads them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any, Literal

from redis.asyncio import Redis
from supie_common.contracts import device_token, now_ms
from supie_common.contracts.device import Task
from supie_common.store import K

from .batch import ChangeBatcher
from .lua import READ_SCRIPT, WRITE_SCRIPT

__all__ = [
    "GROUPS_INDEX",
    "GroupKeys",
    "GroupResult",
    "PatchOp",
    "Snapshot",
    "Status",
    "TaskStore",
    "encode_value",
    "json_text",
]

GROUPS_INDEX = "supie:wf:groups"
MAX_PATCHES_PER_CHANGE = 999  # the creation sequence leaves 3 digits for the position

Status = Literal["ok", "idempotent", "not_found", "full"]


# One encoder, built once: json.dumps with options builds a new one on every call.
_COMPACT = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode
# What pydantic writes for a string (UTF-8 as is), for payloads built by hand.
_UTF8 = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def json_text(value: str | list[str]) -> str:
    """A string (or a list of strings) as JSON, as ``model_dump_json`` would write it."""
    return _UTF8(value)


def encode_value(value: Any) -> str:
    """Canonical JSON of one field value (the scripts compare these strings)."""
    return _COMPACT(value)


class GroupKeys:
    """The Redis keys of one group (:meth:`of` caches them)."""

    @staticmethod
    @lru_cache(maxsize=16384)
    def of(group: str) -> GroupKeys:
        return GroupKeys(group)

    def __init__(self, group: str) -> None:
        base = f"supie:wf:{{g:{device_token(group)}}}"
        self.tasks = f"{base}:tasks"
        self.order = f"{base}:order"
        self.version = f"{base}:version"
        self.entries = f"{base}:entries"
        self.base = base
        self.presence = K.group(group)  # the gateway's presence set (another slot)

    def seen(self, dedupe: str) -> str:
        return f"{self.base}:seen:{dedupe}"


@dataclass(frozen=True)
class Snapshot:
    """A group's task list at one version, in snapshot order: priority (P0 first), then
    creation. ``items`` are the tasks' JSON texts."""

    group: str
    version: int
    items: tuple[str, ...]

    @classmethod
    def from_script(cls, group: str, version: int, flat: list[Any]) -> Snapshot:
        # entries "<priority>\n<JSON>" in creation order (see .lua)
        entries = [str(e).partition("\n") for e in flat]
        entries.sort(key=lambda e: e[0])  # stable: creation order within a priority (0..3)
        return cls(group, version, tuple(text for _, _, text in entries))

    @cached_property
    def frame(self) -> str:
        """The ``WorkflowSnapshot`` text frame (what ``to_frame`` makes of the model)."""
        group = _COMPACT(self.group)
        tasks = ",".join(self.items)
        return f'{{"type":"workflow","event":"update","tasks":[{tasks}],"groupKey":{group}}}'

    @cached_property
    def frame_json(self) -> str:
        """:attr:`frame` as a JSON string, for the payloads that carry it (built once)."""
        return _UTF8(self.frame)

    @cached_property
    def outbound(self) -> bytes:
        """``encode(DeviceOutbound(frame=self.frame))``, built once per snapshot however many
        badges it goes to (the frame is a string: escaping it is all the encoding there is)."""
        return f'{{"frame":{self.frame_json},"close":false,"close_delay_s":0.0}}'.encode()

    @cached_property
    def tasks(self) -> list[Task]:
        return [Task.model_validate_json(text) for text in self.items]

    def dicts(self) -> list[dict[str, Any]]:
        return [json.loads(text) for text in self.items]


@dataclass
class PatchOp:
    """One task's change for the update script: fields to set (JSON-encoded name -> value),
    fields to remove, and whether an existing task may be changed at all (imports: no)."""

    id: str
    set: dict[str, str] = field(default_factory=dict)
    unset: list[str] = field(default_factory=list)
    create_only: bool = False

    def payload(self) -> list[Any]:
        pairs = [x for kv in self.set.items() for x in kv]
        return [self.id, "create" if self.create_only else "upsert", pairs, self.unset]


@dataclass(frozen=True)
class GroupResult:
    """The outcome of one change to one group, with the group's snapshot right after it and
    who in the group was online then."""

    group: str
    status: Status
    ids: list[str]  # the tasks changed; for not_found, the missing id; for full, the limit
    snapshot: Snapshot  # empty when refused
    repeated: bool  # the request was seen before: nothing applied now
    online: list[str]

    @property
    def changed(self) -> bool:
        return self.status == "ok"


class TaskStore:
    def __init__(
        self, redis: Redis, *, max_tasks: int, seen_ttl_s: int, presence_ttl_s: int
    ) -> None:
        self.redis = redis
        self.max_tasks = max_tasks
        self.seen_ttl_s = seen_ttl_s
        self.presence_ttl_s = presence_ttl_s
        self._write = redis.register_script(WRITE_SCRIPT)
        self._read = redis.register_script(READ_SCRIPT)
        self._changes = ChangeBatcher(redis, WRITE_SCRIPT, self._write.sha)
        self._indexed: set[str] = set()

    async def _index(self, group: str) -> None:
        if group not in self._indexed:
            self._indexed.add(group)  # before the await: one SADD, not one per racing request
            try:
                await self.redis.sadd(GROUPS_INDEX, group)
            except BaseException:
                self._indexed.discard(group)
                raise

    def _online_cutoff(self) -> int:
        return int(time.time() * 1000) - self.presence_ttl_s * 1000

    async def _run(
        self, op: str, group: str, dedupe: str, payload: dict[str, Any], *, ttl_s: int | None = None
    ) -> GroupResult:
        await self._index(group)
        keys = GroupKeys.of(group)
        argv = [
            op,
            str(now_ms()),
            str(ttl_s or self.seen_ttl_s),
            str(self.max_tasks),
            encode_value(group),
            _COMPACT(payload),
        ]
        script_keys = [keys.tasks, keys.order, keys.version, keys.entries, keys.seen(dedupe)]
        changed, online = await self._changes.run(
            script_keys, argv, keys.presence, self._online_cutoff()
        )
        status, ids, version, flat, repeated = changed
        return GroupResult(
            group=group,
            status=status,
            ids=[str(i) for i in ids],
            snapshot=Snapshot.from_script(group, int(version), flat),
            repeated=bool(repeated),
            online=sorted(str(m) for m in online),
        )

    async def update(
        self,
        group: str,
        dedupe: str,
        patches: list[PatchOp],
        moved_out: list[str] | None = None,
        *,
        ttl_s: int | None = None,
    ) -> GroupResult:
        if len(patches) > MAX_PATCHES_PER_CHANGE:
            raise ValueError(f"at most {MAX_PATCHES_PER_CHANGE} tasks per change")
        payload = {"p": [p.payload() for p in patches], "d": moved_out or []}
        return await self._run("update", group, dedupe, payload, ttl_s=ttl_s)

    async def complete(
        self, group: str, dedupe: str, ids: list[str], *, ttl_s: int | None = None
    ) -> GroupResult:
        return await self._run("complete", group, dedupe, {"ids": list(ids)}, ttl_s=ttl_s)

    async def delete(
        self, group: str, dedupe: str, ids: list[str], *, ttl_s: int | None = None
    ) -> GroupResult:
        return await self._run("delete", group, dedupe, {"ids": list(ids)}, ttl_s=ttl_s)

    async def assign(
        self, group: str, dedupe: str, task_id: str, owner: str, *, ttl_s: int | None = None
    ) -> GroupResult:
        payload = {"id": task_id, "owner": encode_value(owner)}
        return await self._run("assign", group, dedupe, payload, ttl_s=ttl_s)

    async def snapshot(self, group: str) -> Snapshot:
        """The group's list (one atomic read)."""
        keys = GroupKeys.of(group)
        read_keys = [keys.tasks, keys.order, keys.version, keys.entries]
        version, flat = await self._read(keys=read_keys, args=[])
        return Snapshot.from_script(group, int(version), flat)

    async def online(self, group: str) -> list[str]:
        """The group's online badges: presence entries renewed within the presence TTL (one
        read; expired entries are skipped here and pruned by ``Presence`` users)."""
        members = await self.redis.zrangebyscore(
            GroupKeys.of(group).presence, self._online_cutoff(), "+inf"
        )
        return sorted(str(m) for m in members)

    @property
    def round_trips(self) -> int:
        return self._changes.round_trips

    async def aclose(self) -> None:
        await self._changes.aclose()

    async def version(self, group: str) -> int:
        value = await self.redis.get(GroupKeys.of(group).version)
        return int(value or 0)

    async def versions(self, groups: list[str]) -> list[int]:
        """The groups' versions (one round trip, however many groups)."""
        if not groups:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for g in groups:
            pipe.get(GroupKeys.of(g).version)
        return [int(v or 0) for v in await pipe.execute()]

    async def seen(self, group: str, dedupe: str) -> bool:
        return bool(await self.redis.exists(GroupKeys.of(group).seen(dedupe)))

    async def groups(self) -> list[str]:
        return sorted(str(g) for g in await self.redis.smembers(GROUPS_INDEX))

    async def counts(self, groups: list[str]) -> list[int]:
        """How many tasks each group holds (one round trip)."""
        pipe = self.redis.pipeline(transaction=False)
        for g in groups:
            pipe.zcard(GroupKeys.of(g).order)
        return [int(n) for n in await pipe.execute()] if groups else []
