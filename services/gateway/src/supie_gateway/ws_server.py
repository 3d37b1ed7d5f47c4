"""The device WebSocket port: the handshake checks, then one :class:`DeviceConnection` per socket,
registered for its lifetime.

An ordinary disconnect (a Wi-Fi drop: no close frame) is news, not an error: one INFO line, no
traceback. Only a failure of our own code is logged as an ERROR (and closes with 1011).
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus

from loguru import logger
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from .auth import check_device_auth
from .connection import DeviceConnection
from .context import ConnectionContext
from .handshake import HandshakeRefused, parse_handshake
from .registry import Registry

__all__ = ["DeviceServer"]


class DeviceServer:
    def __init__(self, ctx: ConnectionContext, registry: Registry) -> None:
        self.ctx = ctx
        self.registry = registry

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Plain HTTP gets 'Server is running'; bad versions, ids and auth are refused."""
        if "upgrade" not in request.headers.get("Connection", "").lower():
            return connection.respond(HTTPStatus.OK, "Server is running\n")
        server = self.ctx.settings().server
        try:
            info = parse_handshake(
                request.path, request.headers, max_id_len=server.max_device_id_len
            )
        except HandshakeRefused as exc:
            logger.info("handshake refused ({}): {}", exc.status.value, exc.reason)
            return connection.respond(exc.status, f"{exc.reason}\n")
        refusal = check_device_auth(
            server.auth, info.device_id, info.client_id or "", info.authorization
        )
        if refusal is not None:
            logger.warning("device {} refused: {}", info.device_id, refusal)
            return connection.respond(HTTPStatus.UNAUTHORIZED, f"unauthorized: {refusal}\n")
        return None

    async def handle(self, ws: ServerConnection) -> None:
        """websockets connection handler: one call per device socket."""
        assert ws.request is not None
        server = self.ctx.settings().server
        try:
            info = parse_handshake(
                ws.request.path, ws.request.headers, max_id_len=server.max_device_id_len
            )
        except HandshakeRefused as exc:  # settings changed between the two calls
            await ws.close(1008, exc.reason[:100])
            return
        conn = DeviceConnection(self.ctx, ws, info)
        reason = "closed"
        try:
            await conn.start()  # subscribed first: nothing published for the device is lost
            await self.registry.register(conn)
            await conn.run()
        except ConnectionClosed as exc:
            reason = f"connection lost (code {exc.rcvd.code if exc.rcvd else 1006})"
        except asyncio.CancelledError:
            reason = "cancelled"
            raise
        except Exception as exc:
            reason = f"error: {type(exc).__name__}"
            logger.opt(exception=exc).error("device {} handler failed", conn.device_id)
            await ws.close(1011, "internal error")
        finally:
            if reason == "closed" and ws.close_code is not None:
                reason = f"closed code={ws.close_code}"
            try:
                await conn.cleanup()
            finally:
                await self.registry.unregister(conn, reason)
                logger.info(
                    "device {} disconnected session={} ({})",
                    conn.device_id,
                    conn.session.session_id,
                    reason,
                )
