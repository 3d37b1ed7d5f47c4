"""What a workflow message does, whoever sent it (a badge, a voice command, the console): the
changes per group, the sender's reply, and which groups' badges must hear about it.

Routing (SPEC §7): the group of a task on update is ``task.groupKey`` > top-level ``groupKey`` >
the sender's group. ``complete`` / ``delete`` / ``assign`` act on the sender's own group only: an
id that is not there is ``NOT_FOUND`` (whether it exists elsewhere is never revealed), and a badge
never reads another group's list; it may only hand tasks to it. Moving a task that exists in the
home group to another group is "upsert there (with its fields), then remove here": two atomic
changes in that order, so a crash in between duplicates a task rather than losing one, and the
retry (same message id) completes the move.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loguru import logger
from pydantic import BaseModel
from supie_common.contracts import ErrorCode, device_token
from supie_common.contracts.device import (
    Task,
    TaskPatch,
    WorkflowAck,
    WorkflowAssign,
    WorkflowComplete,
    WorkflowDelete,
    WorkflowError,
    WorkflowList,
    WorkflowUpdate,
)
from supie_common.settings import WorkflowSection

from .groups import normalise_group
from .store import GroupResult, PatchOp, Snapshot, TaskStore, encode_value

__all__ = [
    "Change",
    "Outcome",
    "Operations",
    "Sender",
    "WorkflowRequest",
    "dedupe_key",
    "log_operation",
    "patch_op",
]

WorkflowRequest = WorkflowUpdate | WorkflowList | WorkflowComplete | WorkflowDelete | WorkflowAssign

# Server-owned fields a patch cannot set; ``groupKey`` is routing, not a field to copy.
_SERVER_FIELDS = frozenset({"groupKey", "createdAt", "updatedAt"})
# Core fields whose explicit null means "leave as is"; an empty owner unassigns.
_KEEP_ON_NULL = frozenset({"title", "priority", "status"})


@dataclass(frozen=True)
class Sender:
    """Who asked: a badge (its id, own group and owner name) or the console/API."""

    device_id: str
    group: str
    alias: str


@dataclass(frozen=True)
class Change:
    """A group an operation changed: its snapshot after the change, and its online badges."""

    snapshot: Snapshot
    online: list[str]
    fresh: bool  # changed now (not a replayed request)


@dataclass
class Outcome:
    """The result of one request: the sender's reply (``frames``, then the snapshot of its own
    group) and the groups whose badges must hear about it."""

    op: str
    frames: list[BaseModel] = field(default_factory=list)
    snapshot: Snapshot | None = None
    changed: dict[str, Change] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)
    idempotent: bool = False
    error: bool = False

    def add(self, result: GroupResult) -> None:
        if result.changed:
            self.changed[result.group] = Change(result.snapshot, result.online, not result.repeated)


def dedupe_key(device_id: str, message_id: str, request_id: str | None) -> tuple[str, bool]:
    """The key a request is applied once under, and whether it is a client ``requestId`` (kept
    ``idempotency_ttl_s``) rather than a transport message id (kept for the gateway's retries)."""
    if request_id:
        return f"r:{device_token(device_id or 'api')}:{request_id}", True
    return f"m:{message_id}", False


def patch_op(patch: TaskPatch, base: Task | None = None, *, create_only: bool = False) -> PatchOp:
    """The script's view of a patch: every field it names (unknown ones included), JSON-encoded.
    ``base``: the task's fields where it comes from (a move between groups)."""
    op = PatchOp(id=patch.id, create_only=create_only)
    if base is not None:
        for name, value in base.model_dump(by_alias=True, exclude_none=True).items():
            if name not in _SERVER_FIELDS or name == "createdAt":
                op.set[encode_value(name)] = encode_value(value)
    for name, value in patch.model_dump(by_alias=True, exclude_unset=True).items():
        if name in _SERVER_FIELDS:
            continue
        if value is None and name in _KEEP_ON_NULL:
            continue
        if name == "owner" and not value:  # "" (or null, which the bus drops) unassigns
            op.set.pop(encode_value(name), None)
            op.unset.append(encode_value(name))
            continue
        op.set[encode_value(name)] = encode_value(value)
    op.set[encode_value("id")] = encode_value(patch.id)
    return op


def log_operation(outcome: Outcome, by: str) -> None:
    """One line per operation; task contents never at INFO."""
    logger.info(
        "[Workflow] op={} groups=[{}] count={} by={} idempotent={}{}",
        outcome.op,
        ",".join(sorted(outcome.changed)),
        len(outcome.ids),
        by or "api",
        str(outcome.idempotent).lower(),
        " error=true" if outcome.error else "",
    )


class Operations:
    def __init__(self, store: TaskStore, config: WorkflowSection) -> None:
        self.store = store
        self.config = config

    async def handle(
        self, message: WorkflowRequest, sender: Sender, dedupe: str, ttl_s: int
    ) -> Outcome:
        if isinstance(message, WorkflowUpdate):
            if not message.tasks:
                return await self._pull("update", sender, message.request_id)
            return await self._update(message, sender, dedupe, ttl_s)
        if isinstance(message, WorkflowList):
            return await self._pull("list", sender, message.request_id)
        if isinstance(message, WorkflowComplete):
            result = await self.store.complete(sender.group, dedupe, message.ids, ttl_s=ttl_s)
            return self._single("complete", result, message.request_id, message.ids)
        if isinstance(message, WorkflowDelete):
            result = await self.store.delete(sender.group, dedupe, message.ids, ttl_s=ttl_s)
            return self._single("delete", result, message.request_id, message.ids)
        owner = (message.owner or "").strip() or sender.alias
        result = await self.store.assign(sender.group, dedupe, message.id, owner, ttl_s=ttl_s)
        return self._single("assign", result, message.request_id, [message.id])

    # -- events --------------------------------------------------------------------------------
    async def _pull(self, event: str, sender: Sender, request_id: str | None) -> Outcome:
        # A pull is always of the sender's own group: a badge never reads another group's list.
        out = Outcome(op=event if event == "list" else "pull")
        out.frames = [WorkflowAck(event=event, request_id=request_id)]
        out.snapshot = await self.store.snapshot(sender.group)
        return out

    def _single(
        self, event: str, result: GroupResult, request_id: str | None, asked: list[str]
    ) -> Outcome:
        out = Outcome(op=event)
        if result.status == "not_found":
            missing = result.ids[0] if result.ids else ""
            where = f"ids[{asked.index(missing)}]" if event != "assign" else "id"
            out.error = True
            out.frames = [
                WorkflowError(
                    code=ErrorCode.NOT_FOUND,
                    field=where,
                    message=f"{where}: no task {missing!r} in this group",
                    event=event,
                    request_id=request_id,
                )
            ]
            return out
        out.ids = result.ids
        out.idempotent = not result.changed
        out.frames = [
            WorkflowAck(
                event=event,
                idempotent=True if out.idempotent else None,
                request_id=request_id,
                ids=result.ids or None,
            )
        ]
        out.snapshot = result.snapshot
        out.add(result)
        return out

    async def _update(
        self, message: WorkflowUpdate, sender: Sender, dedupe: str, ttl_s: int
    ) -> Outcome:
        home = normalise_group(message.group_key, self.config) or sender.group
        # target group -> id -> the patch (a repeated id within one group: later fields win)
        by_group: dict[str, dict[str, TaskPatch]] = {}
        for patch in message.tasks:
            target = normalise_group(patch.group_key, self.config) or home
            merged = by_group.setdefault(target, {})
            if patch.id in merged:
                fields: dict[str, Any] = merged[patch.id].model_dump(
                    by_alias=True, exclude_unset=True
                )
                fields.update(patch.model_dump(by_alias=True, exclude_unset=True))
                patch = TaskPatch.model_validate(fields)
            merged[patch.id] = patch

        moving = [pid for g, ps in by_group.items() if g != home for pid in ps]
        home_tasks: dict[str, Task] = {}
        if moving:
            home_tasks = {t.id: t for t in (await self.store.snapshot(home)).tasks}
        moved_out = [pid for pid in moving if pid in home_tasks]
        groups = sorted(g for g in by_group if g != home)
        if home in by_group or moved_out:
            groups.append(home)  # the home group last: a move lands before it leaves

        if len(groups) > 1:
            overfull = await self._capacity_problem(by_group, moved_out, home)
            if overfull is not None:
                return self._full("update", overfull, message.request_id)

        results: list[GroupResult] = []
        full: str | None = None
        for g in groups:
            ops = [
                patch_op(p, home_tasks.get(p.id) if g != home else None)
                for p in by_group.get(g, {}).values()
            ]
            result = await self.store.update(
                g, dedupe, ops, moved_out if g == home else [], ttl_s=ttl_s
            )
            if result.status == "full":
                full = g  # lost a race for the last places: what went before still stands
                break
            results.append(result)

        out = self._full("update", full, message.request_id) if full else Outcome(op="update")
        for r in results:
            out.ids += [i for i in r.ids if i not in out.ids]
            out.add(r)
        if full:
            return out
        out.idempotent = not out.changed
        mine = next((r for r in results if r.group == sender.group), None)
        out.snapshot = mine.snapshot if mine else await self.store.snapshot(sender.group)
        out.frames = [
            WorkflowAck(
                event="update",
                idempotent=True if out.idempotent else None,
                request_id=message.request_id,
                ids=out.ids or None,
                groups=sorted(out.changed) or None,
            )
        ]
        return out

    async def _capacity_problem(
        self, by_group: dict[str, dict[str, TaskPatch]], moved_out: list[str], home: str
    ) -> str | None:
        """A group the update would overfill (checked before any of its changes: each group's
        script checks again atomically)."""
        for g, patches in by_group.items():
            have = {t.id for t in (await self.store.snapshot(g)).tasks}
            count = len(have | set(patches)) - (len(set(moved_out) & have) if g == home else 0)
            if count > self.store.max_tasks:
                return g
        return None

    def _full(self, event: str, group: str, request_id: str | None) -> Outcome:
        limit = self.store.max_tasks
        out = Outcome(op=event, error=True)
        out.frames = [
            WorkflowError(
                code=ErrorCode.SCHEMA_INVALID,
                field="tasks",
                message=f"tasks: group {group!r} would hold more than {limit} tasks",
                event=event,
                request_id=request_id,
            )
        ]
        return out

    async def import_tasks(
        self, group: str, patches: list[TaskPatch], dedupe: str, ttl_s: int
    ) -> Outcome:
        """Create the tasks that do not exist yet (an import never changes an existing one)."""
        ops = [patch_op(p, create_only=True) for p in patches]
        result = await self.store.update(group, dedupe, ops, ttl_s=ttl_s)
        if result.status == "full":
            return self._full("import", group, None)
        out = Outcome(op="import", ids=result.ids, idempotent=not result.changed)
        out.add(result)
        return out
