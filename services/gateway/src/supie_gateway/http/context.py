"""What the HTTP app is built from: a narrow view of the gateway process."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from redis.asyncio import Redis

from ..config import GatewaySettings
from ..metrics import GatewayMetrics
from .guard import RateLimiter

__all__ = ["HttpContext"]


@dataclass(frozen=True, slots=True)
class HttpContext:
    settings: Callable[[], GatewaySettings]
    nc: NATS
    redis: Redis | None
    metrics: GatewayMetrics
    limiter: RateLimiter
    ws_port: Callable[[], int]
    stopping: Callable[[], bool] = lambda: False  # the process is shutting down (ends streams)
