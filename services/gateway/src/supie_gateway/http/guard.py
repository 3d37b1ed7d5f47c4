"""Token auth and per-client rate limiting of the API routes."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import Request
from fastapi.responses import JSONResponse
from supie_common.settings import ServerSection, secret_value

from ..auth import same_secret

__all__ = ["RateLimiter", "fail", "guard"]


class RateLimiter:
    """Token bucket per client: ``rate`` requests/s with bursts of ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, client: str) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        tokens, last = self._buckets.get(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            return False
        self._buckets[client] = (tokens - 1.0, now)
        if len(self._buckets) > 10_000:  # forget idle clients
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 60}
        return True


def fail(status: int, error: str) -> JSONResponse:
    return JSONResponse({"success": False, "error": error}, status_code=status)


def guard(
    req: Request, server: Callable[[], ServerSection], limiter: RateLimiter
) -> JSONResponse | None:
    """Token auth (401) then per-client rate limit (429); None = go ahead."""
    token = secret_value(server().api_token)
    if token:
        given = req.headers.get("X-API-Token") or req.query_params.get("token")
        auth = req.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not same_secret(given, token):
            return fail(401, "unauthorized: send Authorization: Bearer <token> or X-API-Token")
    client = req.client.host if req.client else "?"
    if not limiter.allow(client):
        return fail(429, "rate limit exceeded: slow down (server.api_rate_limit)")
    return None
