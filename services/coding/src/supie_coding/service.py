"""The coding service: device ``coding`` events and coding-mode speech in, insights out.

- ``coding.inbound`` (queue ``coding``, request/reply): each ``DeviceInbound`` is applied once
  per ``message_id`` in one Lua call (buffer append, stats, insight schedule), then answered with
  ``CodingAck`` (or ``CodingError`` naming the field); an unreachable Redis answers
  ``retry: true``. A message published without a reply subject (an older gateway) gets its
  frames on ``device.<dev>.out`` instead.
- ``coding.text`` (queue ``coding``, request/reply): a final coding-mode ``Transcript`` becomes a
  ``note`` line.
- ``mode.changed``: leaving coding mode ends the run (the fork's behaviour).

Insights are written by whichever replica holds the device's lock: at once by the replica that
took an error line, a step, a phase or a stop; otherwise by any replica's scan of the due index
once the debounce has passed. Nothing about a device lives in a replica's memory, so a replica
that dies mid-stream loses nothing: the next scan (anywhere) finds the pending insight.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from loguru import logger
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ConfigDict, TypeAdapter, ValidationError
from redis.exceptions import NoScriptError, RedisError
from supie_common.batcher import BatcherStopped
from supie_common.bus import parse
from supie_common.contracts import (
    DeviceInbound,
    DeviceOutbound,
    Envelope,
    InboundReply,
    ModeChanged,
    Queues,
    Subjects,
    Transcript,
    encode,
    now_ms,
)
from supie_common.contracts.device import (
    CodingAck,
    CodingError,
    CodingLog,
    DeviceMessage,
    ErrorCode,
    describe_validation_error,
    to_frame,
)
from supie_common.service import Service

from .config import CodingSettings
from .events import Event, SchemaInvalid, event_of, note_event
from .llm import LlmClients
from .state import Applied, CodingState
from .writer import InsightWriter, Written

__all__ = ["CodingService"]

MAX_IN_FLIGHT = 512  # messages handled at once per replica (the subscription waits beyond)
MAX_RUNS = 64  # insights being written at once per replica
SCAN_INTERVAL_S = 0.1
SCAN_BATCH = 256
RUNS_PER_LOCK = 4  # claims per lock hold (new lines may be due again when one is sent)
_DEVICE_MESSAGE = TypeAdapter(DeviceMessage)  # errors located the way the gateway does
_STORE_ERRORS = (RedisError, OSError, ConnectionError, TimeoutError)
# The acks never change: built once (every log line gets one).
_ACKS = {
    op: InboundReply.of(CodingAck(event=op))
    for op in ("start", "stop", "clear", "phase", "log", "step")
}
_ACK_BYTES = {op: encode(reply) for op, reply in _ACKS.items()}
_RETRY_BYTES = encode(InboundReply(retry=True, error="coding store unavailable"))


class _LooseInbound(Envelope):
    """Enough of a malformed ``DeviceInbound`` to answer its device with a precise error."""

    model_config = ConfigDict(extra="ignore")
    message: dict[str, Any] = {}


class CodingService(Service[CodingSettings]):
    name = "coding"

    def __init__(
        self,
        settings: CodingSettings,
        *,
        config_path: str | Path | None = None,
        instance_id: str | None = None,
        llm_clients: LlmClients | None = None,
    ) -> None:
        super().__init__(settings, config_path=config_path, instance_id=instance_id)
        self.clients = llm_clients or LlmClients()
        self.writer = InsightWriter(settings, self.clients)
        self._state: CodingState | None = None
        self._subs: list[Subscription] = []
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._busy: set[str] = set()  # devices whose insight this replica is writing
        self._fast_pending = 0  # log lines on the task-free path, not answered yet
        self._fast_idle = asyncio.Event()
        self._fast_idle.set()
        self.counts = {"events": 0, "notes": 0, "insights": 0, "summaries": 0, "suppressed": 0}

    @property
    def state(self) -> CodingState:
        assert self._state is not None, "service not started"
        return self._state

    # -- lifecycle -----------------------------------------------------------------------------
    async def on_start(self) -> None:
        if self.redis is None:
            raise RuntimeError("the coding service needs Redis: set redis.url")
        self._state = CodingState(self.redis, max_lines=self.settings.coding.history_max_lines)
        self.spawn(self._state.batcher.run(), "coding-redis-batches", critical=True)
        try:
            await self._state.load_scripts()
        except _STORE_ERRORS as exc:  # loaded on first use instead (NOSCRIPT path)
            logger.warning("coding: Redis not reachable at start ({})", type(exc).__name__)
        q = Queues.CODING
        self._subs = [
            await self.nc.subscribe(Subjects.CODING_INBOUND, queue=q, cb=self._on_inbound),
            await self.nc.subscribe(Subjects.CODING_TEXT, queue=q, cb=self._on_text),
            await self.nc.subscribe(Subjects.MODE_CHANGED, queue=q, cb=self._on_mode_changed),
        ]
        self.spawn(self._scan_loop(), "coding-scan", critical=True)
        await self.nc.flush()  # subscribed at the server before anyone is told we are up

    async def on_stop(self) -> None:
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception as exc:
                logger.debug("unsubscribe: {}", exc)
        # Messages already taken get their answer; anything not answered is retried by the
        # gateway elsewhere (same message_id: applied once).
        deadline = time.monotonic() + 5.0
        try:
            await asyncio.wait_for(self._fast_idle.wait(), 5.0)
        except TimeoutError:
            logger.warning("coding: {} log lines unanswered at stop", self._fast_pending)
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=max(deadline - time.monotonic(), 0.1))
        await self.clients.clear()

    async def on_config(self, old: CodingSettings, new: CodingSettings, keys: list[str]) -> None:
        self.writer.settings = new
        if any(k.startswith(("llm", "coding.llm")) for k in keys):
            await self.clients.clear()
        if old.coding.history_max_lines != new.coding.history_max_lines and self._state:
            self._state.max_lines = new.coding.history_max_lines

    def health_detail(self) -> dict[str, Any]:
        return {"in_flight": len(self._in_flight), "writing": len(self._busy), **self.counts}

    # -- intake --------------------------------------------------------------------------------
    async def _take(self, handler: Any, msg: Msg, *args: Any) -> None:
        # Waiting here (not in a task) makes the subscription itself wait: bounded memory.
        await self._slots.acquire()
        task = self.spawn(handler(msg, *args), "coding-message")
        self._in_flight.add(task)
        task.add_done_callback(self._taken)

    def _taken(self, task: asyncio.Task[Any]) -> None:
        self._in_flight.discard(task)
        self._slots.release()

    async def _on_inbound(self, msg: Msg) -> None:
        try:
            inbound = DeviceInbound.model_validate_json(msg.data)
        except ValidationError:
            await self._take(self._malformed, msg)
            return
        message = inbound.message
        if (
            isinstance(message, CodingLog)
            and message.level != "error"
            and msg.reply
            and self._state is not None
        ):
            await self._slots.acquire()
            if self._fast_log(msg, inbound, message):
                return
            self._slots.release()
        await self._take(self._inbound, msg, inbound)

    def _fast_log(self, msg: Msg, inbound: DeviceInbound, message: CodingLog) -> bool:
        """A log line that asks for no insight now (the bulk of the traffic): applied and
        answered by continuations run by the Redis batcher, without a task of its own. False:
        take the general path (holding the slot the caller took)."""
        cfg = self.settings.coding
        try:
            event = event_of(message, cfg.per_message_max_len)
        except SchemaInvalid:
            return False
        assert event.entry is not None and self._state is not None
        device = inbound.device_id
        now = now_ms()
        due = now + cfg.debounce_ms if cfg.insight_enabled else 0
        group = inbound.group_key or self.settings.workflow.group_of(device)
        state = self._state

        def answer(data: bytes) -> Awaitable[None]:
            self._fast_finished()
            return msg.respond(data)

        def store_failed(error: BaseException) -> Awaitable[None] | None:
            if isinstance(error, NoScriptError):
                # Redis lost its scripts: the general path reloads them (in a task of its own:
                # the flusher running this must not wait)
                self._fast_finished()
                self.spawn(self._inbound(msg, inbound), "coding-message")
                return None
            logger.warning(
                "coding store unavailable ({}); asking for a retry", type(error).__name__
            )
            return answer(_RETRY_BYTES)

        def scheduled(_reply: Any, error: BaseException | None) -> Awaitable[None] | None:
            if error is not None:
                return store_failed(error)
            return answer(_ACK_BYTES["log"])

        def applied(result: Applied | None, error: BaseException | None) -> Awaitable[None] | None:
            if error is not None or result is None:
                return store_failed(error or RuntimeError("no reply"))
            self.counts["events"] += result.applied
            if result.due_written:
                # the schedule is in the index before the ack (see _apply)
                state.submit_schedule(device, result.due_written, scheduled)
                return None
            return answer(_ACK_BYTES["log"])

        try:
            state.submit_apply(device, inbound.message_id, now, event.entry, due, group, applied)
        except BatcherStopped:
            return False
        self._fast_pending += 1
        self._fast_idle.clear()
        return True

    def _fast_finished(self) -> None:
        self._slots.release()
        self._fast_pending -= 1
        if not self._fast_pending:
            self._fast_idle.set()

    async def _on_text(self, msg: Msg) -> None:
        await self._take(self._text, msg)

    async def _answer(
        self, msg: Msg, device_id: str | None, reply: InboundReply, data: bytes | None = None
    ) -> None:
        if msg.reply:
            await msg.respond(data or encode(reply))
        elif device_id:  # published without a reply subject: frames go the other way
            for frame in reply.frames:
                await self._publish(device_id, frame)

    async def _inbound(self, msg: Msg, inbound: DeviceInbound) -> None:
        message = inbound.message
        if message.type != "coding":
            error = CodingError(
                code=ErrorCode.SCHEMA_INVALID, field="type", message='type: expected "coding"'
            )
            await self._answer(msg, inbound.device_id, InboundReply.of(error))
            return
        device = inbound.device_id
        cfg = self.settings.coding
        try:
            event = event_of(message, cfg.per_message_max_len)
        except SchemaInvalid as exc:
            await self._answer(msg, device, InboundReply.of(exc.error()))
            return
        group = inbound.group_key or self.settings.workflow.group_of(device)
        applied = await self._apply(msg, device, inbound.message_id, event, group)
        if applied is None:
            return
        self.counts["events"] += 1
        await self._answer(msg, device, _ACKS[event.op], _ACK_BYTES[event.op])
        if applied and cfg.insight_enabled and (event.immediate or event.op == "stop"):
            if self._reserve(device):
                await self._run(device)

    async def _text(self, msg: Msg) -> None:
        t = parse(Transcript, msg)
        if t is None:
            if msg.reply:
                await msg.respond(encode(InboundReply(error="malformed Transcript")))
            return
        event = note_event(t.text, self.settings.coding.per_message_max_len)
        if t.kind != "final" or event is None:
            await self._answer(msg, None, InboundReply())
            return
        group = self.settings.workflow.group_of(t.device_id)
        applied = await self._apply(msg, t.device_id, f"utt:{t.utterance_id}", event, group)
        if applied is not None:
            self.counts["notes"] += 1
            await self._answer(msg, None, InboundReply())

    async def _apply(
        self, msg: Msg, device: str, message_id: str, event: Event, group: str
    ) -> bool | None:
        """Persist the event (and its schedule). None: the store failed and the caller is told
        to retry; False: a repeated message_id."""
        cfg = self.settings.coding
        now = now_ms()
        due = 0
        if cfg.insight_enabled and event.entry is not None:
            due = now if event.immediate else now + cfg.debounce_ms
        try:
            result = await self.state.apply(
                device,
                message_id,
                event.op,
                now,
                entry=event.entry,
                due_ms=due,
                value=event.value,
                status=event.status,
                group=group,
                summaries=cfg.insight_enabled,
            )
            # The schedule is in the index before the ack: an acked line always gets its
            # insight, whichever replica survives.
            if result.due_written:
                await self.state.schedule(device, result.due_written)
        except _STORE_ERRORS as exc:
            logger.warning(
                "coding store unavailable ({}: {}); asking for a retry",
                type(exc).__name__,
                str(exc)[:200],
            )
            if msg.reply:
                reply = InboundReply(retry=True, error="coding store unavailable")
                await msg.respond(encode(reply))
            return None
        return result.applied

    async def _malformed(self, msg: Msg) -> None:
        """A DeviceInbound that does not validate: answer its device with the field at fault."""
        try:
            loose = _LooseInbound.model_validate_json(msg.data)
        except ValidationError:
            logger.warning("ignoring malformed DeviceInbound on {}", msg.subject)
            if msg.reply:
                await msg.respond(encode(InboundReply(error="malformed DeviceInbound")))
            return
        field: str | None
        try:
            _DEVICE_MESSAGE.validate_python(loose.message)
            field, text = "message", "message: not a coding message"
        except ValidationError as exc:
            field, text = describe_validation_error(exc, device_union=True)
        event = loose.message.get("event")
        error = CodingError(
            code=ErrorCode.SCHEMA_INVALID,
            field=field,
            message=text,
            event=event if isinstance(event, str) else None,
        )
        await self._answer(msg, loose.device_id, InboundReply.of(error))

    async def _on_mode_changed(self, msg: Msg) -> None:
        ev = parse(ModeChanged, msg)
        if ev is None or ev.mode != "coding" or ev.state != "end":
            return
        try:
            await self.state.apply(ev.device_id, "", "mode_end", now_ms())
        except _STORE_ERRORS as exc:
            logger.warning("coding mode end for {} not recorded: {}", ev.device_id, exc)

    # -- insights ------------------------------------------------------------------------------
    async def _scan_loop(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(SCAN_INTERVAL_S)
            if self.stopping:
                # A cancellation can be swallowed by the Redis client on its way here; the loop
                # must end anyway, or stop() waits for it forever.
                raise asyncio.CancelledError
            if not self.settings.coding.insight_enabled:
                continue
            try:
                due = await self.state.due_devices(now_ms(), SCAN_BATCH)
            except _STORE_ERRORS as exc:
                if not failing:
                    logger.warning("coding scan failed ({}); retrying", type(exc).__name__)
                failing = True
                continue
            failing = False
            for device in due:
                if len(self._busy) >= MAX_RUNS:
                    break
                if self._reserve(device):
                    self.spawn(self._run(device), "coding-insight")

    def _reserve(self, device: str) -> bool:
        """Mark ``device`` as being written here (synchronously: no second task for it)."""
        if device in self._busy or self.stopping:
            return False
        self._busy.add(device)
        return True

    async def _run(self, device: str) -> None:
        """Write whatever is due for ``device`` (reserved with :meth:`_reserve`) unless another
        replica holds its lock."""
        ttl_ms = int((self.settings.coding.llm_timeout_s + 10) * 1000)
        holder = self.instance_id
        try:
            if not await self.state.lock(device, holder, ttl_ms):
                return
            try:
                for _ in range(RUNS_PER_LOCK):
                    claim = await self.state.claim(device, now_ms())
                    if claim.kind not in ("summary", "insight"):
                        break
                    started = time.perf_counter()
                    written = await self.writer.write(
                        device, claim, summary=claim.kind == "summary"
                    )
                    sha = await self._emit(
                        device,
                        claim.fields.get("group", ""),
                        written,
                        claim.fields.get("last_sha", ""),
                        started,
                    )
                    if claim.kind == "insight":
                        await self.state.finish(device, written.seq, sha)
            finally:
                await self.state.unlock(device, holder)
                await self.state.settle(device)
        except _STORE_ERRORS as exc:
            # The schedule stays in the index: the next scan retries.
            logger.warning("coding insight for {} postponed: {}", device, type(exc).__name__)
        finally:
            self._busy.discard(device)

    async def _emit(
        self, device: str, group: str, written: Written, last_sha: str, started: float
    ) -> str:
        """Send to the device and the other online badges of its group; returns the sha of what
        was sent ("" when an identical insight was already on the badge)."""
        message = written.message
        frame = to_frame(message)
        sha = hashlib.sha256(frame.encode()).hexdigest()[:16]
        summary = message.event == "summary"
        if not summary and sha == last_sha:
            self.counts["suppressed"] += 1
            logger.debug("coding insight for {} unchanged: not resent", device)
            return ""
        await self._publish(device, frame)
        others = await self._peers(device, group)
        if others:
            shared = to_frame(message.model_copy(update={"from_": device}))
            for other in others:
                await self._publish(other, shared)
        self.counts["summaries" if summary else "insights"] += 1
        elapsed_ms = (time.perf_counter() - started) * 1000
        logger.info(
            "[Coding Insight] final={} phase={} insights={} risks={} actions={} nextSteps={} "
            "jsonSHA={} elapsedMs={:.0f} source={} device={} peers={}",
            "true" if summary else "false",
            message.phase,
            len(message.insights),
            len(message.risks),
            len(message.actions),
            len(message.next_steps),
            sha,
            elapsed_ms,
            written.source,
            device,
            len(others),
        )
        return sha

    async def _peers(self, device: str, group: str) -> list[str]:
        """The other badges of the group a gateway saw within the presence TTL."""
        if not group:
            return []
        since = now_ms() - self.settings.server.presence_ttl_s * 1000
        try:
            online = await self.state.online(group, since)
        except _STORE_ERRORS:
            return []
        return sorted(d for d in online if d != device)

    async def _publish(self, device: str, frame: str) -> None:
        await self.nc.publish(Subjects.device_out(device), encode(DeviceOutbound(frame=frame)))
