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
from redis.asyncio import Redis
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
    to_frame,
)
from supie_common.contracts.device import (
    ErrorCode,
    WorkflowAssign,
    WorkflowCommandNotice,
    WorkflowComplete,
    WorkflowError,
)
from supie_common.service import Service
from supie_common.store import K, connect_redis

from .api import WorkflowApi
from .config import WorkflowSettings
from .groups import sender_group
from .intent_llm import IntentLlm
from .intents import Command, open_tasks, pick_target, recognise_rules
from .meeting_import import MeetingTasks, fetch_meeting_tasks
from .operations import Operations, Outcome, Sender, WorkflowRequest, dedupe_key, log_operation
from .push import Pusher, device_out
from .store import Snapshot, TaskStore, json_text

__all__ = ["WorkflowService", "MAX_IN_FLIGHT"]

MAX_IN_FLIGHT = 128  # requests handled at once per replica (the rest wait in NATS)
REDIS_CONNECTIONS = 64
REDIS_WARM = 8  # connections opened at start rather than under the first burst
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
        self._tasks_redis: Redis | None = None
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
        if not self.settings.redis.url:
            raise RuntimeError("the workflow service needs Redis: set redis.url")
        # Its own pool (the skeleton's client serves health checks): changes go to Redis in
        # batches (.batch), so a few connections carry a busy replica.
        self._tasks_redis = redis = connect_redis(
            self.settings.redis.url, max_connections=REDIS_CONNECTIONS
        )
        await asyncio.gather(*(redis.ping() for _ in range(REDIS_WARM)))
        cfg = self.settings.workflow
        self._store = TaskStore(
            redis,
            max_tasks=cfg.max_tasks_per_group,
            seen_ttl_s=self.message_ttl_s,
            presence_ttl_s=self.settings.server.presence_ttl_s,
        )
        self._pusher = Pusher(self.nc, redis, self._store)
        self._ops = Operations(self._store, cfg)
        self.api = WorkflowApi(
            self._store,
            lambda: self.settings.workflow,
            self._run_api,
            self._fetch_meeting,
            self._import_tasks,
        )
        self.spawn(self._pusher.resync_loop(), "workflow-resync", critical=True)
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
        if self._pusher is not None:
            await self._pusher.aclose()
        if self._store is not None:
            await self._store.aclose()
        await self.intent_llm.aclose()

    async def stop(self) -> None:
        await super().stop()
        if self._tasks_redis is not None:
            await self._tasks_redis.aclose()

    async def on_config(
        self, old: WorkflowSettings, new: WorkflowSettings, keys: list[str]
    ) -> None:
        if self._ops is not None:
            self._ops.config = new.workflow
        if self._store is not None:
            self._store.max_tasks = new.workflow.max_tasks_per_group
            self._store.seen_ttl_s = self.message_ttl_s
            self._store.presence_ttl_s = new.server.presence_ttl_s

    def health_detail(self) -> dict[str, Any]:
        return {
            "inflight": len(self._inflight),
            "handled": self.handled,
            "pushed": self._pusher.pushed if self._pusher else 0,
            "resyncs": self._pusher.resyncs if self._pusher else 0,
            "round_trips": self._store.round_trips if self._store else 0,
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
            task = self.spawn(run(msg), "workflow-request")
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

        return cb

    # -- shared steps --------------------------------------------------------------------------
    async def _respond(self, msg: Msg, reply: BaseModel) -> None:
        if msg.reply:
            await msg.respond(encode(reply))

    async def _acknowledge(self, msg: Msg, frames: list[str], snapshot: Snapshot | None) -> None:
        """``_respond(msg, InboundReply(frames=[*frames, snapshot.frame]))`` without the model:
        the frames are strings, escaping them is all the encoding there is, and the snapshot's
        escaped frame is the one already built for its pushes."""
        if msg.reply:
            parts = [json_text(f) for f in frames]
            if snapshot is not None:
                parts.append(snapshot.frame_json)
            await msg.respond(f'{{"frames":[{",".join(parts)}],"retry":false}}'.encode())

    def _reply(self, outcome: Outcome) -> tuple[list[str], Snapshot | None]:
        """The sender's frames, and the newest snapshot of its group this replica knows (sent
        after the frames)."""
        frames = [to_frame(f) for f in outcome.frames]
        if outcome.snapshot is None:
            return frames, None
        return frames, self.pusher.newest(outcome.snapshot)

    async def _deliver(self, outcome: Outcome, sender: Sender, msg: Msg | None) -> None:
        """Push the changed groups' snapshots, reply, log, then check that no newer snapshot
        was overtaken (see :mod:`.push`)."""
        in_reply = outcome.snapshot.group if outcome.snapshot is not None else None
        by = sender.device_id or sender.alias
        sent: dict[str, int] = {}
        for group, change in outcome.changed.items():
            exclude = sender.device_id if group == in_reply else ""
            await self.pusher.to_group(change.snapshot, change.online, exclude=exclude)
            sent[group] = change.snapshot.version
            if change.fresh:
                await self.pusher.group_changed(change.snapshot, outcome.op, by)
        frames, snapshot = self._reply(outcome)
        if msg is not None:
            # Same connection, after the pushes: the bus has them before the acknowledgement.
            await self._acknowledge(msg, frames, snapshot)
        self.handled += 1
        log_operation(outcome, by)
        if snapshot is not None:
            sent = {**sent, snapshot.group: snapshot.version}
        self.pusher.check(sent)

    def _sender(self, device_id: str, group: str | None) -> Sender:
        cfg = self.settings.workflow
        return Sender(device_id, sender_group(device_id, group, cfg), cfg.alias_of(device_id))

    def _ttl(self, is_request_id: bool) -> int:
        return self.settings.workflow.idempotency_ttl_s if is_request_id else self.message_ttl_s

    async def _retry_later(self, msg: Msg, exc: BaseException) -> None:
        logger.warning("[Workflow] store unavailable ({}), asking for a retry", type(exc).__name__)
        await self._respond(msg, InboundReply(retry=True, error="task store unavailable"))

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
            await self._deliver(outcome, sender, msg)
        except _STORE_ERRORS as exc:
            await self._retry_later(msg, exc)

    # -- voice and typed commands ----------------------------------------------------------------
    async def _on_intent(self, msg: Msg) -> None:
        transcript = parse(Transcript, msg)
        if transcript is None:
            await self._respond(msg, InboundReply(error="malformed Transcript"))
            return
        try:
            await self._intent(transcript, msg)
        except _STORE_ERRORS as exc:
            await self._retry_later(msg, exc)

    async def _recognise(self, text: str) -> Command | None:
        command = recognise_rules(text)
        if command is None:
            provider = IntentLlm.provider(self.settings)
            if provider is not None:
                command = await self.intent_llm.recognise(provider, text)
        return command

    async def _intent(self, t: Transcript, msg: Msg) -> None:
        text = t.text.strip()
        command = await self._recognise(text) if t.kind == "final" and text else None
        if command is None:
            await self._respond(msg, InboundReply())
            return
        assert self._tasks_redis is not None
        group = await self._tasks_redis.hget(K.presence(t.device_id), "group")
        sender = self._sender(t.device_id, str(group) if group else None)
        dedupe = f"u:{t.utterance_id}"
        repeated = await self.store.seen(sender.group, dedupe)
        snapshot = await self.store.snapshot(sender.group)
        target = None
        if command.intent != "refresh":
            target = pick_target(command, snapshot.tasks, sender.alias)
        if not repeated:
            # Announced before acting: the badge shows what it understood, then the result.
            notice = WorkflowCommandNotice(
                intent=command.intent,
                ordinal=command.ordinal,
                task_id=target.id if target else None,
                text=text[:200],
            )
            await self.nc.publish(device_out(t.device_id), encode(DeviceOutbound.of(notice)))
            await self.pusher.flush()
        logger.info(
            "[Workflow] op=command intent={} ordinal={} source={} by={}",
            command.intent,
            command.ordinal,
            command.source,
            t.device_id,
        )
        if command.intent == "refresh":
            outcome = Outcome(op="refresh", snapshot=snapshot)
        elif target is None and not repeated:
            which = f"task {command.ordinal}" if command.ordinal else "a task"
            opened = len(open_tasks(snapshot.tasks))
            error = WorkflowError(
                code=ErrorCode.NOT_FOUND,
                field="ordinal" if command.ordinal else None,
                message=f"{command.intent}: there is no open {which} ({opened} open)",
                event=command.intent,
            )
            outcome = Outcome(op=command.intent, frames=[error], snapshot=snapshot, error=True)
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
        await self._deliver(outcome, sender, msg)

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
    ) -> tuple[Outcome, list[str]]:
        dedupe, is_request_id = dedupe_key(by, message_id, message.request_id)
        outcome = await self.ops.handle(message, sender, dedupe, self._ttl(is_request_id))
        await self._deliver(outcome, sender, None)
        frames, snapshot = self._reply(outcome)
        return outcome, frames if snapshot is None else [*frames, snapshot.frame]

    async def _fetch_meeting(self, session_id: str | None) -> MeetingTasks:
        return await fetch_meeting_tasks(
            self.nc, session_id, timeout=self.settings.nats.request_timeout_s
        )

    async def _import_tasks(self, group: str, found: MeetingTasks) -> Outcome:
        sender = Sender("", group, "meeting-import")
        outcome = await self.ops.import_tasks(group, found.patches, new_id(), self.message_ttl_s)
        await self._deliver(outcome, sender, None)
        return outcome
