"""The gateway process: wiring only. The device WebSocket port, the HTTP port, the connection
registry and the transcript router, all on one NATS connection."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
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
from .context import ConnectionContext
from .device_state import DeviceStateStore
from .http import BodyLimits, HttpContext, RateLimiter, build_app, guarded_http_protocol
from .metrics import GatewayMetrics
from .registry import Registry
from .transcripts import TranscriptRouter
from .ws_server import DeviceServer

__all__ = ["GatewayService", "is_loopback"]


HTTP_SHUTDOWN_S = 3  # open HTTP connections get this long to finish at shutdown


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the gateway process owns SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
        self.registry: Registry | None = None
        self.router: TranscriptRouter | None = None
        self.ws_server: Server | None = None
        self.http_server: _EmbeddedUvicorn | None = None
        self._http_done = asyncio.Event()
        server = settings.server
        self.rate_limiter = RateLimiter(server.api_rate_limit, server.api_rate_burst)
        self.ws_port = server.ws_port
        self.http_port = server.http_port

    @property
    def connections(self) -> dict[str, Any]:
        return self.registry.connections if self.registry is not None else {}

    def _settings(self) -> GatewaySettings:
        return self.settings

    async def on_start(self) -> None:
        server = self.settings.server
        self.registry = Registry(
            self.nc, self.redis, self.instance_id, self.metrics, self._settings, self.tasks
        )
        await self.registry.start()
        ctx = ConnectionContext(
            nc=self.nc,
            js=self.nc.jetstream(),
            gateway_id=self.instance_id,
            metrics=self.metrics,
            store=DeviceStateStore(self.redis),
            tasks=self.tasks,
            settings=self._settings,
            config_path=lambda: str(self.config_path) if self.config_path else None,
        )
        self.router = TranscriptRouter(self.nc, self._settings)
        await self.router.start()
        self.spawn(self.router.run(), "transcript-router", critical=True)
        devices = DeviceServer(ctx, self.registry)
        self.ws_server = await serve(
            devices.handle,
            server.ip,
            server.ws_port,
            process_request=devices.process_request,
            ping_interval=server.ping_interval_s,
            ping_timeout=server.ping_timeout_s if server.ping_interval_s else None,
            close_timeout=server.close_timeout_s,
            max_size=max(server.max_frame_bytes * 4, 1 << 20),
            server_header="supie",
            compression=None,  # badges never negotiate it; it costs CPU and ~100 KB per socket
        )
        self.ws_port = self.ws_server.sockets[0].getsockname()[1]
        http_ctx = HttpContext(
            settings=self._settings,
            nc=self.nc,
            redis=self.redis,
            metrics=self.metrics,
            limiter=self.rate_limiter,
            ws_port=lambda: self.ws_port,
            stopping=lambda: self.stopping,
        )
        app = BodyLimits(
            build_app(http_ctx),
            max_bytes=lambda: self.settings.server.http_max_body_bytes,
            read_timeout_s=lambda: self.settings.server.http_header_timeout_s,
        )
        config = uvicorn.Config(
            app,
            host=server.ip,
            port=server.http_port,
            log_config=None,
            access_log=False,
            lifespan="off",
            http=guarded_http_protocol(lambda: self.settings.server.http_header_timeout_s),
            timeout_keep_alive=int(max(1, server.http_keepalive_s)),
            h11_max_incomplete_event_size=16 * 1024,
            timeout_graceful_shutdown=HTTP_SHUTDOWN_S,
        )
        self.http_server = _EmbeddedUvicorn(config)
        http_task = self.spawn(self._serve_http(self.http_server), "http", critical=True)
        while not self.http_server.started:  # noqa: ASYNC110 - uvicorn exposes only a flag
            if http_task.done():
                raise RuntimeError(f"the HTTP port {server.ip}:{server.http_port} did not open")
            await asyncio.sleep(0.01)
        self.http_port = self.http_server.servers[0].sockets[0].getsockname()[1]
        logger.info(
            "gateway listening: ws://{}:{}/supie/v1/ http://{}:{}/",
            server.ip,
            self.ws_port,
            server.ip,
            self.http_port,
        )
        if server.api_token is None and not is_loopback(server.ip):
            logger.warning(
                "the HTTP API on {}:{} is open to anyone who can reach it: set server.api_token "
                "(or listen on 127.0.0.1)",
                server.ip,
                self.http_port,
            )
        if server.config_watch_interval_s > 0:
            self.spawn(self._watch_config_file(), "config-watch")

    async def _serve_http(self, server: _EmbeddedUvicorn) -> None:
        """A critical task: the HTTP port stopping by itself takes the process down."""
        try:
            await server.serve()
        finally:
            self._http_done.set()
        if not self.stopping:
            raise RuntimeError("the HTTP server stopped")
        await asyncio.Event().wait()  # stopping: wait to be cancelled, quietly

    async def on_stop(self) -> None:
        """SIGTERM: stop accepting, deliver what is queued for each device, then close every
        socket with 1001 (going away) so devices reconnect, to another replica if need be."""
        if self.ws_server is not None:
            self.ws_server.close(close_connections=False)
        if self.registry is not None:
            await self.registry.drain_and_close(self.settings.server.drain_timeout_s)
        if self.ws_server is not None:
            await self.ws_server.wait_closed()
        if self.router is not None:
            await self.router.stop()
        if self.http_server is not None:
            self.http_server.should_exit = True
            # Let uvicorn close its listening socket and its streams (console live views end
            # within a tick once stopping): cancelled mid-way, the port would stay bound.
            try:
                await asyncio.wait_for(self._http_done.wait(), HTTP_SHUTDOWN_S + 1)
            except TimeoutError:
                logger.warning("the HTTP server did not stop within {} s", HTTP_SHUTDOWN_S + 1)
        if self.registry is not None:
            await self.registry.stop()

    async def on_config(self, old: GatewaySettings, new: GatewaySettings, keys: list[str]) -> None:
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
                try:
                    first = self.redis is None or await once(self.redis, "config", digest, 60)
                except Exception as exc:  # Redis down: better twice than never
                    logger.warning("config change dedup failed: {}", exc)
                    first = True
                if first:
                    logger.info("config file {} changed: asking every service to reload", path)
                    event = ConfigUpdated(source="file", config_path=str(path))
                    await self.nc.publish(Subjects.CONFIG_UPDATED, encode(event))
            last = digest
            await asyncio.sleep(self.settings.server.config_watch_interval_s)

    def health_detail(self) -> dict[str, Any]:
        return {"connections": len(self.connections)}
