"""One error tree for Supie: every error a service raises on purpose is a :class:`SupieError`."""

from __future__ import annotations

from .contracts.device import ErrorCode

__all__ = [
    "BusError",
    "BusTimeout",
    "ConfigError",
    "ProtocolError",
    "ServiceUnavailable",
    "SupieError",
]


class SupieError(Exception):
    """Root of the errors Supie raises on purpose."""


class ConfigError(SupieError, ValueError):
    """Invalid configuration; the message names every bad key and never quotes a value."""


class ProtocolError(SupieError):
    """A device message the server cannot take: answered with ``code``, ``message``, ``field``."""

    def __init__(self, code: ErrorCode, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


class BusError(SupieError, RuntimeError):
    """A bus request failed (no service answered)."""


class BusTimeout(BusError, TimeoutError):
    """A bus request got no reply in time."""


class ServiceUnavailable(SupieError):
    """A dependency (NATS, Redis, another service) is down for longer than we wait."""
