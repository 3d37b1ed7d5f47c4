"""The gateway's live device connections: takeover (also across replicas), presence heartbeats
in Redis, and the sweep that drives every connection's timers.

Works on anything shaped like :class:`Held` (the connection), so it never imports it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

from loguru import logger
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from redis.asyncio import Redis
from supie_common.bus import parse
from supie_common.contracts import (
    DeviceConnected,
    DeviceDisconnected,
    Subjects,
    Takeover,
    encode,
)
from supie_common.store import Presence
from supie_common.tasks import TaskSet

from .config import GatewaySettings
from .metrics import GatewayMetrics
from .session import DeviceSession

__all__ = ["Held", "Registry"]

_PRESENCE_DEADLINE_S = 2.0


class Held(Protocol):
    session: DeviceSession

    async def displace(self, delay_s: float) -> None: ...

    def tick(self, now: float) -> None: ...

    async def drain(self) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class Registry:
    def __init__(
        self,
        nc: NATS,
        redis: Redis | None,
        gateway_id: str,
        metrics: GatewayMetrics,
        settings: Callable[[], GatewaySettings],
        tasks: TaskSet,
    ) -> None:
        self.nc = nc
        self.gateway_id = gateway_id
        self.metrics = metrics
        self.settings = settings
        self.tasks = tasks
        self.connections: dict[str, Held] = {}
        self.presence = Presence(redis, settings().server.presence_ttl_s) if redis else None
        self._sub: Any = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(Subjects.DEVICE_TAKEOVER_ALL, cb=self._on_takeover)
        self.tasks.spawn(self._heartbeat_loop(), "presence-heartbeat", critical=True)
        self.tasks.spawn(self._sweep_loop(), "idle-sweep", critical=True)

    async def stop(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception as exc:
                logger.debug("takeover unsubscribe: {}", exc)

    async def drain_and_close(self, timeout_s: float) -> None:
        """Deliver what NATS still holds for each device, close ASR streams, then close every
        socket with 1001 (going away) so that devices reconnect, to another replica if need be."""
        conns = list(self.connections.values())
        if not conns:
            return
        try:
            await asyncio.wait_for(
                asyncio.gather(*(c.drain() for c in conns), return_exceptions=True), timeout_s
            )
        except TimeoutError:
            logger.warning("drain took longer than {} s; closing anyway", timeout_s)
        await asyncio.gather(
            *(c.close(1001, "server shutting down") for c in conns), return_exceptions=True
        )
        logger.info("closed {} device connections (1001) for shutdown", len(conns))

    # -- register ------------------------------------------------------------------------------
    async def register(self, conn: Held) -> None:
        s = conn.session
        old = self.connections.get(s.device_id)
        self.connections[s.device_id] = conn
        if old is not None and old is not conn:
            await old.displace(self.settings().server.takeover_close_delay_s)
        self.metrics.connections.set(len(self.connections))
        self.metrics.connections_total.inc()
        logger.info(
            "device {} connected session={} protocol=v{} gateway={}",
            s.device_id,
            s.session_id,
            s.protocol_version,
            self.gateway_id,
        )
        takeover = Takeover(
            device_id=s.device_id, gateway_id=self.gateway_id, session_id=s.session_id
        )
        await self.nc.publish(Subjects.device_takeover(s.device_id), encode(takeover))
        if self.presence is not None:
            try:
                await asyncio.wait_for(
                    self.presence.register(s.device_id, self.gateway_id, s.session_id, s.group_key),
                    _PRESENCE_DEADLINE_S,
                )
            except Exception as exc:  # Redis down: the heartbeat catches up
                logger.warning("presence of {} not registered: {}", s.device_id, exc)
        connected = DeviceConnected(
            **s.envelope(),
            client_id=s.client_id,
            protocol_version=s.protocol_version,
            group_key=s.group_key,
        )
        await self.nc.publish(Subjects.DEVICE_CONNECTED, encode(connected))

    async def unregister(self, conn: Held, reason: str) -> None:
        s = conn.session
        if self.connections.get(s.device_id) is conn:
            del self.connections[s.device_id]
            if self.presence is not None:
                try:
                    await asyncio.wait_for(
                        self.presence.unregister(s.device_id, s.session_id, s.group_key),
                        _PRESENCE_DEADLINE_S,
                    )
                except Exception as exc:
                    logger.warning("presence unregister failed: {}", exc)
        self.metrics.connections.set(len(self.connections))
        if self.nc.is_connected:
            gone = DeviceDisconnected(
                **s.envelope(), reason=reason, mode=s.mode, group_key=s.group_key
            )
            try:
                await self.nc.publish(Subjects.DEVICE_DISCONNECTED, encode(gone))
            except Exception as exc:
                logger.debug("disconnect not published: {}", exc)

    async def _on_takeover(self, msg: Msg) -> None:
        event = parse(Takeover, msg)
        if event is None or event.gateway_id == self.gateway_id:
            return  # ours are handled in register()
        local = self.connections.get(event.device_id)
        if local is None or local.session.session_id == event.session_id:
            return
        del self.connections[event.device_id]
        self.metrics.connections.set(len(self.connections))
        logger.info("device {} taken over by gateway {}", event.device_id, event.gateway_id)
        await local.displace(self.settings().server.takeover_close_delay_s)

    # -- loops ---------------------------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        if self.presence is None:
            await asyncio.Event().wait()  # nothing to renew; stay alive (a critical task)
        assert self.presence is not None
        while True:
            interval = max(1.0, self.settings().server.presence_ttl_s / 3)
            await asyncio.sleep(interval)
            entries = [
                (c.session.device_id, self.gateway_id, c.session.session_id, c.session.group_key)
                for c in self.connections.values()
            ]
            try:
                for i in range(0, len(entries), 500):
                    await asyncio.wait_for(
                        self.presence.heartbeat_many(entries[i : i + 500]), interval
                    )
            except Exception as exc:
                logger.warning("presence heartbeat failed: {}", exc)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings().server.idle_check_interval_s)
            now = time.monotonic()
            for conn in list(self.connections.values()):
                try:
                    conn.tick(now)
                except Exception:
                    logger.exception("idle sweep of {} failed", conn.session.device_id)
