"""The webhook dispatcher end to end: real nats-server (JetStream), real Valkey, the service as a
subprocess (``python -m supie_webhook``), and real local HTTP receivers.

Isolation: tests share one NATS server and one events stream, so each test runs its dispatcher on
its own durable consumer that starts at new events (``start_from=new``) and its own dead-letter
key; every assertion counts only the events the test published itself.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import re
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from supie_common.bus import ensure_events_stream
from supie_common.contracts import MeetingFinalized, Subjects, Summary, encode, new_id
from supie_common.webhooks import verify
from supie_webhook.receiver import ReceivedRequest, WebhookReceiver
from supie_webhook.request import webhook_body, webhook_id

SECRET = "tEsT-sEcReT-" + new_id()[:8]


def summary(title: str = "Weekly sync", bullets: tuple[str, ...] = ("a", "b")) -> Summary:
    return Summary(title=title, duration="00:01:05", bullets=list(bullets))


async def wait_log(proc: Any, done: Callable[[str], bool], within_s: float = 10.0) -> str:
    """Poll a service's captured log until ``done(log)``; the log file is what we inspect."""
    for _ in range(int(within_s / 0.05)):
        log = proc.log()
        if done(log):
            return log
        if proc.proc.poll() is not None:
            raise RuntimeError(f"{proc.module} exited: {log[-3000:]}")
        await asyncio.sleep(0.05)
    raise TimeoutError(f"log condition not met after {within_s}s: {proc.log()[-3000:]}")


class Dispatcher:
    """Per-test settings for the dispatcher subprocesses and helpers to drive them."""

    def __init__(
        self, spawn_service: Any, stack_env: dict[str, str], nc: NATS, js: JetStreamContext
    ) -> None:
        self.spawn_service = spawn_service
        self.stack_env = stack_env
        self.nc = nc
        self.js = js
        self.durable = f"webhook-test-{new_id()[:10]}"
        self.dead_key = f"supie:test:webhook:{self.durable}"
        self.procs: list[Any] = []

    def env(self, url: str, **extra: str) -> dict[str, str]:
        env = {
            "SUPIE_MEETING__WEBHOOK__URL": url,
            "SUPIE_MEETING__WEBHOOK__SECRET": SECRET,
            "SUPIE_WEBHOOK__DURABLE": self.durable,
            "SUPIE_WEBHOOK__START_FROM": "new",
            "SUPIE_WEBHOOK__DEAD_LETTER_KEY": self.dead_key,
            "SUPIE_WEBHOOK__RETRY_SCHEDULE_S": "[0, 0.2]",  # two attempts, then dead letter
        }
        env.update(extra)
        return env

    async def start(self, env: dict[str, str]) -> Any:
        proc = self.spawn_service("supie_webhook", extra_env=env)
        self.procs.append(proc)
        await proc.wait_healthy(self.nc, "webhook", timeout=30)
        # Health answers before the consumer exists: wait for this process's own start line.
        await wait_log(proc, lambda log: "webhook started as" in log, 30)
        await self.js.consumer_info(Subjects.EVENTS_STREAM, self.durable)
        return proc

    async def publish(self, n: int = 1, **fields: Any) -> list[MeetingFinalized]:
        events = []
        for _ in range(n):
            sid = new_id()
            event = MeetingFinalized(
                event_id=f"evt-{sid}",
                session_id=f"meet-{sid}",
                device_id="aa:bb:cc:00:11:22",
                summary=fields.get("summary", summary()),
                metrics=fields.get("metrics", {"segmentsCount": 12}),
                duration_ms=65_000,
                started_at=1,
                ended_at=2,
            )
            await self.js.publish(Subjects.MEETING_FINALIZED, encode(event))
            events.append(event)
        return events

    async def cli(self, *args: str, env: dict[str, str]) -> tuple[int, str]:
        full_env = {**self.stack_env, **env}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "supie_webhook",
            *args,
            env=full_env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode or 0, out.decode(errors="replace")


@pytest.fixture
async def dispatcher(
    spawn_service: Any, stack_env: dict[str, str], nc: NATS
) -> AsyncIterator[Dispatcher]:
    js = nc.jetstream()
    await ensure_events_stream(js)
    d = Dispatcher(spawn_service, stack_env, nc, js)
    yield d
    await asyncio.gather(*(asyncio.to_thread(p.terminate) for p in d.procs))
    try:
        await js.delete_consumer(Subjects.EVENTS_STREAM, d.durable)
    except NotFoundError:
        pass


def ids_of(requests: list[ReceivedRequest], events: list[MeetingFinalized]) -> list[str]:
    """Session ids of the requests that belong to ``events`` (other tests' are ignored)."""
    wanted = {e.session_id for e in events}
    sids = [json.loads(r.body)["sessionId"] for r in requests]
    return [s for s in sids if s in wanted]


async def test_delivers_signed_requests_to_every_endpoint(dispatcher: Dispatcher) -> None:
    async with WebhookReceiver() as rx1, WebhookReceiver() as rx2:
        second = [
            {"url": rx2.url, "secret": "second-endpoint-secret", "headers": {"X-Tenant": "acme"}}
        ]
        env = dispatcher.env(
            rx1.url,
            SUPIE_MEETING__WEBHOOK__HEADERS=json.dumps({"Authorization": "Bearer xyz"}),
            SUPIE_MEETING__WEBHOOK__PREVIOUS_SECRETS=json.dumps(["rotated-out-secret"]),
            SUPIE_MEETING__WEBHOOK__ENDPOINTS=json.dumps(second),
        )
        proc = await dispatcher.start(env)
        [event] = await dispatcher.publish(summary=summary("周会", ("决定上线",)))
        async with asyncio.timeout(10):
            await rx1.wait_until(lambda r: len(r) >= 1)
            await rx2.wait_until(lambda r: len(r) >= 1)

        body = webhook_body(event)
        req1, req2 = rx1.requests[0], rx2.requests[0]
        assert req1.body == body and req2.body == body  # the exact compact bytes
        assert (
            verify(req1.body, req1.headers, SECRET, scheme="both")["sessionId"] == event.session_id
        )
        # During rotation a receiver still on the previous secret verifies too.
        verify(req1.body, req1.headers, "rotated-out-secret", scheme="standard")
        verify(req2.body, req2.headers, "second-endpoint-secret", scheme="both")
        with pytest.raises(ValueError):
            verify(req2.body, req2.headers, SECRET)
        assert req1.headers["content-type"] == "application/json; charset=utf-8"
        assert req1.headers["authorization"] == "Bearer xyz"
        assert req2.headers["x-tenant"] == "acme" and "authorization" not in req2.headers
        assert req1.headers["webhook-id"] == webhook_id(event.event_id, rx1.url)
        assert req2.headers["webhook-id"] == webhook_id(event.event_id, rx2.url)
        assert req1.headers["webhook-id"] != req2.headers["webhook-id"]

        digest = hashlib.sha256(body).hexdigest()[:8]
        log = await wait_log(proc, lambda log: log.count("result=ok") >= 2)
        assert f"[Meeting Webhook] result=ok body_len={len(body)} body_sha256={digest}" in log


async def test_a_failed_attempt_is_retried_on_the_default_schedule(
    dispatcher: Dispatcher,
) -> None:
    async def fail_first(req: ReceivedRequest) -> int:
        return 503 if len(rx.requests) == 1 else 200

    async with WebhookReceiver(fail_first) as rx:
        env = dispatcher.env(rx.url)
        del env["SUPIE_WEBHOOK__RETRY_SCHEDULE_S"]  # the default: immediately, then 5 s, ...
        proc = await dispatcher.start(env)
        [event] = await dispatcher.publish()
        log = await wait_log(proc, lambda log: "result=retry " in log)
        assert "next_in=5s" in log
        async with asyncio.timeout(15):
            await rx.wait_until(lambda r: len(r) >= 2)
        first, second = rx.requests
        gap = second.received_mono - first.received_mono
        assert 4.5 <= gap <= 8.0, gap  # the scheduled 5 s (JetStream redelivery) on a busy box
        assert first.headers["webhook-id"] == second.headers["webhook-id"]
        verify(second.body, second.headers, SECRET, scheme="both")
        log = await wait_log(proc, lambda log: "result=retry_ok" in log)
        assert event.event_id in log and "attempt=2" in log


async def test_failing_twice_dead_letters_then_redeliver_succeeds(
    dispatcher: Dispatcher,
) -> None:
    healthy = False

    async def respond(req: ReceivedRequest) -> int:
        return 200 if healthy else 500

    async with WebhookReceiver(respond) as rx:
        env = dispatcher.env(rx.url)
        proc = await dispatcher.start(env)
        [event] = await dispatcher.publish()
        await wait_log(proc, lambda log: "result=fail" in log)
        assert len(rx.requests) == 2  # first attempt + one retry

        # The dead letter is recorded (before the ack) with both attempts.
        code, out = await dispatcher.cli("dead-letters", env=env)
        assert code == 0, out
        [entry] = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert entry["event_id"] == event.event_id and entry["endpoint"] == rx.url
        assert [a["error"] for a in entry["attempts"]] == ["HTTP 500", "HTTP 500"]
        assert SECRET not in out

        # While the receiver is still down, redelivery fails and keeps the entry (3 attempts).
        code, out = await dispatcher.cli("redeliver", "--id", event.event_id, env=env)
        assert code == 1, out
        code, out = await dispatcher.cli("redeliver", "--list", env=env)
        [entry] = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert len(entry["attempts"]) == 3 and entry["redeliveries"] == 1

        healthy = True
        code, out = await dispatcher.cli("redeliver", "--id", event.event_id, env=env)
        assert code == 0, out
        assert '"result": "retry_ok"' in out  # the 4th attempt overall
        last = rx.requests[-1]
        assert (
            verify(last.body, last.headers, SECRET, scheme="both")["sessionId"] == event.session_id
        )
        assert last.headers["webhook-id"] == rx.requests[0].headers["webhook-id"]
        code, out = await dispatcher.cli("dead-letters", env=env)
        assert code == 0 and event.event_id not in out


async def test_events_published_while_stopped_are_delivered_once_after_restart(
    dispatcher: Dispatcher,
) -> None:
    async with WebhookReceiver() as rx:
        env = dispatcher.env(rx.url)
        proc = await dispatcher.start(env)
        warmup = await dispatcher.publish()
        async with asyncio.timeout(10):
            await rx.wait_until(lambda r: len(ids_of(r, warmup)) == 1)
        await asyncio.to_thread(proc.terminate)

        started = time.monotonic()
        events = await dispatcher.publish(20)  # meetings finalize while the webhook is down
        assert time.monotonic() - started < 2.0
        await asyncio.sleep(0.5)
        assert ids_of(rx.requests, events) == []

        await dispatcher.start(env)
        async with asyncio.timeout(20):
            await rx.wait_until(lambda r: len(set(ids_of(r, events))) == 20)
        await asyncio.sleep(1.0)  # give any duplicate time to show up
        counts = collections.Counter(ids_of(rx.requests, events))
        assert set(counts) == {e.session_id for e in events}
        assert max(counts.values()) == 1, counts


async def test_hanging_receiver_blocks_neither_publishing_nor_other_deliveries(
    dispatcher: Dispatcher,
) -> None:
    hang_sid: set[str] = set()

    async def respond(req: ReceivedRequest) -> int:
        if json.loads(req.body)["sessionId"] in hang_sid:
            await asyncio.sleep(10)
        return 200

    async with WebhookReceiver(respond) as rx:
        await dispatcher.start(dispatcher.env(rx.url))
        sid = new_id()
        hang_sid.add(f"meet-{sid}")
        hanging = MeetingFinalized(
            event_id=f"evt-{sid}",
            session_id=f"meet-{sid}",
            device_id="aa:bb",
            summary=summary(),
            duration_ms=5000,
            started_at=1,
            ended_at=2,
        )
        await dispatcher.js.publish(Subjects.MEETING_FINALIZED, encode(hanging))
        await rx.wait_until(lambda r: any(json.loads(x.body)["sessionId"] in hang_sid for x in r))

        # The meeting side only publishes to JetStream: that stays fast while a receiver hangs.
        publish_ms = []
        others = []
        for _ in range(5):
            t0 = time.monotonic()
            others += await dispatcher.publish()
            publish_ms.append((time.monotonic() - t0) * 1000)
        assert max(publish_ms) < 200, publish_ms
        t0 = time.monotonic()
        async with asyncio.timeout(3):
            await rx.wait_until(lambda r: len(set(ids_of(r, others))) == 5)
        assert time.monotonic() - t0 < 3.0  # long before the hanging one's 5 s timeout


async def test_logs_hold_neither_secret_nor_body(dispatcher: Dispatcher) -> None:
    marker = "BODY-MARKER-" + new_id()

    async def respond(req: ReceivedRequest) -> int:
        return 500 if b"fail-me" in req.body else 200

    async with WebhookReceiver(respond) as rx:
        env = dispatcher.env(rx.url + "?token=query-token-xyz", SUPIE_LOG__LEVEL="DEBUG")
        proc = await dispatcher.start(env)
        events = await dispatcher.publish(summary=summary(marker[:30]))
        events += await dispatcher.publish(summary=summary(marker[:30]), metrics={"n": "fail-me"})
        await wait_log(proc, lambda log: "result=fail" in log and "result=ok" in log)
        code, out = await dispatcher.cli("dead-letters", env=env)
        assert code == 0 and events[1].event_id in out
    await asyncio.to_thread(proc.terminate)

    log = proc.log()
    for body in (webhook_body(e) for e in events):
        line = re.search(
            rf"\[Meeting Webhook\] result=(ok|fail) body_len={len(body)} "
            rf"body_sha256={hashlib.sha256(body).hexdigest()[:8]} ",
            log,
        )
        assert line, log[-2000:]
    for leak in (
        SECRET,
        marker[:30],
        "query-token-xyz",
        "fail-me",
        hashlib.sha256(body).hexdigest(),
    ):
        assert leak not in log, leak
        assert leak not in out, leak


@pytest.mark.timeout(90)
async def test_two_replicas_deliver_each_event_exactly_once(dispatcher: Dispatcher) -> None:
    async def slow(req: ReceivedRequest) -> int:
        await asyncio.sleep(0.05)  # so that one replica cannot take everything at once
        return 200

    async with WebhookReceiver(slow) as rx:
        env = dispatcher.env(rx.url, SUPIE_WEBHOOK__CONCURRENCY="4")
        a, b = await asyncio.gather(dispatcher.start(env), dispatcher.start(env))
        events = await dispatcher.publish(60)
        async with asyncio.timeout(30):
            await rx.wait_until(lambda r: len(set(ids_of(r, events))) == 60)
        await asyncio.sleep(1.0)
        ids = [r.headers["webhook-id"] for r in rx.requests if ids_of([r], events)]
        assert len(ids) == 60 and len(set(ids)) == 60  # dedupe by webhook-id finds nothing
        for req in rx.requests:
            verify(req.body, req.headers, SECRET, scheme="both")
        # Both replicas did part of the work.
        assert a.log().count("result=ok") > 0 and b.log().count("result=ok") > 0
        assert a.log().count("result=ok") + b.log().count("result=ok") == 60


async def test_malformed_event_is_dropped_with_a_clear_error(dispatcher: Dispatcher) -> None:
    async with WebhookReceiver() as rx:
        proc = await dispatcher.start(dispatcher.env(rx.url))
        await dispatcher.js.publish(Subjects.MEETING_FINALIZED, b'{"event_id": 1}')
        events = await dispatcher.publish()
        async with asyncio.timeout(10):
            await rx.wait_until(lambda r: len(ids_of(r, events)) == 1)
        log = await wait_log(proc, lambda log: "dropping malformed" in log)
        assert "session_id" in log  # names the bad fields
        assert len(rx.requests) == 1


async def test_deliveries_verify_with_the_standard_webhooks_library(dispatcher: Dispatcher) -> None:
    """A third-party verifier (the ``standardwebhooks`` package) accepts what we send, with a
    ``whsec_`` secret used as Standard Webhooks defines it (the decoded bytes)."""
    import base64

    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    secret = "whsec_" + base64.b64encode(b"a-32-byte-secret-for-the-webhook").decode()
    async with WebhookReceiver() as rx:
        await dispatcher.start(dispatcher.env(rx.url, SUPIE_MEETING__WEBHOOK__SECRET=secret))
        [event] = await dispatcher.publish(summary=summary("周会", ("决定上线", "ship it")))
        async with asyncio.timeout(10):
            await rx.wait_until(lambda r: len(ids_of(r, [event])) == 1)
    req = rx.requests[-1]
    payload = Webhook(secret).verify(req.body, dict(req.headers))
    assert payload["sessionId"] == event.session_id
    assert payload["summary"]["title"] == "周会"
    wrong = "whsec_" + base64.b64encode(b"another-secret-of-thirty-two-by!").decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(wrong).verify(req.body, dict(req.headers))
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(req.body + b" ", dict(req.headers))


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_a_two_minute_receiver_outage_loses_nothing(dispatcher: Dispatcher) -> None:
    """The receiver is down for two minutes while meetings finalize: every event arrives once,
    later, by itself (nobody runs redeliver). The schedule is shortened from the default's
    5 min third attempt so the test takes ~3 minutes."""
    down_until = time.monotonic() + 120

    async def respond(req: ReceivedRequest) -> int:
        return 503 if time.monotonic() < down_until else 200

    async with WebhookReceiver(respond) as rx:
        env = dispatcher.env(rx.url, SUPIE_WEBHOOK__RETRY_SCHEDULE_S="[0, 5, 30, 60, 150, 300]")
        await dispatcher.start(env)
        events = []
        for _ in range(24):  # meetings finalizing during the outage
            events += await dispatcher.publish()
            await asyncio.sleep(2)
        async with asyncio.timeout(240):
            await rx.wait_until(
                lambda r: (
                    {e.session_id for e in events}
                    <= {json.loads(x.body)["sessionId"] for x in r if x.received_mono >= down_until}
                )
            )
        await asyncio.sleep(2)
        delivered = [
            json.loads(r.body)["sessionId"]
            for r in rx.requests
            if r.received_mono >= down_until and ids_of([r], events)
        ]
        assert sorted(delivered) == sorted(e.session_id for e in events)  # each exactly once
    code, out = await dispatcher.cli("dead-letters", env=env)
    assert code == 0 and not any(e.event_id in out for e in events)
