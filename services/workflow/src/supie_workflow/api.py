"""The workflow HTTP API, answered over NATS for the gateway (``workflow.api``).

- ``list {groupKey}`` (a group key, or an id it is the prefix of) -> ``{items, groupKey}``;
- ``import_from_meeting {groupKey, sessionId?}`` (default: the most recent meeting) ->
  ``{imported, ids, sessionId}``;
- ``groups`` -> ``{items: [{groupKey, count}]}`` (console);
- ``operate {groupKey, message, by?}``: a workflow message applied on behalf of the group, the
  way a badge's is (its badges get the snapshot) -> ``{frames, groups}``.

Parameters arrive in ``params`` (query) or ``body`` (JSON body); the body wins. Bad ones get 400
naming the parameter.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import TypeAdapter, ValidationError
from supie_common.contracts import ApiReply, WorkflowApiRequest, new_id
from supie_common.contracts.device import DeviceMessage, describe_validation_error
from supie_common.settings import WorkflowSection

from .groups import normalise_group, resolve_listing
from .meeting_import import MeetingNotFound, MeetingTasks, MeetingUnavailable
from .operations import Outcome, Sender, WorkflowRequest
from .store import TaskStore

__all__ = ["BadParam", "WorkflowApi"]

_MESSAGE: TypeAdapter[Any] = TypeAdapter(DeviceMessage)

RunFn = Callable[[WorkflowRequest, Sender, str, str], Awaitable[tuple[Outcome, list[str]]]]
FetchFn = Callable[[str | None], Awaitable[MeetingTasks]]
ImportFn = Callable[[str, MeetingTasks], Awaitable[Outcome]]


class BadParam(ValueError):
    pass


def _text(args: dict[str, Any], name: str, *, required: bool) -> str | None:
    value = args.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise BadParam(f"{name}: required")
        return None
    if not isinstance(value, str) or len(value) > 128:
        raise BadParam(f"{name}: expected a string of at most 128 characters")
    return value.strip()


class WorkflowApi:
    def __init__(
        self,
        store: TaskStore,
        config: Callable[[], WorkflowSection],
        run: RunFn,
        fetch_meeting: FetchFn,
        import_tasks: ImportFn,
    ) -> None:
        self.store = store
        self.config = config
        self.run = run
        self.fetch_meeting = fetch_meeting
        self.import_tasks = import_tasks

    async def handle(self, req: WorkflowApiRequest) -> ApiReply:
        args = {**req.params, **req.body}
        try:
            if req.op == "list":
                return await self._list(args)
            if req.op == "import_from_meeting":
                return await self._import(args)
            if req.op == "groups":
                return await self._groups()
            if req.op == "operate":
                return await self._operate(args)
        except BadParam as exc:
            return ApiReply(status=400, success=False, error=str(exc))
        return ApiReply(status=404, success=False, error=f"op: unknown operation {req.op[:40]!r}")

    async def _list(self, args: dict[str, Any]) -> ApiReply:
        key = _text(args, "groupKey", required=True)
        assert key is not None
        group = resolve_listing(key, set(await self.store.groups()), self.config())
        snapshot = await self.store.snapshot(group)
        return ApiReply(data={"items": snapshot.dicts(), "groupKey": group})

    async def _groups(self) -> ApiReply:
        groups = await self.store.groups()
        counts = await self.store.counts(groups)
        items = [{"groupKey": g, "count": n} for g, n in zip(groups, counts, strict=True)]
        return ApiReply(data={"items": items})

    def _group(self, args: dict[str, Any]) -> str:
        key = _text(args, "groupKey", required=True)
        group = normalise_group(key, self.config())
        if group is None:
            raise BadParam("groupKey: required")
        return group

    async def _import(self, args: dict[str, Any]) -> ApiReply:
        group = self._group(args)
        session_id = _text(args, "sessionId", required=False)
        try:
            found = await self.fetch_meeting(session_id)
        except MeetingNotFound:
            return ApiReply(status=404, success=False, error="meeting not found")
        except MeetingUnavailable:
            return ApiReply(status=503, success=False, error="the meeting service is unavailable")
        if found.session_id is None or not found.patches:
            return ApiReply(data={"imported": 0, "ids": [], "sessionId": found.session_id})
        outcome = await self.import_tasks(group, found)
        return ApiReply(
            data={
                "imported": len(outcome.ids),
                "ids": [p.id for p in found.patches],
                "sessionId": found.session_id,
            }
        )

    async def _operate(self, args: dict[str, Any]) -> ApiReply:
        group = self._group(args)
        raw = args.get("message")
        if not isinstance(raw, dict):
            raise BadParam("message: expected a workflow message object")
        try:
            message = _MESSAGE.validate_python({**raw, "type": "workflow"})
        except ValidationError as exc:
            _, text = describe_validation_error(exc, device_union=True)
            raise BadParam(f"message.{text}") from None
        by = _text(args, "by", required=False) or "console"
        outcome, texts = await self.run(message, Sender("", group, by), by, new_id())
        frames = [json.loads(text) for text in texts]
        status = 200
        if outcome.error:
            status = 404 if frames and frames[0].get("code") == "NOT_FOUND" else 400
        return ApiReply(
            status=status,
            success=not outcome.error,
            data={"frames": frames, "groups": sorted(outcome.changed)},
            error=frames[0].get("message") if outcome.error and frames else None,
        )
