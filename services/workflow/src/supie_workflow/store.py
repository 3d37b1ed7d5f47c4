"""Tasks in Redis: one atomic script call per change to one group (see :mod:`.lua`).

Keys of group ``g`` (``<t>`` = ``device_token(g)``) share the hash tag ``{g:<t>}``:
``supie:wf:{g:<t>}:tasks`` (hash id -> packed task), ``:order`` (zset, creation order),
``:version`` (counter, +1 per change), ``:seen:<key>`` (a request's recorded outcome, with a TTL).
``supie:wf:groups`` (a set) indexes the groups ever written, for listings; it is written before the
group's first change, so it never misses a group that has tasks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from redis.asyncio import Redis
from supie_common.contracts import device_token, now_ms
from supie_common.contracts.device import Task

from .lua import READ_SCRIPT, WRITE_SCRIPT

__all__ = [
    "GROUPS_INDEX",
    "GroupKeys",
    "GroupResult",
    "PatchOp",
    "Status",
    "TaskStore",
    "encode_value",
    "sort_tasks",
]

GROUPS_INDEX = "supie:wf:groups"
MAX_PATCHES_PER_CHANGE = 999  # the creation sequence leaves 3 digits for the position

Status = Literal["ok", "idempotent", "not_found", "full"]


def encode_value(value: Any) -> str:
    """Canonical JSON of one field value (the scripts compare these strings)."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


def sort_tasks(tasks: list[Task]) -> list[Task]:
    """Snapshot order: priority (P0 first), then creation (the list arrives in creation order)."""
    return sorted(tasks, key=lambda t: t.priority)


class GroupKeys:
    """The Redis keys of one group."""

    def __init__(self, group: str) -> None:
        base = f"supie:wf:{{g:{device_token(group)}}}"
        self.tasks = f"{base}:tasks"
        self.order = f"{base}:order"
        self.version = f"{base}:version"
        self.base = base

    def seen(self, dedupe: str) -> str:
        return f"{self.base}:seen:{dedupe}"


@dataclass
class PatchOp:
    """One task's change for the update script: fields to set (JSON-encoded name -> value),
    fields to remove, and whether an existing task may be changed at all (imports: no)."""

    id: str
    set: dict[str, str] = field(default_factory=dict)
    unset: list[str] = field(default_factory=list)
    create_only: bool = False

    def args(self) -> list[str]:
        out = [self.id, "create" if self.create_only else "upsert", str(len(self.set))]
        for name, value in self.set.items():
            out += [name, value]
        out.append(str(len(self.unset)))
        out += self.unset
        return out


@dataclass(frozen=True)
class GroupResult:
    """The outcome of one change to one group, with the group's snapshot right after it."""

    group: str
    status: Status
    ids: list[str]  # the tasks changed; for not_found, the missing id; for full, the limit
    version: int
    tasks: list[Task]  # sorted; empty when refused
    repeated: bool  # the request was seen before: nothing applied now

    @property
    def changed(self) -> bool:
        return self.status == "ok"


def _tasks(raw: list[str]) -> list[Task]:
    return sort_tasks([Task.model_validate_json(text) for text in raw])


class TaskStore:
    def __init__(self, redis: Redis, *, max_tasks: int, seen_ttl_s: int) -> None:
        self.redis = redis
        self.max_tasks = max_tasks
        self.seen_ttl_s = seen_ttl_s
        self._write = redis.register_script(WRITE_SCRIPT)
        self._read = redis.register_script(READ_SCRIPT)
        self._indexed: set[str] = set()

    async def _index(self, group: str) -> None:
        if group not in self._indexed:
            await self.redis.sadd(GROUPS_INDEX, group)
            self._indexed.add(group)

    async def _run(
        self, op: str, group: str, dedupe: str, args: list[str], *, ttl_s: int | None = None
    ) -> GroupResult:
        await self._index(group)
        keys = GroupKeys(group)
        argv = [
            op,
            str(now_ms()),
            str(ttl_s or self.seen_ttl_s),
            str(self.max_tasks),
            encode_value(group),
            *args,
        ]
        status, ids, version, snapshot, repeated = await self._write(
            keys=[keys.tasks, keys.order, keys.version, keys.seen(dedupe)], args=argv
        )
        return GroupResult(
            group=group,
            status=status,
            ids=[str(i) for i in ids],
            version=int(version),
            tasks=_tasks(snapshot),
            repeated=bool(repeated),
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
        args = [str(len(patches))]
        for p in patches:
            args += p.args()
        moved_out = moved_out or []
        args += [str(len(moved_out)), *moved_out]
        return await self._run("update", group, dedupe, args, ttl_s=ttl_s)

    async def complete(
        self, group: str, dedupe: str, ids: list[str], *, ttl_s: int | None = None
    ) -> GroupResult:
        return await self._run("complete", group, dedupe, list(ids), ttl_s=ttl_s)

    async def delete(
        self, group: str, dedupe: str, ids: list[str], *, ttl_s: int | None = None
    ) -> GroupResult:
        return await self._run("delete", group, dedupe, list(ids), ttl_s=ttl_s)

    async def assign(
        self, group: str, dedupe: str, task_id: str, owner: str, *, ttl_s: int | None = None
    ) -> GroupResult:
        return await self._run("assign", group, dedupe, [task_id, encode_value(owner)], ttl_s=ttl_s)

    async def snapshot(self, group: str) -> tuple[int, list[Task]]:
        """The group's version and its sorted task list (one atomic read)."""
        keys = GroupKeys(group)
        version, raw = await self._read(keys=[keys.tasks, keys.order, keys.version], args=[])
        return int(version), _tasks(raw)

    async def version(self, group: str) -> int:
        value = await self.redis.get(GroupKeys(group).version)
        return int(value or 0)

    async def task(self, group: str, task_id: str) -> Task | None:
        _, tasks = await self.snapshot(group)
        return next((t for t in tasks if t.id == task_id), None)

    async def seen(self, group: str, dedupe: str) -> bool:
        return bool(await self.redis.exists(GroupKeys(group).seen(dedupe)))

    async def groups(self) -> list[str]:
        return sorted(str(g) for g in await self.redis.smembers(GROUPS_INDEX))

    async def count(self, group: str) -> int:
        return int(await self.redis.zcard(GroupKeys(group).order))
