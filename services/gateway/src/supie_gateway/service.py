"""The gateway process: the device WebSocket server and the HTTP port, bridged to NATS."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from loguru import logger
from supie_common.contracts import ConfigUpdated, Subjects, encode
from supie_common.service import Service
from supie_common.settings import config_path_from_env
from supie_common.store import once
from websockets.asyncio.server import Server, serve

from .config import GatewaySettings
from .http_app import RateLimiter, build_app
from .hub import Hub
from .metrics import GatewayMetrics

__all__ = ["GatewayService"]


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the gateway process owns SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class GatewayService(Service[GatewaySettings]):
    name = "gateway"

    def __init__(
        self,
        settings: GatewaySettings,
        config_path: Path | None = None,
        instance_id: str | None = None,
    ) -> None:
        super().__init__(settings, config_path=config_path, instance_id=instance_id)
        self.metrics = GatewayMetrics()
        self.hub: Hub | None = None
        self.ws_server: Server | None = None
        self.http_server: _EmbeddedUvicorn | None = None
        self.rate_limiter = RateLimiter(0, 1)
        self.ws_port = settings.server.ws_port
        self.http_port = settings.server.http_port

    async def on_start(self) -> None:
        server = self.settings.server
        self.hub = Hub(
            self.settings,
            self.nc,
            self.redis,
            self.instance_id,
            self.metrics,
            str(self.config_path) if self.config_path else None,
        )
        await self.hub.start()
        self.ws_server = await serve(
            self.hub.handle,
            server.ip,
            server.ws_port,
            process_request=self.hub.process_request,
            ping_interval=server.ping_interval_s,
            ping_timeout=server.ping_timeout_s,
            close_timeout=server.close_timeout_s,
            max_size=max(server.max_frame_bytes * 4, 1 << 20),
            server_header="supie",
            compression=None,  # badges never negotiate it; it costs CPU and ~100 KB per socket
        )
        self.ws_port = self.ws_server.sockets[0].getsockname()[1]
        config = uvicorn.Config(
            build_app(self),
            host=server.ip,
            port=server.http_port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
        self.http_server = _EmbeddedUvicorn(config)
        self.spawn(self.http_server.serve(), "http")
        while not self.http_server.started:  # noqa: ASYNC110 - uvicorn exposes only a flag
            await asyncio.sleep(0.01)
        self.http_port = self.http_server.servers[0].sockets[0].getsockname()[1]
        logger.info(
            "gateway listening: ws://{}:{}/supie/v1/ http://{}:{}/",
            server.ip,
            self.ws_port,
            server.ip,
            self.http_port,
        )
        if server.config_watch_interval_s > 0:
            self.spawn(self._watch_config_file(), "config-watch")

    async def on_stop(self) -> None:
        """SIGTERM: stop accepting, deliver what is queued for each device, then close every
        socket with 1001 (going away) so devices reconnect, to another replica if need be."""
        if self.ws_server is not None:
            self.ws_server.close(close_connections=False)
        if self.hub is not None:
            await self.hub.drain_and_close(self.settings.server.drain_timeout_s)
        if self.ws_server is not None:
            await self.ws_server.wait_closed()
        if self.http_server is not None:
            self.http_server.should_exit = True
        if self.hub is not None:
            await self.hub.stop()

    async def on_config(self, old: GatewaySettings, new: GatewaySettings, keys: list[str]) -> None:
        if self.hub is not None:
            self.hub.settings = new
        self.rate_limiter.rate = new.server.api_rate_limit
        self.rate_limiter.burst = max(1, new.server.api_rate_burst)

    async def _watch_config_file(self) -> None:
        """A changed config file reloads every service through one ``config.updated`` event
        (published once per content, whichever gateway replica sees it first)."""
        path = self.config_path or config_path_from_env()
        last: str | None = None
        while True:
            try:
                data = await asyncio.to_thread(path.read_bytes)
                digest = hashlib.sha256(data).hexdigest()
            except FileNotFoundError:
                digest = "missing"
            if last is not None and digest != last:
                first = self.redis is None or await once(self.redis, "config", digest, 60)
                if first:
                    logger.info("config file {} changed: asking every service to reload", path)
                    event = ConfigUpdated(source="file", config_path=str(path))
                    await self.nc.publish(Subjects.CONFIG_UPDATED, encode(event))
            last = digest
            await asyncio.sleep(self.settings.server.config_watch_interval_s)

    def health_detail(self) -> dict[str, Any]:
        return {"connections": len(self.hub.connections) if self.hub else 0}
