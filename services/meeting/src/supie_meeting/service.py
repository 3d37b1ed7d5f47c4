"""The meeting service: live transcript, pushes, idempotent finalize, archive, HTTP API.

Any number of replicas share the work through the ``meeting`` queue group; everything another
replica must see (segments, flags, summaries, locks, leases) lives in Redis:
- a meeting's push/checkpoint timers run on the replica holding its lease
  (``supie:meeting:<id>:lease``); every replica scans active meetings and takes over lapsed ones;
- finalize flips the meeting to ``finalizing`` atomically (so racing snippets are ignored on every
  replica), then exactly one replica, holding ``supie:lock:meeting-finalize:<id>`` (TTL, renewed),
  generates the summary, sends it, archives and emits ``meeting.finalized``; if it dies, the lock
  lapses and a scanning replica completes the meeting, reusing a stored summary when there is one.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

from loguru import logger
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext
from redis.asyncio import Redis
from supie_common.bus import ensure_events_stream, parse
from supie_common.contracts import (
    ApiReply,
    DeviceCommand,
    DeviceInbound,
    DeviceOutbound,
    MeetingApiRequest,
    MeetingFinalized,
    ModeChanged,
    Queues,
    Subjects,
    Transcript,
    decode,
    encode,
    new_id,
    now_ms,
)
from supie_common.service import Service
from supie_common.store import Lease, connect_redis

from .api import MeetingApi
from .archive import Archive, ArchiveReader, valid_session_id
from .config import MeetingSettings
from .snippets import SchemaInvalid, validate_snippet
from .state import FinalizeBegin, MeetingKeys, MeetingState
from .summarizer import Summarizer

__all__ = ["MeetingService", "summary_message", "wire_item"]

TAIL_ITEMS = 50
REDIS_POOL_SIZE = 32


def wire_item(seg: dict[str, Any]) -> dict[str, Any]:
    """A segment as the firmware reads it: ``{ts, text, speakerId?}`` (+ tag)."""
    item = {"ts": seg.get("ts", 0), "text": seg.get("text", "")}
    if seg.get("speakerId"):
        item["speakerId"] = seg["speakerId"]
    if seg.get("tag"):
        item["tag"] = seg["tag"]
    return item


def summary_message(
    meeting_id: str, record: dict[str, Any], *, checkpoint: bool = False, idempotent: bool = False
) -> dict[str, Any]:
    summary = record["summary"]
    msg: dict[str, Any] = {
        "type": "meeting",
        "phase": "summary",
        "sessionId": meeting_id,
        **summary,
        "checkpoint": checkpoint,
        "bulletsLength": len(summary.get("bullets") or []),
        "sourceSegments": record.get("sourceSegments", 0),
    }
    if idempotent:
        msg["idempotent"] = True
    return msg


def _error(code: str, message: str) -> dict[str, Any]:
    return {"type": "meeting", "status": "error", "code": code, "message": message}


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
        self.archive = Archive(settings.data_dir, settings.meeting.retention)
        self.reader = ArchiveReader(self.archive)
        self.api = MeetingApi(self.reader, self._api_finalize)
        self._timers: dict[str, asyncio.Task[None]] = {}
        self._leases: dict[str, Lease] = {}
        self._completing: set[str] = set()
        self._summary_slots = asyncio.Semaphore(2)
        # Finalize ACKs go first: summary work waits while any ACK is being sent.
        self._acks_in_flight = 0
        self._acks_idle = asyncio.Event()
        self._acks_idle.set()
        self._state: MeetingState | None = None
        self._redis: Redis | None = None
        self._js: JetStreamContext | None = None

    @property
    def state(self) -> MeetingState:
        assert self._state is not None, "service not started"
        return self._state

    # -- lifecycle -----------------------------------------------------------------------------
    async def on_start(self) -> None:
        if self.redis is None:
            raise RuntimeError("the meeting service needs Redis: set redis.url")
        assert self.settings.redis.url
        self._redis = connect_redis(self.settings.redis.url, max_connections=REDIS_POOL_SIZE)
        self._state = MeetingState(self._redis)
        # Connect the pool now so a burst of finalizes does not pay for it before its ACKs.
        await asyncio.gather(*(self._redis.ping() for _ in range(REDIS_POOL_SIZE)))
        self._js = self.nc.jetstream()
        await ensure_events_stream(self._js)
        q = Queues.MEETING
        await self.nc.subscribe(Subjects.MODE_CHANGED, queue=q, cb=self._on_mode_changed)
        await self.nc.subscribe(Subjects.MEETING_TRANSCRIPT, queue=q, cb=self._on_transcript)
        await self.nc.subscribe(Subjects.MEETING_INBOUND, queue=q, cb=self._on_inbound)
        await self.nc.subscribe(Subjects.MEETING_API, queue=q, cb=self._on_api)
        self.spawn(self._scanner(), name="meeting-scanner")
        self.spawn(self._sweeper(), name="meeting-retention-sweep")

    async def on_stop(self) -> None:
        # Hand our meetings' timers to another replica right away rather than after lease expiry.
        for m, task in list(self._timers.items()):
            task.cancel()
            lease = self._leases.pop(m, None)
            if lease is not None:
                try:
                    await lease.release()
                except Exception as exc:
                    logger.debug("lease release failed for {}: {}", m, exc)
        await self.summarizer.clients.clear()

    async def stop(self) -> None:
        await super().stop()
        if self._redis is not None:
            await self._redis.aclose()

    async def on_config(self, old: MeetingSettings, new: MeetingSettings, keys: list[str]) -> None:
        await self.summarizer.reload(new)
        self.archive.retention = new.meeting.retention
        if old.meeting.push_interval_ms != new.meeting.push_interval_ms:
            logger.info(
                "transcript push interval changed, next interval={}ms", new.meeting.push_interval_ms
            )

    def health_detail(self) -> dict[str, Any]:
        return {"timers": len(self._timers), "completing": len(self._completing)}

    # -- helpers -------------------------------------------------------------------------------
    async def _send(self, device_id: str, message: dict[str, Any]) -> None:
        await self.nc.publish(
            Subjects.device_out(device_id), encode(DeviceOutbound(message=message))
        )

    async def _resolve_meeting(self, device_id: str, meeting_id: str | None) -> str:
        """The connection's meeting, else the device's active one, else a new meeting."""
        if meeting_id and valid_session_id(meeting_id):
            return meeting_id
        return await self.state.device_meeting(device_id) or new_id()

    # -- bus handlers --------------------------------------------------------------------------
    async def _on_mode_changed(self, msg: Msg) -> None:
        ev = parse(ModeChanged, msg)
        if ev is None:
            return
        if ev.mode != "meeting":
            return
        if ev.state == "end":
            m = ev.meeting_id or await self.state.device_meeting(ev.device_id)
            if m and valid_session_id(m):
                await self._finalize(m, ev.device_id, "mode_end")
            return
        if not ev.meeting_id or not valid_session_id(ev.meeting_id):
            logger.warning("mode start(meeting) without a usable meeting_id from {}", ev.device_id)
            return
        m = ev.meeting_id
        result = await self.state.start(m, ev.device_id, ev.session_id, ev.gateway_id, now_ms())
        logger.info("meeting {} {} for device {}", m, result, ev.device_id)
        if result == "resumed":
            # A reconnecting badge gets its transcript back (same sessionId, nothing lost).
            segments = await self.state.segments(m, -TAIL_ITEMS, -1)
            total = await self.state.segment_count(m)
            await self._send(
                ev.device_id,
                {
                    "type": "meeting",
                    "phase": "transcript",
                    "sessionId": m,
                    "resumed": True,
                    "items": [wire_item(s) for s in segments],
                    "totalSegments": total,
                },
            )
        if result in ("created", "resumed"):
            await self._try_lease(m)

    async def _on_transcript(self, msg: Msg) -> None:
        t = parse(Transcript, msg)
        if t is None:
            return
        if t.kind != "final" or not t.text.strip():
            return
        m = (
            t.meeting_id
            if t.meeting_id and valid_session_id(t.meeting_id)
            else await self.state.device_meeting(t.device_id)
        )
        if not m:
            logger.warning("meeting transcript from {} without an active meeting", t.device_id)
            return
        seg = {"ts": t.ts_ms, "text": t.text.strip(), "speakerId": t.device_id[:8], "tag": "ASR"}
        res = await self.state.append(m, t.device_id, now_ms(), [seg])
        if res.ignored:
            logger.debug("transcript for finalizing meeting {} ignored", m)

    async def _on_inbound(self, msg: Msg) -> None:
        inbound = parse(DeviceInbound, msg)
        if inbound is None:
            return
        # Transitional: the typed message as the dict this code was written for (issue 10
        # rewrites this service on the typed models).
        message = inbound.message.model_dump(by_alias=True, exclude_none=True)
        phase = message.get("phase")
        device = inbound.device_id
        if phase == "snippet":
            await self._snippet(inbound)
        elif phase == "finalize":
            # Its own task: a burst of finalizes must not queue each ACK behind the previous
            # one's Redis round trips (snippets before it on this replica are already stored).
            source = str(message.get("source") or "device")[:32]
            self.spawn(self._device_finalize(device, None, source), name="finalize-ack")
        else:
            await self._send(
                device, _error("SCHEMA_INVALID", 'phase: expected "snippet" or "finalize"')
            )

    async def _device_finalize(self, device: str, meeting_id: str | None, source: str) -> None:
        m = await self._resolve_meeting(device, meeting_id)
        await self._finalize(m, device, source)

    async def _on_api(self, msg: Msg) -> None:
        self.spawn(self._answer_api(msg))

    async def _answer_api(self, msg: Msg) -> None:
        try:
            req = decode(MeetingApiRequest, msg.data)
        except Exception as exc:
            reply = ApiReply(status=400, success=False, error=f"malformed request: {exc}"[:300])
        else:
            try:
                reply = await self.api.handle(req)
            except Exception:
                logger.exception("meeting api {} failed", req.op)
                reply = ApiReply(status=500, success=False, error="internal error")
        await msg.respond(encode(reply))

    # -- snippets ------------------------------------------------------------------------------
    async def _snippet(self, inbound: DeviceInbound) -> None:
        cfg = self.settings.meeting
        device = inbound.device_id
        try:
            items = validate_snippet(
                inbound.message.model_dump(by_alias=True, exclude_none=True), cfg.snippet_max_bytes
            )
        except SchemaInvalid as exc:
            await self._send(device, _error("SCHEMA_INVALID", str(exc)))
            return
        now = now_ms()
        allowed = await self.state.rate_take(device, len(items), cfg.snippets_per_second, now)
        if allowed == 0:
            logger.warning(
                "device {}: more than {} snippets/s, dropped {}",
                device,
                cfg.snippets_per_second,
                len(items),
            )
            await self._send(
                device,
                _error("RATE_LIMITED", f"more than {cfg.snippets_per_second} snippets/s; dropped"),
            )
            return
        m = await self._resolve_meeting(device, None)
        segs = [
            {"ts": now, "text": it.text, "speakerId": it.speaker_id or device[:8], "tag": it.tag}
            for it in items[:allowed]
        ]
        res = await self.state.append(
            m, device, now, segs, max_pending=cfg.max_pending, dedup_s=cfg.dedup_window_s
        )
        ack: dict[str, Any] = {
            "type": "meeting",
            "status": "ok",
            "phase": "snippet",
            "sessionId": m,
        }
        if res.ignored:
            ack.update(ignored=True, reason="finalizing")
        else:
            ack["accepted"] = res.accepted
            dropped = (len(items) - allowed) + res.overflow
            if res.duplicates:
                ack["duplicates"] = res.duplicates
            if dropped:
                ack["dropped"] = dropped
                ack["reason"] = "pending_full" if res.overflow else "rate_limited"
                logger.warning(
                    "device {}: {} snippet items dropped ({})", device, dropped, ack["reason"]
                )
        await self._send(device, ack)

    # -- finalize ------------------------------------------------------------------------------
    async def _begin(
        self, m: str, device: str, source: str, *, create: bool
    ) -> FinalizeBegin | None:
        begin = await self.state.begin_finalize(m, device, now_ms(), source, create=False)
        if begin is None and create:
            # Never resurrect an archived meeting whose Redis state has expired.
            if await asyncio.to_thread(self.archive.main_path(m).exists):
                return None
            begin = await self.state.begin_finalize(m, device, now_ms(), source, create=True)
        return begin

    async def _finalize(self, m: str, requester: str | None, source: str) -> FinalizeBegin | None:
        """ACK at once, flip to finalizing, stop timers, close ASR; the rest runs in a task."""
        t0 = time.perf_counter()
        self._acks_in_flight += 1
        self._acks_idle.clear()
        try:
            begin = await self._begin(m, requester or "", source, create=requester is not None)
            if begin is not None:
                ack = {
                    "type": "meeting",
                    "phase": "finalize",
                    "sessionId": m,
                    "startedAt": begin.started_at,
                    "pendingCount": begin.pending,
                }
                await self._send(requester or begin.device_id, ack)
        finally:
            self._acks_in_flight -= 1
            if self._acks_in_flight == 0:
                self._acks_idle.set()
        if begin is None:
            if requester is not None:
                await self._resend_archived(m, requester)
            return None
        ack_ms = (time.perf_counter() - t0) * 1000
        if begin.previous_status == "active":
            self._stop_timer(m)
            await self.nc.publish(
                Subjects.device_command(begin.device_id),
                encode(
                    DeviceCommand(
                        command="close_asr_stream", meeting_id=m, reason="meeting finalize"
                    )
                ),
            )
        # One line in the fork's order: request -> ack -> timers stopped (+ asr close).
        logger.info(
            "finalize request meeting={} source={} previous={}; ack sent in {:.1f} ms; "
            "stop timers done",
            m,
            source,
            begin.previous_status,
            ack_ms,
        )
        self._spawn_complete(m, requester)
        return begin

    def _spawn_complete(self, m: str, requester: str | None) -> None:
        self._completing.add(m)
        task = self.spawn(self._complete(m, requester), name=f"finalize-{m}")
        task.add_done_callback(lambda _t: self._completing.discard(m))

    async def _resend_archived(self, m: str, device: str) -> None:
        main = await asyncio.to_thread(self.reader.main, m)
        record = {
            "summary": main.get("summary") or {},
            "sourceSegments": main.get("sourceSegments", 0),
        }
        await self._send(device, summary_message(m, record, idempotent=True))

    async def _complete(self, m: str, requester: str | None) -> None:
        """Wait for, or produce, the meeting's one summary. Runs on every finalize request."""
        cfg = self.settings.meeting
        lock = Lease(
            self.state.redis,
            MeetingKeys.finalize_lock(m),
            cfg.finalize_lock_ms,
            holder=f"{self.instance_id}:{new_id()[:8]}",
        )
        deadline = time.monotonic() + 600
        while not self.stopping and time.monotonic() < deadline:
            await self._acks_idle.wait()
            status = await self.state.status(m)
            if status is None:
                return
            stored = await self.state.stored_summary(m)
            if stored is not None and status == "finalized":
                if requester is not None:
                    await self._send(requester, summary_message(m, stored, idempotent=True))
                return
            if status == "finalizing" and await lock.acquire():
                try:
                    if await self.state.status(m) == "finalizing":
                        await self._run_finalize(m, lock, requester)
                        return
                finally:
                    await lock.release()
                continue
            if stored is not None:
                # Someone else holds the lock and is archiving: the summary itself is final.
                if requester is not None:
                    await self._send(requester, summary_message(m, stored, idempotent=True))
                return
            if requester is None:
                return  # scanner: the lock holder is on it
            await asyncio.sleep(0.05)
        if not self.stopping:
            logger.error("meeting {}: gave up waiting for the summary", m)

    async def _renew_loop(self, lock: Lease) -> None:
        while True:
            await asyncio.sleep(lock.ttl_ms / 3000)
            if not await lock.renew():
                logger.warning("finalize lock {} lost while finalizing", lock.key)
                return

    async def _run_finalize(self, m: str, lock: Lease, requester: str | None) -> None:
        renewer = self.spawn(self._renew_loop(lock), name=f"finalize-lock-{m}")
        try:
            await self._finalize_locked(m, requester)
        finally:
            renewer.cancel()

    async def _finalize_locked(self, m: str, requester: str | None) -> None:
        cfg = self.settings.meeting
        meta = await self.state.meta(m)
        device = meta.get("device_id") or requester or ""
        started = int(meta.get("started_at") or now_ms())
        ended = int(meta.get("finalize_at") or now_ms())
        segments = sorted(await self.state.segments(m), key=lambda s: s.get("ts", 0))
        record = await self.state.stored_summary(m)
        if record is None:
            n = await self.state.count_generation(m)
            logger.info("summary generation #{} meeting={} segments={}", n, m, len(segments))
            async with self._summary_slots:  # CPU-bound: a few at a time, ACKs stay fast
                result = await self.summarizer.summarize(segments, ended - started)
            record = {
                "summary": result.summary.model_dump(),
                "sourceSegments": len(segments),
                "source": result.source,
                "llmElapsedMs": result.llm_elapsed_ms,
                "elapsedMs": result.elapsed_ms,
                "fallbackReason": result.fallback_reason,
            }
            await self._send(device, summary_message(m, record))
            await self.state.store_summary(m, record)
            await self._send(
                device,
                {
                    "type": "meeting",
                    "phase": "transcript",
                    "sessionId": m,
                    "final": True,
                    "items": [wire_item(s) for s in segments[-TAIL_ITEMS:]],
                    "totalSegments": len(segments),
                },
            )
        else:
            logger.info("meeting {}: completing with the stored summary", m)
        summary = record["summary"]
        metrics = {
            "segmentsCount": len(segments),
            "checkpointCount": int(meta.get("checkpoints") or 0),
            "llmElapsedMs": record.get("llmElapsedMs", 0),
            "summaryElapsedMs": record.get("elapsedMs", 0),
            "summarySource": record.get("source", "local"),
            "emptyBullets": not summary.get("bullets"),
            "bulletsLength": len(summary.get("bullets") or []),
            "finalizeSource": meta.get("finalize_source", ""),
        }
        archived = {
            "sessionId": m,
            "deviceId": device,
            "startedAt": started,
            "endedAt": ended,
            "durationMs": max(ended - started, 0),
            "summary": summary,
            "metrics": metrics,
            "bulletsLength": metrics["bulletsLength"],
            "sourceSegments": len(segments),
        }
        entry = await asyncio.to_thread(self.archive.write_meeting, archived, segments)
        evicted = await self._update_index(entry)
        line = "[Meeting Metrics] sessionId={}, {}".format(
            m, ", ".join(f"{k}={v}" for k, v in metrics.items())
        )
        await asyncio.to_thread(self.archive.append_metrics, line)
        logger.info(line)
        event = MeetingFinalized(
            event_id=f"meeting-finalized-{m}",
            session_id=m,
            device_id=device,
            summary=summary,
            metrics=metrics,
            duration_ms=max(ended - started, 0),
            started_at=started,
            ended_at=ended,
        )
        assert self._js is not None
        await self._js.publish(
            Subjects.MEETING_FINALIZED, encode(event), headers={"Nats-Msg-Id": event.event_id}
        )
        await self.state.finish(m, device, cfg.state_ttl_s)
        logger.info("meeting {} finalized and archived ({} segments)", m, len(segments))
        if evicted:
            self.spawn(self._remove(evicted), name="meeting-retention")

    async def _update_index(self, entry: dict[str, Any]) -> list[str]:
        """Index read-modify-write, serialised across replicas by a Redis lock."""
        lock = Lease(self.state.redis, MeetingKeys.INDEX_LOCK, 10_000)
        deadline = time.monotonic() + 30
        while not await lock.acquire():
            if time.monotonic() > deadline:
                raise TimeoutError("index lock not acquired within 30 s")
            await asyncio.sleep(0.01 + random.random() * 0.02)
        try:
            return await asyncio.to_thread(self.archive.update_index, entry)
        finally:
            await lock.release()

    async def _remove(self, ids: list[str]) -> None:
        def remove_all() -> int:
            return sum(self.archive.remove_meeting(i) for i in ids)

        try:
            removed = await asyncio.to_thread(remove_all)
            logger.info(
                "retention: {} meetings left the index, {} files removed", len(ids), removed
            )
        except Exception as exc:  # retention must never disturb finalize
            logger.warning("retention cleanup failed: {}", exc)

    async def _api_finalize(self, params: dict[str, Any]) -> ApiReply:
        sid = params.get("sessionId")
        device = params.get("deviceId")
        if sid:
            if not valid_session_id(sid):
                return ApiReply(
                    status=400,
                    success=False,
                    error="sessionId: expected 1-128 characters of [A-Za-z0-9_-]",
                )
        elif isinstance(device, str) and device:
            sid = await self.state.device_meeting(device)
        else:
            return ApiReply(status=400, success=False, error="sessionId: required")
        if not sid:
            return ApiReply(status=404, success=False, error="no active meeting for deviceId")
        begin = await self._finalize(sid, None, "api")
        if begin is None:
            try:
                main = await asyncio.to_thread(self.reader.main, sid)
            except LookupError:
                return ApiReply(status=404, success=False, error="meeting not found")
            return ApiReply(
                data={
                    "sessionId": sid,
                    "status": "finalized",
                    "idempotent": True,
                    "summary": main.get("summary"),
                }
            )
        data: dict[str, Any] = {
            "sessionId": sid,
            "startedAt": begin.started_at,
            "pendingCount": begin.pending,
            "status": "finalizing",
            "idempotent": begin.previous_status != "active",
        }
        for _ in range(60):  # wait up to ~3 s for the summary; the device gets it regardless
            stored = await self.state.stored_summary(sid)
            if stored is not None:
                data.update(status="finalized", summary=stored["summary"])
                return ApiReply(data=data)
            await asyncio.sleep(0.05)
        return ApiReply(status=202, data=data)

    # -- timers --------------------------------------------------------------------------------
    async def _try_lease(self, m: str) -> None:
        if m in self._timers or self.stopping:
            return
        lease = Lease(
            self.state.redis,
            MeetingKeys.lease(m),
            self.settings.meeting.lease_ms,
            holder=self.instance_id,
        )
        if await lease.acquire() and m not in self._timers:
            self._leases[m] = lease
            self._timers[m] = self.spawn(self._timer_loop(m, lease), name=f"meeting-timer-{m}")
            logger.info("meeting {}: timers running here (lease acquired)", m)

    def _stop_timer(self, m: str) -> None:
        # The lease is left to expire: nobody takes the timers of a meeting that is not active.
        task = self._timers.pop(m, None)
        if task is not None:
            task.cancel()
        self._leases.pop(m, None)

    async def _timer_loop(self, m: str, lease: Lease) -> None:
        try:
            meta = await self.state.meta(m)
            device = meta.get("device_id", "")
            loop = asyncio.get_running_loop()
            renew_every = lease.ttl_ms / 3000
            next_renew = loop.time() + renew_every
            # The interval is read when a cycle starts: a change applies from the next cycle.
            next_push = loop.time() + self.settings.meeting.push_interval_ms / 1000
            while True:
                await asyncio.sleep(max(0.0, min(next_renew, next_push) - loop.time()))
                now = loop.time()
                if now >= next_renew:
                    if not await lease.renew():
                        logger.warning("meeting {}: lease lost, timers stop here", m)
                        return
                    next_renew = now + renew_every
                if now < next_push:
                    continue
                taken = await self.state.take_push(m, self.settings.meeting.max_pending)
                if taken is None:
                    return  # finalizing or gone: timers stop
                total, items = taken
                items.sort(key=lambda s: s.get("ts", 0))  # replicas may append out of order
                await self._send(
                    device,
                    {
                        "type": "meeting",
                        "phase": "transcript",
                        "sessionId": m,
                        "items": [wire_item(s) for s in items],
                        "totalSegments": total,
                    },
                )
                interval = self.settings.meeting.push_interval_ms
                next_push = now + interval / 1000
                logger.info(
                    "meeting {} transcript pushed items={} total={}, next interval={}ms",
                    m,
                    len(items),
                    total,
                    interval,
                )
                await self._maybe_checkpoint(m, device, meta)
        finally:
            if self._timers.get(m) is asyncio.current_task():
                self._timers.pop(m, None)
                self._leases.pop(m, None)

    async def _maybe_checkpoint(self, m: str, device: str, meta: dict[str, str]) -> None:
        cfg = self.settings.meeting
        if cfg.checkpoint_interval_min <= 0:
            return
        last = int((await self.state.meta(m)).get("last_checkpoint_at") or 0)
        now = now_ms()
        if now - last < cfg.checkpoint_interval_min * 60_000:
            return
        segments = await self.state.segments(m)
        started = int(meta.get("started_at") or now)
        result = await self.summarizer.summarize(segments, now - started, checkpoint=True)
        if await self.state.status(m) != "active":
            return  # finalize won the race; the final summary supersedes this one
        count = await self.state.mark_checkpoint(m, now)
        record = {"summary": result.summary.model_dump(), "sourceSegments": len(segments)}
        await self._send(device, summary_message(m, record, checkpoint=True))
        logger.info("meeting {} checkpoint summary #{} ({} segments)", m, count, len(segments))

    # -- background scans ----------------------------------------------------------------------
    async def _scanner(self) -> None:
        """Take over lapsed timer leases and stuck finalizes of active meetings."""
        while True:
            await asyncio.sleep(self.settings.meeting.scan_interval_ms / 1000)
            try:
                await self._scan_once()
            except Exception as exc:
                logger.warning("meeting scan failed: {}", exc)

    async def _scan_once(self) -> None:
        redis = self.state.redis
        for m in await self.state.active_meetings():
            if self.stopping:
                return
            if m in self._timers or m in self._completing:
                continue
            status = await self.state.status(m)
            if status is None or status == "finalized":
                await redis.srem(MeetingKeys.ACTIVE, m)
            elif status == "active":
                if not await redis.exists(MeetingKeys.lease(m)):
                    await self._try_lease(m)
            elif status == "finalizing" and not await redis.exists(MeetingKeys.finalize_lock(m)):
                logger.info("meeting {}: finalize pending without a holder, completing it", m)
                self._spawn_complete(m, None)

    async def _sweeper(self) -> None:
        """Remove unindexed archive files left by crashes, off the request path."""
        await asyncio.sleep(5)
        while True:
            try:
                removed = await asyncio.to_thread(
                    self.archive.sweep_orphans, self.settings.meeting.orphan_sweep_min_age_s
                )
                if removed:
                    logger.info("retention sweep removed {} orphan files", removed)
            except Exception as exc:
                logger.warning("retention sweep failed: {}", exc)
            await asyncio.sleep(3600)
