"""The gateway process: the device WebSocket server and the HTTP port, bridged to NATS."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from loguru import logger
from supie_common.service import Service
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

    def __init__(self, settings: GatewaySettings, config_path: Path | None = None,
                 instance_id: str | None = None) -> None:
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
        self.hub = Hub(self.settings, self.nc, self.redis, self.instance_id, self.metrics,
                       str(self.config_path) if self.config_path else None)
        await self.hub.start()
        self.ws_server = await serve(
            self.hub.handle, server.ip, server.ws_port,
            process_request=self.hub.process_request,
            ping_interval=server.ping_interval_s, ping_timeout=server.ping_timeout_s,
            close_timeout=server.close_timeout_s,
            max_size=max(server.max_frame_bytes * 4, 1 << 20),
            server_header="supie",
        )
        self.ws_port = self.ws_server.sockets[0].getsockname()[1]
        config = uvicorn.Config(build_app(self), host=server.ip, port=server.http_port,
                                log_config=None, access_log=False, lifespan="off")
        self.http_server = _EmbeddedUvicorn(config)
        self.spawn(self.http_server.serve(), "http")
        while not self.http_server.started:
            await asyncio.sleep(0.01)
        self.http_port = self.http_server.servers[0].sockets[0].getsockname()[1]
        logger.info("gateway listening: ws://{}:{}/supie/v1/ http://{}:{}/", server.ip,
                    self.ws_port, server.ip, self.http_port)

    async def on_stop(self) -> None:
        if self.ws_server is not None:
            self.ws_server.close(close_connections=True)
            await self.ws_server.wait_closed()
        if self.http_server is not None:
            self.http_server.should_exit = True
        if self.hub is not None:
            await self.hub.stop()

    def health_detail(self) -> dict[str, Any]:
        return {"connections": len(self.hub.connections) if self.hub else 0}
