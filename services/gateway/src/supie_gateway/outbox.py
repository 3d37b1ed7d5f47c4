"""Everything a connection sends to its badge: typed messages, ready-made frames, audio.

Each send counts in the metrics and stamps ``session.last_sent`` (the app keepalive's clock). A
closed socket is not an error here: the read loop sees the close and ends the connection.
"""

from __future__ import annotations

import json
import time
from typing import Any

from loguru import logger
from pydantic import BaseModel
from supie_common.contracts import ErrorCode, to_frame
from supie_common.contracts.device import ErrorMessage
from supie_common.protocol import encode_frame
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from .metrics import GatewayMetrics
from .session import DeviceSession

__all__ = ["LOG_EVERY_S", "Outbox", "frame_type"]

LOG_EVERY_S = 10.0

_TYPE_PREFIX = '{"type":"'


def frame_type(frame: str) -> str:
    """The ``type`` of a JSON frame, cheaply (frames from ``to_frame`` start with it)."""
    if frame.startswith(_TYPE_PREFIX):
        end = frame.find('"', len(_TYPE_PREFIX))
        if 0 < end < 40:
            return frame[len(_TYPE_PREFIX) : end]
    try:
        value = json.loads(frame)
    except ValueError:
        return "?"
    return str(value.get("type", "?")) if isinstance(value, dict) else "?"


class Outbox:
    def __init__(self, ws: ServerConnection, session: DeviceSession, metrics: GatewayMetrics):
        self.ws = ws
        self.session = session
        self.metrics = metrics
        self._out = metrics.messages_out
        self._frames_out = metrics.frames_out
        self._logged_at: dict[ErrorCode, float] = {}

    async def send(self, message: BaseModel) -> bool:
        """Send one server -> device model (``contracts.device``)."""
        return await self.send_frame(to_frame(message), str(getattr(message, "type", "?")))

    async def send_frame(self, frame: str, mtype: str | None = None) -> bool:
        """Send a ready-made JSON text frame verbatim. False when the socket is gone."""
        try:
            await self.ws.send(frame)
        except ConnectionClosed:
            return False
        self.session.last_sent = time.monotonic()
        self._out.labels(mtype or frame_type(frame)).inc()
        return True

    async def send_dict(self, message: dict[str, Any]) -> bool:
        """Legacy ``DeviceOutbound.message`` dicts (before the typed protocol)."""
        frame = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
        return await self.send_frame(frame, str(message.get("type", "?")))

    async def send_audio(self, payload: bytes) -> None:
        try:
            await self.ws.send(encode_frame(payload, self.session.protocol_version))
        except ConnectionClosed:
            return
        self.session.last_sent = time.monotonic()
        self._frames_out.inc()

    async def error(self, code: ErrorCode, message: str, field: str | None = None) -> None:
        """A gateway error (``{"type":"error",...}``): always sent, logged at INFO at most
        once per :data:`LOG_EVERY_S` and code (a client sending garbage must not flood logs)."""
        self.note_error(code, message)
        await self.send(ErrorMessage(code=code, message=message, field=field))

    def note_error(self, code: ErrorCode, message: str) -> None:
        """Count an error answered to the badge; log it (throttled)."""
        self.metrics.errors.labels(code.value).inc()
        now = time.monotonic()
        last = self._logged_at.get(code)
        if last is None or now - last >= LOG_EVERY_S:
            self._logged_at[code] = now
            logger.info("device {} error {}: {}", self.session.device_id, code.value, message)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.session.closing = True
        await self.ws.close(code, reason)
