"""The gateway's HTTP port: OTA, health, metrics and the bus-backed APIs."""

from .app import build_app
from .context import HttpContext
from .guard import RateLimiter
from .limits import BodyLimits, guarded_http_protocol

__all__ = ["BodyLimits", "HttpContext", "RateLimiter", "build_app", "guarded_http_protocol"]
