"""One-shot commands against the dead-letter store (``supie webhook ...`` calls these):

* ``python -m supie_webhook dead-letters`` (or ``redeliver --list``): one JSON line per failed
  delivery (event, endpoint without query, attempts); never a secret or a body.
* ``python -m supie_webhook redeliver [--id EVENT_ID]``: deliver again now with the current
  configuration (endpoint matched by URL, its current secret); success removes the entry.
* ``python -m supie_webhook echo [--port P] [--secret S]``: a local receiver that verifies and
  prints what arrives, to try a configuration by hand.

They read the same configuration as the service (``SUPIE_CONFIG`` + ``SUPIE_*``); only Redis
(``SUPIE_REDIS__URL``) is needed, not NATS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from loguru import logger
from supie_common.logs import setup_logging
from supie_common.settings import ConfigError, load_settings
from supie_common.store import Lease, connect_redis
from supie_common.webhooks import WebhookVerificationError, verify

from .config import WebhookSettings
from .deadletter import DeadLetter, DeadLetters
from .delivery import Deliverer, quiet_http_client_logs
from .receiver import ReceivedRequest, WebhookReceiver
from .request import endpoint_label, webhook_body

__all__ = ["main", "list_dead_letters", "redeliver"]


def _describe(entry: DeadLetter) -> dict[str, Any]:
    return {
        "event_id": entry.event.event_id,
        "session_id": entry.event.session_id,
        "device_id": entry.event.device_id,
        "webhook_id": entry.webhook_id,
        "endpoint": endpoint_label(entry.endpoint_url),
        "first_failed_ms": entry.first_failed_ms,
        "last_failed_ms": entry.last_failed_ms,
        "redeliveries": entry.redeliveries,
        "attempts": entry.attempts,
    }


def _store(settings: WebhookSettings) -> DeadLetters:
    if not settings.redis.url:
        raise SystemExit("webhook: redis.url (SUPIE_REDIS__URL) is required for dead letters")
    return DeadLetters(connect_redis(settings.redis.url), settings.webhook.dead_letter_key)


async def list_dead_letters(settings: WebhookSettings, event_id: str | None = None) -> int:
    store = _store(settings)
    try:
        for entry in await store.all():
            if event_id is None or entry.event.event_id == event_id:
                print(json.dumps(_describe(entry), ensure_ascii=False))
    finally:
        await store.redis.aclose()
    return 0


async def _redeliver_one(
    store: DeadLetters, deliverer: Deliverer, settings: WebhookSettings, entry: DeadLetter
) -> dict[str, Any]:
    section = settings.meeting.webhook
    line: dict[str, Any] = {
        "event_id": entry.event.event_id,
        "endpoint": endpoint_label(entry.endpoint_url),
    }
    endpoint = next((ep for ep in section.all_endpoints() if ep.url == entry.endpoint_url), None)
    if endpoint is None:
        return {**line, "result": "skipped", "error": "endpoint no longer configured"}
    # Two operators redelivering at once must not POST the same event twice.
    lease = Lease(store.redis, f"{store.key}:redeliver:{entry.webhook_id}", 120_000)
    if not await lease.acquire():
        return {**line, "result": "skipped", "error": "being redelivered elsewhere"}
    try:
        body = webhook_body(entry.event)
        outcome = await deliverer.deliver(
            endpoint,
            entry.webhook_id,
            body,
            event_id=entry.event.event_id,
            timeout_s=section.timeout_s,
            attempt_no=len(entry.attempts) + 1,
        )
        if outcome.ok:
            await store.resolve(entry.webhook_id)
        else:
            await store.record(
                entry.webhook_id,
                entry.endpoint_url,
                entry.event,
                [a.as_dict() for a in outcome.attempts],
                redelivery=True,
            )
        return {**line, "result": outcome.result, "attempts": len(outcome.attempts)}
    finally:
        await lease.release()


async def redeliver(settings: WebhookSettings, event_id: str | None = None) -> int:
    """Exit status 0 when every selected entry was delivered, 1 otherwise (or none matched)."""
    store = _store(settings)
    try:
        entries = [e for e in await store.all() if event_id in (None, e.event.event_id)]
        if not entries:
            print(json.dumps({"result": "none", "event_id": event_id}))
            return 1 if event_id else 0
        deliverer = Deliverer(max_connections=settings.webhook.concurrency)
        try:
            lines = await asyncio.gather(
                *(_redeliver_one(store, deliverer, settings, e) for e in entries)
            )
        finally:
            await deliverer.aclose()
        for line in lines:
            print(json.dumps(line, ensure_ascii=False))
        return 0 if all(line["result"] in ("ok", "retry_ok") for line in lines) else 1
    finally:
        await store.redis.aclose()


async def echo(port: int, secret: str | None) -> int:
    async def respond(req: ReceivedRequest) -> int:
        if secret is None:
            print(f"{req.headers.get('webhook-id')} received {len(req.body)} bytes (not verified)")
            return 200
        try:
            payload = verify(req.body, req.headers, secret, scheme="both")
        except WebhookVerificationError as exc:
            print(f"{req.headers.get('webhook-id')} REJECTED: {exc}")
            return 401
        print(f"{req.headers.get('webhook-id')} verified: session {payload.get('sessionId')}")
        return 200

    async with WebhookReceiver(respond, host="0.0.0.0", port=port) as rx:
        print(f"listening on http://0.0.0.0:{rx.port}/ (Ctrl-C to stop)", flush=True)
        await asyncio.Event().wait()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="supie webhook", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    red = sub.add_parser("redeliver", help="deliver dead letters again (all, or one event)")
    red.add_argument("--id", dest="event_id", help="only this event id")
    red.add_argument("--list", action="store_true", help="only list, do not deliver")
    lst = sub.add_parser("dead-letters", help="list failed deliveries")
    lst.add_argument("--id", dest="event_id", help="only this event id")
    ech = sub.add_parser("echo", help="run a local receiver that verifies and prints webhooks")
    ech.add_argument("--port", type=int, default=9000)
    ech.add_argument("--secret", default=None, help="verify with this secret")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.command == "echo":
        try:
            return asyncio.run(echo(args.port, args.secret))
        except KeyboardInterrupt:
            return 0
    try:
        settings = load_settings(WebhookSettings)
    except ConfigError as exc:
        raise SystemExit(f"webhook: {exc}") from None
    writer = setup_logging(settings.log, "webhook")
    quiet_http_client_logs()
    try:
        if args.command == "dead-letters" or args.list:
            return asyncio.run(list_dead_letters(settings, args.event_id))
        return asyncio.run(redeliver(settings, args.event_id))
    finally:
        logger.complete()  # flush loguru's queue, then the writer thread, before exiting
        writer.drain()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
