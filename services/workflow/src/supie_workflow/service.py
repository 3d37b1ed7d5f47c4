"""The workflow service: shared task lists per group, any number of replicas (queue group
``workflow``), everything in Redis.

Per request: the change (one atomic script per group, the request id recorded with it), then the
snapshot to the changed groups' online badges, then the reply (the acknowledgement, with the
sender's own snapshot), then a check that no newer snapshot was overtaken (:mod:`.push`). A
replica that dies before replying leaves the change recorded under the request's id: the
gateway's retry reaches another replica, which answers alike and pushes the snapshots again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from loguru import logger
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import BaseModel
from redis.exceptions import RedisError
from supie_common.bus import parse
from supie_common.contracts import (
    ApiReply,
    DeviceConnected,
    DeviceHello,
    DeviceInbound,
    DeviceOutbound,
    InboundReply,
    ModeChanged,
    Queues,
    Subjects,
    Transcript,
    WorkflowApiRequest,
    encode,
    new_id,
)
from supie_common.contracts.device import (
    ErrorCode,
    WorkflowAssign,
    WorkflowCommandNotice,
    WorkflowComplete,
    WorkflowError,
    WorkflowUpdate,
)
from supie_common.service import Service
from supie_common.store import Presence

from .api import WorkflowApi
from .config import WorkflowSettings
from .groups import sender_group
from .intent_llm import IntentLlm
from .intents import Command, pick_target, recognise_rules
from .meeting_import import MeetingTasks, fetch_meeting_tasks
from .operations import (
    Operations,
    Outcome,
    Sender,
    WorkflowRequest,
    dedupe_key,
    log_operation,
)
from .push import Pusher
from .store import TaskStore

__all__ = ["WorkflowService", "MAX_IN_FLIGHT"]

MAX_IN_FLIGHT = 256  # requests handled at once per replica (the rest wait in NATS)
STOP_GRACE_S = 5.0
_STORE_ERRORS = (RedisError, ConnectionError, OSError, asyncio.TimeoutError)


class WorkflowService(Service[WorkflowSettings]):
    name = "workflow"

    def __init__(
        self,
        settings: WorkflowSettings,
        *,
        config_path: str | Path | None = None,
        instance_id: str | None = None,
        intent_llm: IntentLlm | None = None,
    ) -> None:
        super().__init__(settings, config_path=config_path, instance_id=instance_id)
        self.intent_llm = intent_llm or IntentLlm()
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._inflight: set[asyncio.Task[None]] = set()
        self._subs: list[Subscription] = []
        self._store: TaskStore | None = None
        self._pusher: Pusher | None = None
        self._ops: Operations | None = None
        self.handled = 0

    # -- wiring --------------------------------------------------------------------------------
    @property
    def store(self) -> TaskStore:
        assert self._store is not None, "service not started"
        return self._store

    @property
    def pusher(self) -> Pusher:
        assert self._pusher is not None, "service not started"
        return self._pusher

    @property
    def ops(self) -> Operations:
        assert self._ops is not None, "service not started"
        return self._ops

    @property
    def message_ttl_s(self) -> int:
        """How long a transport message id is remembered: well past the gateway's retries."""
        return max(600, int(self.settings.server.accept_timeout_s * 4))

    async def on_start(self) -> None:
        if self.redis is None:
            raise RuntimeError("the workflow service needs Redis: set redis.url")
        cfg = self.settings.workflow
        self._store = TaskStore(
            self.redis, max_tasks=cfg.max_tasks_per_group, seen_ttl_s=self.message_ttl_s
        )
        presence = Presence(self.redis, self.settings.server.presence_ttl_s)
        self._pusher = Pusher(self.nc, self.redis, self._store, presence)
        self._ops = Operations(self._store, cfg)
        self.api = WorkflowApi(
            self._store,
            lambda: self.settings.workflow,
            self._run_api,
            self._fetch_meeting,
            self._import_tasks,
        )
        await self.redis.ping()
        q = Queues.WORKFLOW
        routes: list[tuple[str, Callable[[Msg], Awaitable[None]]]] = [
            (Subjects.WORKFLOW_INBOUND, self._on_inbound),
            (Subjects.WORKFLOW_INTENT, self._on_intent),
            (Subjects.WORKFLOW_API, self._on_api),
            (Subjects.DEVICE_CONNECTED, self._on_connected),
            (Subjects.DEVICE_HELLO, self._on_hello),
            (Subjects.MODE_CHANGED, self._on_mode_changed),
        ]
        for subject, handler in routes:
            self._subs.append(
                await self.nc.subscribe(subject, queue=q, cb=self._concurrently(handler))
            )

    async def on_stop(self) -> None:
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception as exc:
                logger.debug("unsubscribe: {}", exc)
        self._subs.clear()
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=STOP_GRACE_S)
        await self.intent_llm.aclose()

    async def on_config(
        self, old: WorkflowSettings, new: WorkflowSettings, keys: list[str]
    ) -> None:
        if self._ops is not None:
            self._ops.config = new.workflow
        if self._store is not None:
            self._store.max_tasks = new.workflow.max_tasks_per_group
            self._store.seen_ttl_s = self.message_ttl_s
        if self._pusher is not None:
            self._pusher.presence.ttl_s = new.server.presence_ttl_s

    def health_detail(self) -> dict[str, Any]:
        return {
            "inflight": len(self._inflight),
            "handled": self.handled,
            "pushed": self._pusher.pushed if self._pusher else 0,
        }

    def _concurrently(self, handler: Callable[[Msg], Awaitable[None]]) -> Any:
        """NATS runs one callback at a time per subscription: hand each message to its own task
        (at most MAX_IN_FLIGHT), so one slow request never holds up the others."""

        async def run(msg: Msg) -> None:
            try:
                await handler(msg)
            finally:
                self._slots.release()

        async def cb(msg: Msg) -> None:
            await self._slots.acquire()
            task = self.spawn(run(msg), f"workflow:{msg.subject.rsplit('.', 1)[-1]}")
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

        return cb

    # -- shared steps --------------------------------------------------------------------------
    async def _respond(self, msg: Msg, reply: BaseModel) -> None:
        if msg.reply:
            await msg.respond(encode(reply))

    async def _deliver(
        self, outcome: Outcome, sender: Sender, reply: Callable[[], Awaitable[None]]
    ) -> None:
        """Push the changed groups' snapshots, reply, log, then settle (see :mod:`.push`)."""
        exclude = sender.device_id if sender.group in outcome.sent else ""
        by = sender.device_id or sender.alias
        for group, (_, tasks) in outcome.changed.items():
            await self.pusher.to_group(
                group, tasks, exclude=exclude if group == sender.group else ""
            )
            if group in outcome.fresh:
                await self.pusher.group_changed(group, tasks, outcome.op, by)
        if outcome.changed:
            await self.nc.flush()  # the others' snapshots are on the bus before the ack
        await reply()
        self.handled += 1
        log_operation(outcome, by)
        sent = {g: v for g, (v, _) in outcome.changed.items()}
        sent.update(outcome.sent)
        await self.pusher.settle(sent)

    def _sender(self, device_id: str, group: str | None) -> Sender:
        cfg = self.settings.workflow
        return Sender(device_id, sender_group(device_id, group, cfg), cfg.alias_of(device_id))

    def _ttl(self, is_request_id: bool) -> int:
        return self.settings.workflow.idempotency_ttl_s if is_request_id else self.message_ttl_s

    # -- device messages -----------------------------------------------------------------------
    async def _on_inbound(self, msg: Msg) -> None:
        inbound = parse(DeviceInbound, msg)
        if inbound is None:
            await self._respond(msg, InboundReply(error="malformed DeviceInbound"))
            return
        message = inbound.message
        if message.type != "workflow":
            error = WorkflowError(
                code=ErrorCode.SCHEMA_INVALID, field="type", message="type: expected workflow"
            )
            await self._respond(msg, InboundReply.of(error))
            return
        sender = self._sender(inbound.device_id, inbound.group_key)
        dedupe, is_request_id = dedupe_key(
            inbound.device_id, inbound.message_id, message.request_id
        )
        try:
            outcome = await self.ops.handle(message, sender, dedupe, self._ttl(is_request_id))
        except _STORE_ERRORS as exc:
            logger.warning(
                "[Workflow] store unavailable ({}), asking for a retry", type(exc).__name__
            )
            await self._respond(msg, InboundReply(retry=True, error="task store unavailable"))
            return

        async def reply() -> None:
            await self._respond(msg, InboundReply.of(*outcome.frames))

        await self._deliver(outcome, sender, reply)

    # -- voice and typed commands ----------------------------------------------------------------
    async def _on_intent(self, msg: Msg) -> None:
        transcript = parse(Transcript, msg)
        if transcript is None:
            await self._respond(msg, InboundReply(error="malformed Transcript"))
            return
        try:
            await self._intent(transcript, msg)
        except _STORE_ERRORS as exc:
            logger.warning(
                "[Workflow] store unavailable ({}), asking for a retry", type(exc).__name__
            )
            await self._respond(msg, InboundReply(retry=True, error="task store unavailable"))

    async def _recognise(self, text: str) -> Command | None:
        command = recognise_rules(text)
        if command is None:
            provider = IntentLlm.provider(self.settings)
            if provider is not None:
                command = await self.intent_llm.recognise(provider, text)
        return command

    async def _announce(self, device_id: str, notice: WorkflowCommandNotice) -> None:
        await self.nc.publish(Subjects.device_out(device_id), encode(DeviceOutbound.of(notice)))
        await self.nc.flush()

    async def _intent(self, t: Transcript, msg: Msg) -> None:
        text = t.text.strip()
        command = await self._recognise(text) if t.kind == "final" and text else None
        if command is None:
            await self._respond(msg, InboundReply())
            return
        where = await self.pusher.presence.where(t.device_id)
        sender = self._sender(t.device_id, where.get("group"))
        dedupe = f"u:{t.utterance_id}"
        repeated = await self.store.seen(sender.group, dedupe)
        version, tasks = await self.store.snapshot(sender.group)
        target = pick_target(command, tasks, sender.alias) if command.intent != "refresh" else None
        if not repeated:
            # Announced before acting: the badge shows what it understood, then the result.
            await self._announce(
                t.device_id,
                WorkflowCommandNotice(
                    intent=command.intent,
                    ordinal=command.ordinal,
                    task_id=target.id if target else None,
                    text=text[:200],
                ),
            )
        logger.info(
            "[Workflow] op=command intent={} ordinal={} source={} by={}",
            command.intent,
            command.ordinal,
            command.source,
            t.device_id,
        )
        if command.intent == "refresh":
            outcome = Outcome(op="refresh", frames=[self.ops.snapshot_frame(sender.group, tasks)])
            outcome.sent[sender.group] = version
        elif target is None and not repeated:
            outcome = Outcome(op=command.intent, error=True)
            which = f"task {command.ordinal}" if command.ordinal else "a task"
            outcome.frames = [
                WorkflowError(
                    code=ErrorCode.NOT_FOUND,
                    field="ordinal" if command.ordinal else None,
                    message=f"{command.intent}: there is no open {which} "
                    f"({len([x for x in tasks if x.status == 'open'])} open)",
                    event=command.intent,
                ),
                self.ops.snapshot_frame(sender.group, tasks),
            ]
            outcome.sent[sender.group] = version
        else:
            # A repeat (the gateway's retry) is answered from the recorded outcome, whatever
            # the list looks like now.
            task_id = target.id if target else "-"
            request: WorkflowRequest
            if command.intent == "complete":
                request = WorkflowComplete(type="workflow", event="complete", ids=[task_id])
            else:
                request = WorkflowAssign(type="workflow", event="assign", id=task_id)
            outcome = await self.ops.handle(request, sender, dedupe, self.message_ttl_s)

        async def reply() -> None:
            await self._respond(msg, InboundReply.of(*outcome.frames))

        await self._deliver(outcome, sender, reply)

    # -- greetings -----------------------------------------------------------------------------
    async def _greet(self, device_id: str, group: str, source: str) -> None:
        group = sender_group(device_id, group, self.settings.workflow)
        try:
            await self.pusher.greet(
                device_id, group, source, self.settings.workflow.snapshot_debounce_ms
            )
        except _STORE_ERRORS as exc:
            logger.warning("[Workflow] no {} snapshot for {}: {}", source, device_id, exc)

    async def _on_connected(self, msg: Msg) -> None:
        ev = parse(DeviceConnected, msg)
        if ev is not None:
            await self._greet(ev.device_id, ev.group_key, "register")

    async def _on_hello(self, msg: Msg) -> None:
        ev = parse(DeviceHello, msg)
        if ev is not None:
            await self._greet(ev.device_id, ev.group_key, "hello")

    async def _on_mode_changed(self, msg: Msg) -> None:
        ev = parse(ModeChanged, msg)
        if ev is not None and ev.state == "start" and ev.mode == "working":
            await self._greet(ev.device_id, ev.group_key, "mode_start")

    # -- HTTP API --------------------------------------------------------------------------------
    async def _on_api(self, msg: Msg) -> None:
        req = parse(WorkflowApiRequest, msg)
        if req is None:
            await self._respond(msg, ApiReply(status=400, success=False, error="malformed request"))
            return
        try:
            reply = await self.api.handle(req)
        except _STORE_ERRORS as exc:
            logger.warning("[Workflow] api op={} failed: {}", req.op[:40], type(exc).__name__)
            reply = ApiReply(status=503, success=False, error="task store unavailable")
        await self._respond(msg, reply)

    async def _run_api(
        self, message: WorkflowRequest, sender: Sender, by: str, message_id: str
    ) -> Outcome:
        dedupe, is_request_id = dedupe_key(by, message_id, message.request_id)
        outcome = await self.ops.handle(message, sender, dedupe, self._ttl(is_request_id))
        await self._deliver(outcome, sender, _nothing)
        return outcome

    async def _fetch_meeting(self, session_id: str | None) -> MeetingTasks:
        return await fetch_meeting_tasks(
            self.nc, session_id, timeout=self.settings.nats.request_timeout_s
        )

    async def _import_tasks(self, group: str, found: MeetingTasks) -> Outcome:
        sender = Sender("", group, "meeting-import")
        outcome = await self.ops.import_tasks(group, found.patches, new_id(), self.message_ttl_s)
        await self._deliver(outcome, sender, _nothing)
        return outcome


async def _nothing() -> None:
    return None


# Keep the update model importable from here for the gateway-facing docs.
_ = WorkflowUpdate
