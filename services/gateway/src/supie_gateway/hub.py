"""The gateway's registry of live device connections: handshake, takeover (also across gateway
replicas), presence heartbeats in Redis and the per-device state that survives reconnects."""

from __future__ import annotations

import asyncio
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from loguru import logger
from nats.aio.client import Client as NATS
from redis.asyncio import Redis
from supie_common.bus import parse
from supie_common.contracts import (
    DeviceConnected,
    DeviceDisconnected,
    Subjects,
    Takeover,
    encode,
    new_id,
)
from supie_common.protocol import SUPPORTED_VERSIONS, normalize_device_id
from supie_common.store import K, Presence, group_of
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from .auth import check_device_auth
from .connection import DeviceConnection
from .metrics import GatewayMetrics

if TYPE_CHECKING:
    from .config import GatewaySettings

__all__ = ["Hub", "HandshakeInfo"]

TAKEOVER_MESSAGE = "检测到新连接，当前通道将于约1.5秒后关闭以切换到新通道"
DEVICE_STATE_TTL_S = 24 * 3600
IDLE_WARNING_TEXT = "即将结束对话，如需继续请说话或发送任意消息…"
IDLE_CLOSE_MESSAGE = "长时间未说话，本次对话已结束。"
TIMEOUT_WARNING_TEXT = "连接将因长时间空闲而关闭，如需继续请发送任意消息。"


class HandshakeInfo:
    """What the handshake told us about the device (headers first, query string second)."""

    def __init__(
        self,
        device_id: str,
        client_id: str | None,
        authorization: str | None,
        protocol_version: int,
    ) -> None:
        self.device_id = device_id
        self.client_id = client_id
        self.authorization = authorization
        self.protocol_version = protocol_version

    @classmethod
    def parse(cls, path: str, headers: Headers) -> HandshakeInfo:
        query = {k.lower(): v[0] for k, v in parse_qs(urlsplit(path).query).items() if v}
        device = headers.get("Device-Id") or query.get("device-id") or query.get("device_id")
        client = headers.get("Client-Id") or query.get("client-id") or query.get("client_id")
        auth = headers.get("Authorization") or query.get("authorization") or query.get("token")
        try:
            version = int(headers.get("Protocol-Version", "1"))
        except ValueError:
            version = 0
        device_id = normalize_device_id(device) or f"auto-{new_id()[:8]}"
        return cls(device_id, normalize_device_id(client) or None, auth, version)


class Hub:
    def __init__(
        self,
        settings: GatewaySettings,
        nc: NATS,
        redis: Redis | None,
        gateway_id: str,
        metrics: GatewayMetrics,
        config_path: str | None,
    ) -> None:
        self.settings = settings
        self.nc = nc
        self.redis = redis
        self.gateway_id = gateway_id
        self.metrics = metrics
        self.config_path_str = config_path
        self.connections: dict[str, DeviceConnection] = {}
        self.presence = Presence(redis, settings.server.presence_ttl_s) if redis else None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sub: Any = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(Subjects.DEVICE_TAKEOVER_ALL, cb=self._on_takeover)
        self._spawn(self._heartbeat_loop(), "presence-heartbeat")
        self._spawn(self._idle_sweep_loop(), "idle-sweep")

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def drain_and_close(self, timeout_s: float) -> None:
        """Deliver what NATS still holds for each device, close ASR streams, then close every
        socket with 1001 and wait for the handlers to finish."""
        conns = list(self.connections.values())
        if not conns:
            return
        await asyncio.wait_for(
            asyncio.gather(*(c.drain() for c in conns), return_exceptions=True), timeout_s
        )
        await asyncio.gather(
            *(c.ws.close(1001, "server shutting down") for c in conns), return_exceptions=True
        )
        logger.info("closed {} device connections (1001) for shutdown", len(conns))

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- handshake -----------------------------------------------------------------------------
    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Plain HTTP gets 'Server is running'; unsupported versions and bad auth are refused."""
        if "upgrade" not in request.headers.get("Connection", "").lower():
            return connection.respond(HTTPStatus.OK, "Server is running\n")
        info = HandshakeInfo.parse(request.path, request.headers)
        if info.protocol_version not in SUPPORTED_VERSIONS:
            return connection.respond(
                HTTPStatus.BAD_REQUEST, "Protocol-Version must be 1, 2 or 3\n"
            )
        refusal = check_device_auth(
            self.settings.server.auth, info.device_id, info.client_id or "", info.authorization
        )
        if refusal is not None:
            logger.warning("device {} refused: {}", info.device_id, refusal)
            return connection.respond(HTTPStatus.UNAUTHORIZED, f"unauthorized: {refusal}\n")
        return None

    async def handle(self, ws: ServerConnection) -> None:
        """websockets connection handler: one call per device socket."""
        assert ws.request is not None
        info = HandshakeInfo.parse(ws.request.path, ws.request.headers)
        conn = DeviceConnection(
            self,
            ws,
            device_id=info.device_id,
            client_id=info.client_id,
            protocol_version=info.protocol_version,
            group_key=group_of(info.device_id),
        )
        reason = "closed"
        try:
            await conn.start()  # subscribed first: nothing published for the device is lost
            await self._register(conn)
            await conn.run()
        except Exception as exc:
            reason = f"error: {type(exc).__name__}"
            if not isinstance(exc, asyncio.CancelledError):
                logger.opt(exception=exc).error("device {} handler failed", conn.device_id)
            await ws.close(1011, "internal error")
        finally:
            if ws.close_code is not None and reason == "closed":
                reason = f"closed code={ws.close_code}"
            await self._unregister(conn, reason)

    async def _register(self, conn: DeviceConnection) -> None:
        old = self.connections.get(conn.device_id)
        self.connections[conn.device_id] = conn
        if old is not None:
            await self._displace(old)
        self.metrics.connections.set(len(self.connections))
        self.metrics.connections_total.inc()
        logger.info(
            "device {} connected session={} protocol=v{} gateway={}",
            conn.device_id,
            conn.session_id,
            conn.protocol_version,
            self.gateway_id,
        )
        takeover = Takeover(
            device_id=conn.device_id, gateway_id=self.gateway_id, session_id=conn.session_id
        )
        await self.nc.publish(Subjects.device_takeover(conn.device_id), encode(takeover))
        if self.presence is not None:
            await self.presence.register(
                conn.device_id, self.gateway_id, conn.session_id, conn.group_key
            )
        await self.nc.publish(
            Subjects.DEVICE_CONNECTED,
            encode(
                DeviceConnected(
                    **conn.envelope,
                    client_id=conn.client_id,
                    protocol_version=conn.protocol_version,
                    group_key=conn.group_key,
                )
            ),
        )

    async def _unregister(self, conn: DeviceConnection, reason: str) -> None:
        await conn.cleanup(reason)
        if self.connections.get(conn.device_id) is conn:
            del self.connections[conn.device_id]
            if self.presence is not None:
                try:
                    await self.presence.unregister(conn.device_id, conn.session_id, conn.group_key)
                except Exception as exc:
                    logger.warning("presence unregister failed: {}", exc)
        self.metrics.connections.set(len(self.connections))
        if self.nc.is_connected:
            await self.nc.publish(
                Subjects.DEVICE_DISCONNECTED,
                encode(DeviceDisconnected(**conn.envelope, reason=reason, mode=conn.mode)),
            )
        logger.info(
            "device {} disconnected session={} ({})", conn.device_id, conn.session_id, reason
        )

    async def _displace(self, old: DeviceConnection) -> None:
        """The old connection is told, then closed about 1.5 s later; the new one wins."""
        if old.closing:
            return
        await old.send_json({"type": "system", "message": TAKEOVER_MESSAGE})
        old.spawn(
            old.close_later(
                self.settings.server.takeover_close_delay_s, 1000, "replaced by a new connection"
            ),
            "takeover-close",
        )

    async def _on_takeover(self, msg: Any) -> None:
        event = parse(Takeover, msg)
        if event is None:
            return
        local = self.connections.get(event.device_id)
        if local is None or local.session_id == event.session_id:
            return
        if event.gateway_id == self.gateway_id:
            return  # handled locally in _register
        del self.connections[event.device_id]
        self.metrics.connections.set(len(self.connections))
        logger.info("device {} taken over by gateway {}", event.device_id, event.gateway_id)
        await self._displace(local)

    # -- presence and state --------------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        if self.presence is None:
            return
        interval = max(1.0, self.settings.server.presence_ttl_s / 3)
        while True:
            await asyncio.sleep(interval)
            entries = [
                (c.device_id, self.gateway_id, c.session_id, c.group_key)
                for c in self.connections.values()
            ]
            try:
                for i in range(0, len(entries), 500):
                    await self.presence.heartbeat_many(entries[i : i + 500])
            except Exception as exc:
                logger.warning("presence heartbeat failed: {}", exc)

    # -- idle close (SPEC §3): two layers, mode-aware -------------------------------------------
    async def check_no_voice(self, conn: DeviceConnection) -> None:
        """Layer 1, checked on each audio frame: the device streams but nobody has spoken (and
        nothing was sent) for the threshold. Warn ``grace`` before, then close."""
        server = self.settings.server
        threshold = server.no_voice_threshold_s(conn.mode)
        silent = time.monotonic() - conn.last_voice
        if conn.closing:
            return
        if silent >= threshold:
            logger.info(
                "device {} closed: no voice for {:.0f} s (mode={})",
                conn.device_id,
                silent,
                conn.mode,
            )
            await conn.send_json(
                {"type": "system", "event": "idle_close", "message": IDLE_CLOSE_MESSAGE}
            )
            conn.spawn(conn.close_later(0.0, 1000, "no voice"), "idle-close")
        elif silent >= threshold - server.idle_grace_s(threshold) and not conn.idle_warned:
            conn.idle_warned = True
            await conn.send_json(
                {"type": "stt", "text": IDLE_WARNING_TEXT, "session_id": conn.session_id}
            )

    async def _idle_sweep_loop(self) -> None:
        """Layer 2: nothing at all from the device for threshold + 60 s: a timeout_warning, then
        close after 10 s unless something arrives."""
        while True:
            server = self.settings.server
            await asyncio.sleep(server.idle_check_interval_s)
            now = time.monotonic()
            for conn in list(self.connections.values()):
                if conn.closing:
                    continue
                limit = server.no_voice_threshold_s(conn.mode) + server.hard_close_extra_s
                if conn.hard_warned_at is None:
                    if now - conn.last_inbound >= limit:
                        conn.hard_warned_at = now
                        # Spawned: one slow socket must not hold up the sweep of the others.
                        warning = {
                            "type": "system",
                            "event": "timeout_warning",
                            "message": TIMEOUT_WARNING_TEXT,
                        }
                        conn.spawn(conn.send_json(warning), "timeout-warning")
                elif now - conn.hard_warned_at >= server.hard_close_wait_s:
                    logger.info(
                        "device {} closed: idle for {:.0f} s",
                        conn.device_id,
                        now - conn.last_inbound,
                    )
                    conn.spawn(conn.close_later(0.0, 1000, "idle timeout"), "idle-close")

    async def save_device_state(self, conn: DeviceConnection) -> None:
        if self.redis is None:
            return
        key = K.device_state(conn.device_id)
        mapping: dict[Any, Any] = {
            "mode": conn.mode or "",
            "meeting_id": conn.meeting_id or "",
            "finalized": "1" if conn.meeting_finalized else "0",
        }
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping=mapping)
        pipe.expire(key, DEVICE_STATE_TTL_S)
        await pipe.execute()

    async def load_device_state(self, device_id: str) -> dict[str, str]:
        if self.redis is None:
            return {}
        raw = await self.redis.hgetall(K.device_state(device_id))
        return {str(k): str(v) for k, v in raw.items()}
