"""The meeting service: subscriptions and lifecycle; the work is done by its collaborators.

- :class:`~.lifecycle.Lifecycle`: ``meeting.control`` (start / end / finalize / state), presence,
  delivery receipts;
- :class:`~.intake.Intake`: snippets (``meeting.inbound``) and routed finals
  (``meeting.transcript``);
- :class:`~.finalize.Finalizer`: fenced, resumable finalize;
- :class:`~.timers.MeetingTimers`: pushes, checkpoints, abandonment, on the lease holder;
- :class:`~.api.MeetingApi`: ``meeting.api``.

Any number of replicas share the work (queue group ``meeting``); everything another replica must
see lives in Redis or the archive. Requests are answered only once their change is persisted; a
Redis failure answers ``retry: true`` and the gateway asks again with the same message id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from loguru import logger
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from supie_common.bus import ensure_events_stream, parse
from supie_common.contracts import (
    ApiReply,
    DeviceConnected,
    DeviceDelivered,
    DeviceDisconnected,
    DeviceInbound,
    ErrorCode,
    InboundReply,
    MeetingApiRequest,
    MeetingControl,
    MeetingControlReply,
    MeetingFinalized,
    MeetingStateChanged,
    Queues,
    Subjects,
    Transcript,
    decode,
    encode,
)
from supie_common.contracts.device import MeetingFinalize, MeetingSnippet
from supie_common.errors import ServiceUnavailable
from supie_common.service import Service
from supie_common.settings import MeetingSection

from .api import MeetingApi
from .archive import ArchiveStore
from .archive_files import FileArchive
from .archive_nats import NatsArchive
from .config import MeetingSettings
from .console_api import CONSOLE_OPS, ConsoleApi
from .finalize import Finalizer
from .intake import Intake
from .lifecycle import Lifecycle
from .outbox import Outbox
from .reader import ArchiveReader
from .scanner import index_lock, scan_once
from .search import SYNC_EVERY_S, IndexedArchive, SearchIndex
from .state import MeetingState
from .summarizer import Summarizer
from .timers import MeetingTimers
from .wire import error_frame

__all__ = ["MAX_IN_FLIGHT", "MeetingService", "build_archive"]

MAX_IN_FLIGHT = 512  # requests handled at once per replica; more wait in NATS
REDIS_WARM_CONNECTIONS = 48  # of the pool's 64, opened at start
DRAIN_TIMEOUT_S = 5.0  # SIGTERM: how long requests in flight may take to finish
ORPHAN_SWEEP_FIRST_S = 5.0
ORPHAN_SWEEP_EVERY_S = 3600.0
_TRANSIENT = (RedisError, OSError, TimeoutError, ServiceUnavailable)


async def build_archive(settings: MeetingSettings, redis: Redis, nc: NATS) -> ArchiveStore:
    """The configured archive backend: local files (one host, or a shared volume, the index
    serialised by a Redis lock), or JetStream (shared by every host, the index by
    compare-and-set)."""
    cfg = settings.meeting
    if cfg.archive.backend == "nats":
        return await NatsArchive.open(
            nc, cfg.archive.bucket, retention=cfg.retention, replicas=cfg.archive.replicas
        )
    return FileArchive(settings.data_dir, cfg.retention, index_lock=lambda: index_lock(redis))


class MeetingService(Service[MeetingSettings]):
    name = "meeting"

    def __init__(
        self,
        settings: MeetingSettings,
        *,
        config_path: str | Path | None = None,
        instance_id: str | None = None,
    ) -> None:
        super().__init__(settings, config_path=config_path, instance_id=instance_id)
        self.summarizer = Summarizer(settings)
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._in_flight = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._requests: list[Subscription] = []

    def _config(self) -> MeetingSection:
        return self.settings.meeting

    # -- lifecycle -----------------------------------------------------------------------------
    async def on_start(self) -> None:
        if self.redis is None:
            raise ServiceUnavailable("the meeting service needs Redis: set redis.url")
        redis = self.redis
        # Connect the pool now, so a burst of finalizes does not pay for it in its ACKs.
        await asyncio.gather(*(redis.ping() for _ in range(REDIS_WARM_CONNECTIONS)))
        self.state = MeetingState(redis)
        self.spawn(self.state.batcher.run(), "meeting-redis-batches", critical=True)
        await asyncio.sleep(0)  # the batcher takes calls from here on
        await self.state.load_scripts()
        js = self.nc.jetstream()
        await ensure_events_stream(js, self.settings.nats.stream_replicas)
        self.outbox = Outbox(self.nc, js)
        store = await build_archive(self.settings, redis, self.nc)
        removed = await store.clean_leftovers()
        if removed:
            logger.info("archive: removed {} leftovers of interrupted writes", removed)
        # Search is an extra: a replica whose index cannot open (a read-only disk) still runs
        # meetings, and answers searches with 503.
        self.search: SearchIndex | None = SearchIndex(
            Path(self.settings.data_dir) / "search", store
        )
        try:
            await self.search.open()
        except Exception as exc:
            logger.error("search index unavailable on this replica: {}", exc)
            await self.search.close()
            self.search = None
        self.archive = IndexedArchive(store, self.search) if self.search is not None else store
        self.reader = ArchiveReader(self.archive)
        self.finalizer = Finalizer(
            state=self.state,
            outbox=self.outbox,
            archive=self.archive,
            summarizer=self.summarizer,
            config=self._config,
            holder=self.instance_id,
            spawn=self.spawn,
            on_finalizing=self._stop_timers,
        )
        self.timers = MeetingTimers(
            state=self.state,
            outbox=self.outbox,
            summarizer=self.summarizer,
            config=self._config,
            holder=self.instance_id,
            spawn=self.spawn,
            abandon=self._abandon,
        )
        self.intake = Intake(self.state, self.outbox, self._config)
        self.lifecycle = Lifecycle(
            state=self.state,
            outbox=self.outbox,
            archive=self.archive,
            finalizer=self.finalizer,
            timers=self.timers,
            config=self._config,
        )
        console = ConsoleApi(
            reader=self.reader,
            state=self.state,
            redis=redis,
            index=self.search,
            max_bytes=lambda: self.outbox.budget,
        )
        self.api = MeetingApi(
            self.reader,
            self.finalizer,
            self.state,
            lambda: self.outbox.budget,
            console_ops=(CONSOLE_OPS, console),
        )
        q = Queues.MEETING
        for subject, cb in (
            (Subjects.MEETING_CONTROL, self._on_control),
            (Subjects.MEETING_INBOUND, self._on_inbound),
            (Subjects.MEETING_TRANSCRIPT, self._on_transcript),
            (Subjects.MEETING_API, self._on_api),
        ):
            self._requests.append(await self.nc.subscribe(subject, queue=q, cb=cb))
        await self.nc.subscribe(Subjects.DEVICE_CONNECTED, queue=q, cb=self._on_connected)
        await self.nc.subscribe(Subjects.DEVICE_DISCONNECTED, queue=q, cb=self._on_disconnected)
        await self.nc.subscribe(Subjects.DEVICE_DELIVERED, queue=q, cb=self._on_delivered)
        # Every replica: its own timers stop at once, its API waits wake up.
        await self.nc.subscribe(Subjects.MEETING_STATE_CHANGED, cb=self._on_state_changed)
        # Every replica keeps its own search index: meetings archived elsewhere are added too.
        await self.nc.subscribe(Subjects.MEETING_FINALIZED, cb=self._on_finalized)
        if self.search is not None:
            self.spawn(self._search_sync(self.search), "meeting-search-sync", critical=True)
        self.spawn(self._scanner(), "meeting-scanner", critical=True)
        self.spawn(self._sweeper(), "meeting-orphan-sweep", critical=True)

    async def on_stop(self) -> None:
        for sub in self._requests:
            try:
                await sub.unsubscribe()
            except Exception as exc:
                logger.debug("unsubscribe: {}", exc)
        try:
            await asyncio.wait_for(self._drained.wait(), DRAIN_TIMEOUT_S)
        except TimeoutError:
            logger.warning("{} requests still in flight at shutdown", self._in_flight)
        if hasattr(self, "timers"):
            await self.timers.release_all()
            await self.finalizer.stop()
        await self.summarizer.clients.clear()

    async def stop(self) -> None:
        await super().stop()
        if getattr(self, "search", None) is not None:  # after every task that might use it
            assert self.search is not None
            await self.search.close()

    async def on_config(self, old: MeetingSettings, new: MeetingSettings, keys: list[str]) -> None:
        await self.summarizer.reload(new)
        self.archive.retention = new.meeting.retention
        if old.meeting.push_interval_ms != new.meeting.push_interval_ms:
            logger.info(
                "transcript push interval changed, next interval={}ms", new.meeting.push_interval_ms
            )

    def health_detail(self) -> dict[str, Any]:
        if not hasattr(self, "timers"):
            return {}
        return {"timers": len(self.timers.loops), "finalizing": len(self.finalizer.running)}

    # -- collaborators' callbacks ----------------------------------------------------------------
    def _stop_timers(self, m: str) -> None:
        self.timers.stop(m)

    async def _abandon(self, m: str, device: str) -> None:
        await self.finalizer.for_meeting(
            m, f"abandon-{m}", "abandoned", reason="abandoned", device_id=device
        )

    # -- requests: answered after the change is persisted -------------------------------------
    async def _serve(
        self, msg: Msg, handle: Callable[[], Awaitable[BaseModel]], retry: BaseModel
    ) -> None:
        """Run ``handle`` in its own task (a burst is answered concurrently; per device, the
        gateway sends one request at a time) and respond; a transient failure answers
        ``retry``."""
        await self._slots.acquire()
        self._in_flight += 1
        self._drained.clear()

        async def answer() -> None:
            try:
                try:
                    reply = await handle()
                except _TRANSIENT as exc:
                    logger.warning("{}: not persisted ({}), asking for a retry", msg.subject, exc)
                    reply = retry
                except Exception:
                    logger.exception("{}: failed, asking for a retry", msg.subject)
                    reply = retry
                if msg.reply:
                    data = encode(reply)
                    if self.outbox.fits(data, f"the reply on {msg.subject}"):
                        await msg.respond(data)
            finally:
                self._in_flight -= 1
                if not self._in_flight:
                    self._drained.set()
                self._slots.release()

        self.spawn(answer(), f"request-{msg.subject.rsplit('.', 1)[-1]}")

    async def _on_control(self, msg: Msg) -> None:
        control = parse(MeetingControl, msg)
        if control is None:
            return await self._malformed(msg, MeetingControlReply(error="malformed request"))
        await self._serve(
            msg,
            lambda: self.lifecycle.control(control),
            MeetingControlReply(retry=True, error="not persisted"),
        )

    async def _on_inbound(self, msg: Msg) -> None:
        inbound = parse(DeviceInbound, msg)
        if inbound is None:
            return await self._malformed(msg, InboundReply(error="malformed request"))
        message = inbound.message

        async def handle() -> InboundReply:
            if isinstance(message, MeetingSnippet):
                return await self.intake.snippet(inbound, message)
            if isinstance(message, MeetingFinalize):
                ans = await self.finalizer.for_device(
                    inbound.device_id, inbound.message_id, "device"
                )
                return InboundReply(frames=ans.frames)
            return InboundReply(
                frames=[error_frame(ErrorCode.SCHEMA_INVALID, "type: expected meeting")]
            )

        await self._serve(msg, handle, InboundReply(retry=True, error="not persisted"))

    async def _on_transcript(self, msg: Msg) -> None:
        t = parse(Transcript, msg)
        if t is None:
            return await self._malformed(msg, InboundReply(error="malformed transcript"))
        await self._serve(
            msg, lambda: self.intake.transcript(t), InboundReply(retry=True, error="not persisted")
        )

    async def _on_api(self, msg: Msg) -> None:
        try:
            req = decode(MeetingApiRequest, msg.data)
        except ValidationError as exc:
            error = f"malformed request: {exc.error_count()} errors"
            return await self._malformed(msg, ApiReply(status=400, success=False, error=error))
        await self._serve(
            msg,
            lambda: self.api.handle(req),
            ApiReply(status=503, success=False, error="meeting state unavailable, try again"),
        )

    async def _malformed(self, msg: Msg, reply: BaseModel) -> None:
        if msg.reply:
            await msg.respond(encode(reply))

    # -- events ------------------------------------------------------------------------------------
    async def _event(self, what: str, work: Awaitable[None]) -> None:
        try:
            await work
        except _TRANSIENT as exc:
            logger.warning("{} not recorded: {}", what, exc)

    async def _on_connected(self, msg: Msg) -> None:
        ev = parse(DeviceConnected, msg)
        if ev is not None:
            await self._event("presence", self.lifecycle.connected(ev))

    async def _on_disconnected(self, msg: Msg) -> None:
        ev = parse(DeviceDisconnected, msg)
        if ev is not None:
            await self._event("presence", self.lifecycle.disconnected(ev))

    async def _on_delivered(self, msg: Msg) -> None:
        ev = parse(DeviceDelivered, msg)
        if ev is not None:
            await self._event("a delivery receipt", self.lifecycle.delivered(ev))

    async def _on_state_changed(self, msg: Msg) -> None:
        ev = parse(MeetingStateChanged, msg)
        if ev is None or ev.status == "active":
            return
        self.timers.stop(ev.meeting_id)
        if ev.status == "finalized":
            self.finalizer.finished(ev.meeting_id)

    async def _on_finalized(self, msg: Msg) -> None:
        ev = parse(MeetingFinalized, msg)
        if ev is None or self.search is None or self.search.has_recent(ev.session_id):
            return
        try:
            await self.search.add_from_archive(ev.session_id)
        except Exception as exc:  # the periodic sync catches up
            logger.warning("search index: {} not added: {}", ev.session_id, exc)

    # -- background ----------------------------------------------------------------------------
    async def _search_sync(self, index: SearchIndex) -> None:
        """Catch up with the archive at start (off the start path), then now and then."""
        while True:
            try:
                await index.sync()
            except Exception as exc:
                logger.warning("search index sync failed: {}", exc)
            await asyncio.sleep(SYNC_EVERY_S)

    async def _scanner(self) -> None:
        while True:
            await asyncio.sleep(self.settings.meeting.scan_interval_ms / 1000)
            try:
                await scan_once(self.state, self.finalizer, self.timers)
            except _TRANSIENT as exc:
                logger.warning("meeting scan failed: {}", exc)

    async def _sweeper(self) -> None:
        """Remove unindexed archive records left by crashes, off the request path."""
        await asyncio.sleep(ORPHAN_SWEEP_FIRST_S)
        while True:
            try:
                removed = await self.archive.sweep_orphans(
                    self.settings.meeting.orphan_sweep_min_age_s
                )
                if removed:
                    logger.info("orphan sweep removed {} records", removed)
            except OSError as exc:
                logger.warning("orphan sweep failed: {}", exc)
            await asyncio.sleep(ORPHAN_SWEEP_EVERY_S)
