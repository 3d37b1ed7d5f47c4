"""The webhook service: replicas share one durable JetStream pull consumer of meeting.finalized.

Why pull + durable: an outage or restart of every replica only delays delivery (events wait in
the stream), and replicas split the work by pulling from the same consumer. A message is acked
only after each endpoint's outcome is in Redis (delivered marker or dead letter).

Retries follow ``webhook.retry_schedule_s`` (default as Standard Webhooks / Svix: immediately,
5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h): each delivery of the JetStream message is one attempt
for every endpoint that does not have the event yet; a failure hands the message back with
``nak(delay=<next>)``, so the schedule survives restarts and no process sleeps through it. After
the last attempt the failed endpoints are dead-lettered. Every attempt and redelivery carries the
same ``webhook-id``, so receivers deduplicate.
"""

from __future__ import annotations

import asyncio
from typing import Any

import nats.errors
from loguru import logger
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from pydantic import ValidationError
from supie_common.bus import ensure_events_stream
from supie_common.contracts import MeetingFinalized, Subjects, decode
from supie_common.service import Service
from supie_common.settings import WebhookEndpoint, WebhookSection

from .config import WebhookSettings
from .deadletter import DeadLetters
from .delivery import Deliverer, quiet_http_client_logs
from .request import endpoint_host, webhook_body, webhook_id

__all__ = ["WebhookService"]

FETCH_TIMEOUT_S = 1.0  # how long one pull waits when the stream is idle (bounds stop latency)
FETCH_BATCH_MAX = 100
STOP_GRACE_S = 3.0  # in-flight deliveries still running after this are handed back (nak)


class WebhookService(Service[WebhookSettings]):
    name = "webhook"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._inflight: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()
        self._pull_task: asyncio.Task[None] | None = None
        self.deliverer = Deliverer()
        self._counts = {"ok": 0, "retry_ok": 0, "retry": 0, "fail": 0, "skipped": 0}

    @property
    def section(self) -> WebhookSection:
        return self.settings.meeting.webhook

    async def on_start(self) -> None:
        if self.redis is None:
            raise RuntimeError("webhook needs redis.url (SUPIE_REDIS__URL) for its dead letters")
        quiet_http_client_logs()
        cfg = self.settings.webhook
        self.dead_letters = DeadLetters(self.redis, cfg.dead_letter_key)
        self.deliverer = Deliverer(max_connections=cfg.concurrency)
        js: JetStreamContext = self.nc.jetstream()
        await ensure_events_stream(js, self.settings.nats.stream_replicas)
        consumer = ConsumerConfig(
            durable_name=cfg.durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=cfg.ack_wait_s,
            max_deliver=-1,
            max_ack_pending=10_000,
            deliver_policy=DeliverPolicy.NEW if cfg.start_from == "new" else DeliverPolicy.ALL,
        )
        self.psub = await js.pull_subscribe(
            Subjects.MEETING_FINALIZED,
            durable=cfg.durable,
            stream=Subjects.EVENTS_STREAM,
            config=consumer,
        )
        self._describe_endpoints()
        self._pull_task = self.spawn(self._pull_loop(), "webhook-pull")

    async def on_config(self, old: WebhookSettings, new: WebhookSettings, keys: list[str]) -> None:
        if any(k.startswith("meeting.webhook.") for k in keys):
            self._describe_endpoints()

    def _describe_endpoints(self) -> None:
        endpoints = self.section.all_endpoints()
        if not endpoints:
            logger.warning(
                "no webhook endpoint configured (meeting.webhook.url / endpoints): "
                "finalized meetings wait in the stream until one is"
            )
        for ep in endpoints:
            signed = "signed" if ep.secret else "UNSIGNED (no secret)"
            logger.info("webhook endpoint {} ({})", endpoint_host(ep.url), signed)

    def health_detail(self) -> dict[str, Any]:
        return {
            "inflight": len(self._inflight),
            "consumer": self.settings.webhook.durable,
            **self._counts,
        }

    async def on_stop(self) -> None:
        self._slot_freed.set()  # wake the pull loop if it waits for a free slot
        if self._pull_task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._pull_task), FETCH_TIMEOUT_S + 1)
            except TimeoutError:
                self._pull_task.cancel()
            except Exception:
                pass
        if self._inflight:
            logger.info("waiting for {} in-flight deliveries", len(self._inflight))
            await asyncio.wait(set(self._inflight), timeout=STOP_GRACE_S)
        # Whatever still runs is cancelled by Service.stop and naks its message (see _handle).
        for task in list(self._inflight):
            task.cancel()
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        # A pull subscription never empties its pending queue the way nats drain() waits for
        # (it would stall the drain for its full 5 s), so drop it explicitly; acks don't need it.
        try:
            await self.psub.unsubscribe()
        except Exception as exc:
            logger.debug("pull unsubscribe: {}", exc)
        await self.deliverer.aclose()

    # -- consuming -----------------------------------------------------------------------------
    async def _pull_loop(self) -> None:
        while not self.stopping:
            if not self.section.all_endpoints():
                await asyncio.sleep(FETCH_TIMEOUT_S)  # leave events in the stream meanwhile
                continue
            free = self.settings.webhook.concurrency - len(self._inflight)
            if free <= 0:
                # Bounded concurrency: pull only what can start now, so a pulled message never
                # waits in our memory while its ack timer runs.
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                msgs = await self.psub.fetch(min(free, FETCH_BATCH_MAX), timeout=FETCH_TIMEOUT_S)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            except Exception as exc:
                logger.warning("webhook pull failed, retrying: {}", type(exc).__name__)
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                if self.stopping:
                    await msg.nak()
                    continue
                task = self.spawn(self._handle(msg), "webhook-delivery")
                self._inflight.add(task)
                task.add_done_callback(self._delivery_done)

    def _delivery_done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._slot_freed.set()

    async def _keep_in_progress(self, msg: Msg) -> None:
        """Reset the ack timer while retries run, so no other replica takes the event over."""
        while True:
            await asyncio.sleep(max(self.settings.webhook.ack_wait_s / 3, 0.5))
            try:
                await msg.in_progress()
            except Exception as exc:
                logger.debug("in_progress failed: {}", exc)

    async def _handle(self, msg: Msg) -> None:
        try:
            event = decode(MeetingFinalized, msg.data)
        except ValidationError as exc:
            fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors())
            logger.error("dropping malformed meeting.finalized event (bad fields: {})", fields)
            await msg.term()
            return
        keeper = asyncio.create_task(self._keep_in_progress(msg))
        schedule = self.settings.webhook.retry_schedule_s
        attempt_no = max(1, msg.metadata.num_delivered)
        # When the next attempt is due if this one fails; None: this is the last scheduled one.
        next_in = schedule[attempt_no] if attempt_no < len(schedule) else None
        try:
            body = webhook_body(event)
            endpoints = self.section.all_endpoints()
            results = await asyncio.gather(
                *(self._deliver_to(event, body, ep, attempt_no, next_in) for ep in endpoints),
                return_exceptions=True,
            )
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                # The outcome could not be recorded (Redis down?): let JetStream retry it later.
                logger.error(
                    "webhook event {} not recorded ({}); will be retried",
                    event.event_id,
                    type(errors[0]).__name__,
                )
                await msg.nak(delay=5)
                return
            if all(results) or next_in is None:
                await msg.ack()  # delivered everywhere, or dead-lettered where it was not
            else:
                await msg.nak(delay=next_in)  # the next attempt, on the schedule
        except asyncio.CancelledError:
            # Stopping mid-delivery: hand the event back at once rather than after ack_wait.
            await msg.nak()
            raise
        finally:
            keeper.cancel()

    async def _deliver_to(
        self,
        event: MeetingFinalized,
        body: bytes,
        ep: WebhookEndpoint,
        attempt_no: int,
        next_in: float | None,
    ) -> bool:
        """One scheduled attempt for one endpoint; True when it is delivered (now or before)."""
        msg_id = webhook_id(event.event_id, ep.url)
        if await self.dead_letters.delivered(msg_id):
            # A redelivered message: this endpoint already has it (another one may not).
            self._counts["skipped"] += 1
            logger.debug(
                "[Meeting Webhook] already delivered endpoint={} event={}",
                endpoint_host(ep.url),
                event.event_id,
            )
            return True
        outcome = await self.deliverer.deliver(
            ep,
            msg_id,
            body,
            event_id=event.event_id,
            timeout_s=self.section.timeout_s,
            attempt_no=attempt_no,
            next_in_s=next_in,
        )
        self._counts[outcome.result] += 1
        if outcome.ok:
            await self.dead_letters.resolve(msg_id)
            return True
        attempt = outcome.attempts[-1].as_dict()
        if next_in is not None:
            await self.dead_letters.note_attempt(msg_id, attempt)
            return False
        attempts = [*await self.dead_letters.noted_attempts(msg_id), attempt]
        await self.dead_letters.record(msg_id, ep.url, event, attempts)
        return False
