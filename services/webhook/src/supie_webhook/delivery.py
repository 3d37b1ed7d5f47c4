"""One attempt to deliver one event to one endpoint: a signed POST with a whole-request timeout,
and the ``[Meeting Webhook]`` result line (never the secret, never the body). The retry schedule
lives in the service: a failed attempt hands the event back to JetStream with the next delay."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from loguru import logger
from supie_common.contracts import now_ms
from supie_common.settings import WebhookEndpoint
from supie_common.webhooks import sign_headers

from .request import body_digest, endpoint_host

__all__ = ["Attempt", "Outcome", "Deliverer", "quiet_http_client_logs"]

Result = Literal["ok", "retry_ok", "retry", "fail"]
"""ok: first attempt; retry_ok: a later attempt; retry: failed, another attempt is scheduled;
fail: the last scheduled attempt failed (the delivery is dead-lettered)."""


def _fail_fast_on_missing_sniffio() -> None:
    """httpcore runs ``import sniffio`` on every lock it creates (several per request). When the
    package is absent each of those imports searches sys.path on disk again, which cost ~40% of
    a delivery's CPU. A ``None`` entry makes the failed import instant; behaviour is unchanged
    (httpcore then assumes asyncio, which is what we run)."""
    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]


_fail_fast_on_missing_sniffio()


def quiet_http_client_logs() -> None:
    """httpx logs every request with its full URL at INFO (a token in a query would leak, and it
    is one line per request): keep only its warnings. Call from entry points."""
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


@dataclass
class Attempt:
    """One HTTP attempt. ``error`` is a short, log-safe reason (status code or exception type)."""

    ok: bool
    status: int | None
    error: str | None
    at_ms: int
    elapsed_ms: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Outcome:
    result: Result
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.result in ("ok", "retry_ok")


class Deliverer:
    """Sends signed webhook requests; one ``httpx.AsyncClient`` (connection pool) per endpoint
    origin, so a hanging receiver can never use up the connections another endpoint needs."""

    def __init__(self, max_connections: int = 32) -> None:
        self.max_connections = max_connections
        self._clients: dict[str, httpx.AsyncClient] = {}

    def client_for(self, url: str) -> httpx.AsyncClient:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        client = self._clients.get(origin)
        if client is None:
            # A pool no larger than the delivery slots: httpcore scans every pooled connection
            # on each request, so extra connections cost CPU without adding throughput.
            limits = httpx.Limits(
                max_connections=self.max_connections, max_keepalive_connections=self.max_connections
            )
            client = httpx.AsyncClient(limits=limits, follow_redirects=False)
            self._clients[origin] = client
        return client

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)

    async def attempt(
        self, endpoint: WebhookEndpoint, msg_id: str, body: bytes, timeout_s: float
    ) -> Attempt:
        # Extra headers first, so configuration can never replace a signature header.
        headers = endpoint.header_values()
        headers.update(sign_headers(body, endpoint.signing_secrets(), msg_id))
        started = time.monotonic()
        at = now_ms()
        status: int | None = None
        error: str | None = None
        try:
            # httpx timeouts are per read/write; the spec's 5 s is for the whole attempt, so a
            # receiver that trickles bytes cannot hold a delivery for longer.
            async with asyncio.timeout(timeout_s):
                response = await self.client_for(endpoint.url).post(
                    endpoint.url, content=body, headers=headers, timeout=timeout_s
                )
            status = response.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except TimeoutError:
            error = f"timeout after {timeout_s:g}s"
        except httpx.HTTPError as exc:
            # The exception text may contain the URL (and a token in its query): type only.
            error = type(exc).__name__
        elapsed = int((time.monotonic() - started) * 1000)
        return Attempt(ok=error is None, status=status, error=error, at_ms=at, elapsed_ms=elapsed)

    async def deliver(
        self,
        endpoint: WebhookEndpoint,
        msg_id: str,
        body: bytes,
        *,
        event_id: str,
        timeout_s: float,
        attempt_no: int = 1,
        next_in_s: float | None = None,
    ) -> Outcome:
        """One attempt (number ``attempt_no``), logged; ``next_in_s`` = when the next attempt
        is scheduled if this one fails (None: this is the last one)."""
        attempt = await self.attempt(endpoint, msg_id, body, timeout_s)
        result: Result
        if attempt.ok:
            result = "ok" if attempt_no == 1 else "retry_ok"
        else:
            result = "retry" if next_in_s is not None else "fail"
        log = logger.error if result == "fail" else logger.info
        log(
            "[Meeting Webhook] result={} body_len={} body_sha256={} endpoint={} event={} "
            "attempt={}{}",
            result,
            len(body),
            body_digest(body),
            endpoint_host(endpoint.url),
            event_id,
            attempt_no,
            ""
            if attempt.ok
            else f" error={attempt.error}"
            + (f" next_in={next_in_s:g}s" if next_in_s is not None else " dead-lettered"),
        )
        return Outcome(result=result, attempts=[attempt])
