"""Finalize: acknowledged once persisted, generated once, the same summary everywhere.

1. **Request** (:meth:`Finalizer.for_device`, :meth:`Finalizer.for_meeting`): one Lua call flips
   the meeting ``active -> finalizing`` and records the request id with its outcome; only then is
   the ACK built. ``MeetingStateChanged(finalizing)`` + ``DeviceCommand(meeting_state)`` go out,
   and a generation is started here. Per device, finalize requests are rate limited
   (``meeting.finalize_per_minute``).
2. **Generation** (:meth:`Finalizer.complete`): takes the meeting's lock with a fencing token
   (``INCR``; TTL ``finalize_lock_ms``, renewed every third of it), summarizes under the summary
   deadline, and commits the summary with compare-and-set on the token: a generation that stalled
   past its lock and woke up finds the newer one's summary (or its own token superseded) and
   stops. Everything after the commit (the badge's summary frame, the archive, the metrics line,
   the ``meeting.finalized`` event) uses the *stored* summary and is marked done step by step,
   so whoever finishes the meeting repeats nothing that was done.
3. **Resume**: a generation that died leaves ``finalizing`` and a lock that lapses within
   seconds; the scanner of any replica calls :meth:`Finalizer.complete` again.

A meeting without content is answered (ACK, a summary with empty fields) but not archived, not
indexed and without event, unless ``meeting.archive_empty``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from loguru import logger
from redis.exceptions import RedisError
from supie_common.contracts import ErrorCode, MeetingFinalized, MeetingStatus, Summary, now_ms
from supie_common.settings import MeetingSection
from supie_common.store import Lease

from .archive import ArchiveStore, index_entry, layout
from .intake import SEEN_TTL_S
from .keys import MeetingKeys
from .models import ArchivedMeeting, FinalizeMetrics, MeetingMeta, Segment, SummaryRecord
from .outbox import Outbox, summary_receipt
from .state import FinalizeBegin, MeetingState
from .summarizer import Summarizer
from .wire import error_frame, finalize_ack_frame, summary_frame, tail_frame

__all__ = [
    "ACK_QUIET_S",
    "AckGate",
    "FinalizeAnswer",
    "Finalizer",
    "SUMMARY_RESEND_S",
    "TAIL_ITEMS",
]

TAIL_ITEMS = 50  # transcript items sent with the final summary
ACK_QUIET_S = 0.05  # generations start once no finalize ACK was prepared for this long
# The summary travels on core NATS: one published while NATS restarts is lost even though the
# badge is connected (a reconnect would have it redelivered, but it has no reason to reconnect).
# So it is published again after each of these delays until its receipt comes back.
SUMMARY_RESEND_S = (2.0, 4.0, 8.0, 16.0)


class AckGate:
    """Finalize ACKs go first: generations wait until no ACK has been prepared for
    :data:`ACK_QUIET_S` (a burst of finalizes is answered before the CPU goes to summaries and
    archive writes). One timer per quiet period, whatever the number of waiting generations."""

    def __init__(self) -> None:
        self._busy = 0
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._timer: asyncio.TimerHandle | None = None

    @contextlib.contextmanager
    def acking(self) -> Iterator[None]:
        self._busy += 1
        self._quiet.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            yield
        finally:
            self._busy -= 1
            if self._busy == 0:
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(ACK_QUIET_S, self._quiet.set)

    async def idle(self) -> None:
        await self._quiet.wait()


@dataclass
class FinalizeAnswer:
    """What a finalize request gets: the frames for the badge, and the meeting's state."""

    frames: list[str]
    meeting_id: str | None = None
    status: MeetingStatus | None = None
    started_at: int | None = None


class Finalizer:
    def __init__(
        self,
        *,
        state: MeetingState,
        outbox: Outbox,
        archive: ArchiveStore,
        summarizer: Summarizer,
        config: Callable[[], MeetingSection],
        holder: str,
        spawn: Callable[..., asyncio.Task[None]],
        on_finalizing: Callable[[str], None],
    ) -> None:
        self.state = state
        self.outbox = outbox
        self.archive = archive
        self.summarizer = summarizer
        self.config = config
        self.holder = holder
        self.spawn = spawn
        self.on_finalizing = on_finalizing
        self.gate = AckGate()
        self.running: dict[str, asyncio.Task[None]] = {}
        self._finished: dict[str, asyncio.Event] = {}

    # -- requests --------------------------------------------------------------------------------
    async def for_device(self, device_id: str, message_id: str, source: str) -> FinalizeAnswer:
        """A finalize from (or for) a device: its active meeting, rate limited per device."""
        t0 = time.perf_counter()
        with self.gate.acking():
            cfg = self.config()
            resolved = await self.state.resolve(
                device_id,
                f"m:{message_id}",
                n=1,
                limit=cfg.finalize_per_minute,
                rate_kind="finalize",
                window_s=60,
                now_ms=now_ms(),
                seen_ttl_s=SEEN_TTL_S,
                sliding=True,
                # SPEC §6: a later finalize gets the same summary (idempotent), not an error
                recent_ms=int(cfg.finalize_repeat_window_s * 1000),
            )
            if resolved.kind == "rate":
                logger.warning("device {}: finalize rate limit reached", device_id)
                return FinalizeAnswer(
                    [
                        error_frame(
                            ErrorCode.RATE_LIMITED,
                            f"more than {cfg.finalize_per_minute} finalize requests a minute",
                            phase="finalize",
                        )
                    ]
                )
            begin = None
            if resolved.meeting_id is not None:
                begin = await self.for_meeting(
                    resolved.meeting_id, message_id, source, device_id=device_id
                )
            if begin is None or resolved.meeting_id is None:
                return FinalizeAnswer(
                    [
                        error_frame(
                            ErrorCode.NO_ACTIVE_MEETING,
                            "no active meeting to finalize",
                            phase="finalize",
                        )
                    ]
                )
            m = resolved.meeting_id
            repeat = begin.previous_status != "active"
            frames = [finalize_ack_frame(m, begin.started_at, begin.pending, idempotent=repeat)]
            if repeat:
                stored = await self.state.stored_summary(m)
                if stored is not None:
                    frames.append(summary_frame(m, stored, idempotent=True))
            status: MeetingStatus = (
                "finalized" if begin.previous_status == "finalized" else "finalizing"
            )
            logger.info(
                "finalize request meeting={} source={} repeat={}: ack ready in {:.2f} ms",
                m,
                source,
                repeat,
                (time.perf_counter() - t0) * 1000,
            )
            return FinalizeAnswer(frames, m, status, begin.started_at)

    async def for_meeting(
        self,
        m: str,
        message_id: str,
        source: str,
        *,
        reason: str = "requested",
        device_id: str | None = None,
    ) -> FinalizeBegin | None:
        """Mark ``m`` finalizing (once per request id); None when it does not exist."""
        with self.gate.acking():
            begin = await self.state.begin_finalize(
                m, now_ms(), source[:32], reason, seen_id=f"m:{message_id}"
            )
            if begin is None:
                return None
            if begin.previous_status == "active":
                # Also on a retry of the request that did it: its first attempt may have died
                # before telling anyone.
                if device_id is None:
                    meta = await self.state.meta(m)
                    device_id = meta.device_id if meta else ""
                self.on_finalizing(m)
                await self.outbox.state_changed(m, device_id, "finalizing", reason)
            if begin.previous_status != "finalized":
                self.kick(m)
            return begin

    def kick(self, m: str) -> None:
        """Run (or resume) the meeting's generation here unless one already runs here."""
        if m not in self.running:
            self.running[m] = self.spawn(self.complete(m), f"finalize-{m}")

    # -- waiting for the end -------------------------------------------------------------------
    def finished(self, m: str) -> None:
        """The meeting is finalized (here, or on another replica: ``meeting.state``)."""
        event = self._finished.pop(m, None)
        if event is not None:
            event.set()

    async def wait_finished(self, m: str, timeout_s: float) -> bool:
        event = self._finished.setdefault(m, asyncio.Event())
        if await self.state.status(m) == "finalized":
            return True
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            return await self.state.status(m) == "finalized"
        return True

    # -- one generation --------------------------------------------------------------------------
    async def complete(self, m: str) -> None:
        try:
            await self.gate.idle()
            cfg = self.config()
            acquired = await self.state.acquire(m, self.holder, cfg.finalize_lock_ms)
            if acquired is None:
                return  # not finalizing, or another generation holds the lock
            lock = Lease(
                self.state.redis,
                MeetingKeys.lock(m),
                cfg.finalize_lock_ms,
                holder=f"{self.holder}:{acquired.fence}",
            )
            lost = asyncio.Event()
            renewer = self.spawn(self._renew(lock, lost), f"finalize-lock-{m}")
            try:
                await self._generate(m, acquired.fence, acquired.generations, lock, lost)
            finally:
                renewer.cancel()
                with contextlib.suppress(RedisError, OSError):
                    await asyncio.shield(lock.release())
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning("meeting {}: finalize interrupted ({}); the scanner resumes it", m, exc)
        finally:
            self.running.pop(m, None)

    async def _renew(self, lock: Lease, lost: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(lock.ttl_ms / 3000)
            try:
                held = await lock.renew()
            except RedisError:
                continue  # it may lapse: the fence keeps a takeover safe
            if not held:
                logger.warning("finalize lock {} lost", lock.key)
                lost.set()
                return

    async def _holding(self, lock: Lease, lost: asyncio.Event) -> bool:
        """Checked before each step after the commit: a lapsed lock means someone else may be
        finishing the meeting; stop (the scanner resumes it if nobody is)."""
        if not lost.is_set() and not await lock.renew():
            lost.set()
        return not lost.is_set()

    async def _generate(
        self, m: str, fence: int, generations: int, lock: Lease, lost: asyncio.Event
    ) -> None:
        meta = await self.state.meta(m)
        if meta is None or meta.status != "finalizing":
            return
        segments = sorted(await self.state.segments(m), key=lambda s: s.ts)
        record = await self.state.stored_summary(m)
        if record is None:
            logger.info(
                "summary generation #{} meeting={} fence={} segments={}",
                generations,
                m,
                fence,
                len(segments),
            )
            await self.gate.idle()
            result = await self.summarizer.summarize(segments, meta.duration_ms)
            candidate = SummaryRecord(
                summary=Summary.model_validate(result.summary.model_dump()),
                source_segments=len(segments),
                source="llm" if result.source == "llm" else "local",
                llm_elapsed_ms=result.llm_elapsed_ms,
                elapsed_ms=result.elapsed_ms,
                fallback_reason=result.fallback_reason,
                fence=fence,
                committed_at=now_ms(),
            )
            committed = await self.state.commit(m, candidate)
            if committed.record is None:
                logger.warning("meeting {}: generation fence={} superseded, stopping", m, fence)
                return
            record = committed.record
            logger.info(
                "meeting {}: summary {} (fence={}, source={})",
                m,
                "committed" if committed.outcome == "ours" else "already committed",
                record.fence,
                record.source,
            )
        else:
            logger.info(
                "meeting {}: completing with the stored summary (fence={})", m, record.fence
            )
        if not await self._holding(lock, lost):
            return
        await self.gate.idle()
        meta = await self.state.meta(m)  # the steps done so far, as of now
        if meta is None:
            return
        await self._publish(m, meta, record, segments, lock, lost)

    async def _publish(
        self,
        m: str,
        meta: MeetingMeta,
        record: SummaryRecord,
        segments: list[Segment],
        lock: Lease,
        lost: asyncio.Event,
    ) -> None:
        cfg = self.config()
        device = meta.device_id
        if "summary_sent" not in meta.steps:
            frame = summary_frame(m, record)
            await self.outbox.frame(device, frame, receipt=summary_receipt(m))
            tail = tail_frame(
                m, segments[-TAIL_ITEMS:], len(segments), budget=self.outbox.budget, final=True
            )
            await self.outbox.frame(device, tail)
            await self.state.mark(m, "summary_sent")
            self.spawn(self._resend_until_delivered(m, device, frame), f"meeting-resend-{m}")
        metrics = FinalizeMetrics(
            segments_count=len(segments),
            checkpoint_count=meta.checkpoints,
            llm_elapsed_ms=record.llm_elapsed_ms,
            summary_elapsed_ms=record.elapsed_ms,
            summary_source=record.source,
            empty_bullets=not record.summary.bullets,
            bullets_length=len(record.summary.bullets),
            finalize_source=meta.finalize_source,
            reason=meta.finalize_reason or "requested",
            fence=record.fence,
            generations=meta.generations,
        )
        if segments or cfg.archive_empty:
            if not await self._archive(m, meta, record, segments, metrics, lock, lost):
                return
        else:
            logger.info("meeting {} had no content: answered, not archived", m)
        if not await self._holding(lock, lost):
            return
        now = now_ms()
        # Device and registry first, then the status: a crash in between is resumed (finalizing).
        await self.state.release(device, m, now)
        await self.state.unregister(m)
        if await self.state.finish(m, now, cfg.state_ttl_s):
            await self.outbox.state_changed(m, device, "finalized", meta.finalize_reason or None)
            logger.info(
                "meeting {} finalized ({} segments, reason={})", m, len(segments), metrics.reason
            )
        self.finished(m)

    async def _archive(
        self,
        m: str,
        meta: MeetingMeta,
        record: SummaryRecord,
        segments: list[Segment],
        metrics: FinalizeMetrics,
        lock: Lease,
        lost: asyncio.Event,
    ) -> bool:
        if "archived" not in meta.steps:
            if not await self._holding(lock, lost):
                return False
            main, shards = layout(
                ArchivedMeeting(
                    session_id=m,
                    device_id=meta.device_id,
                    started_at=meta.started_at,
                    ended_at=meta.ended_at,
                    duration_ms=meta.duration_ms,
                    summary=record.summary,
                    metrics=metrics,
                    bullets_length=len(record.summary.bullets),
                    source_segments=record.source_segments,
                    fence=record.fence,
                ),
                segments,
            )
            await self.gate.idle()
            await self.archive.write_meeting(main, shards)
            evicted = await self.archive.update_index(index_entry(main))
            await self.state.mark(m, "archived")
            if evicted:
                self.spawn(self._remove(evicted), "meeting-retention")
        if "metrics_logged" not in meta.steps:
            line = metrics.line(m)
            await self.archive.append_metrics(line)
            await self.state.mark(m, "metrics_logged")
            logger.info(line)
        if "event_published" not in meta.steps:
            if not await self._holding(lock, lost):
                return False
            await self.outbox.finalized(
                MeetingFinalized(
                    event_id=f"meeting-finalized-{m}",
                    session_id=m,
                    device_id=meta.device_id,
                    summary=record.summary,
                    metrics=metrics.model_dump(by_alias=True),
                    duration_ms=meta.duration_ms,
                    started_at=meta.started_at,
                    ended_at=meta.ended_at,
                    fence=record.fence,
                )
            )
            await self.state.mark(m, "event_published")
        return True

    async def _resend_until_delivered(self, m: str, device: str, frame: str) -> None:
        for delay in SUMMARY_RESEND_S:
            await asyncio.sleep(delay)
            try:
                meta = await self.state.meta(m)
                if meta is None or meta.summary_delivered:
                    return
                logger.info("meeting {}: no receipt for its summary yet; publishing it again", m)
                await self.outbox.frame(device, frame, receipt=summary_receipt(m))
            except Exception as exc:  # Redis or NATS restarting: try at the next delay
                logger.warning("meeting {}: summary resend failed: {}", m, exc)

    async def _remove(self, ids: list[str]) -> None:
        removed = 0
        for sid in ids:
            removed += await self.archive.remove_meeting(sid)
        logger.info("retention: {} meetings left the index, {} records removed", len(ids), removed)

    async def stop(self) -> None:
        """Shutdown: stop generating here (locks are released; another replica resumes)."""
        tasks = list(self.running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
