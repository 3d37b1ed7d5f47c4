"""The skeleton every service process shares: settings loaded once, logging configured once,
NATS + Redis connections, a health endpoint, live config reload, SIGTERM drain.

A service subclasses :class:`Service`, implements :meth:`Service.on_start` (subscribe, start
tasks via :meth:`Service.spawn`) and optionally :meth:`Service.on_stop` /
:meth:`Service.on_config`, and runs with :func:`run_service`.

Fail loudly, recover by restart: a service whose NATS connection is closed for good, or whose
NATS or Redis has been unreachable for longer than ``nats.max_outage_s`` / ``redis.max_outage_s``,
or whose critical loop died, stops and exits 1, so its supervisor (``supie up``, docker,
systemd) restarts it, instead of living on broken. Shorter outages are ridden out.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from loguru import logger
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from redis.asyncio import Redis

from .bus import connect_nats, parse
from .contracts import ConfigUpdated, HealthPong, Queues, Subjects, encode, new_id
from .logs import setup_logging
from .settings import ConfigError, SupieSettings, load_settings
from .store import connect_redis
from .tasks import TaskSet

__all__ = ["Service", "run_service", "changed_keys"]

S = TypeVar("S", bound=SupieSettings)


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two settings objects (values never logged)."""
    a = old.model_dump() if hasattr(old, "model_dump") else old
    b = new.model_dump() if hasattr(new, "model_dump") else new
    if isinstance(a, dict) and isinstance(b, dict):
        keys: list[str] = []
        for k in sorted(set(a) | set(b)):
            keys += changed_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return keys
    return [prefix.rstrip(".")] if a != b else []


class Service(Generic[S]):
    """Base class of a Supie service process."""

    name = "service"

    def __init__(
        self, settings: S, *, config_path: str | Path | None = None, instance_id: str | None = None
    ) -> None:
        self.settings = settings
        self.config_path = Path(config_path) if config_path else None
        self.instance_id = (
            instance_id or f"{self.name}-{socket.gethostname()}-{os.getpid()}-{new_id()[:6]}"
        )
        self.nc: NATS = NATS()
        self.redis: Redis | None = None
        self.tasks = TaskSet(self.name, on_fatal=self.fail)
        self._stopping = asyncio.Event()
        self.fatal = asyncio.Event()
        self.fatal_reason: str | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        nats_url = self.settings.nats.url or "nats://127.0.0.1:4222"
        self.nc = await connect_nats(
            nats_url,
            self.instance_id,
            connect_timeout_s=self.settings.nats.connect_timeout_s,
            on_closed=lambda: self.fail("the NATS connection was closed for good"),
            on_reconnected=self._bus_reconnected,
        )
        if self.settings.redis.url:
            self.redis = connect_redis(self.settings.redis.url)
        await self.nc.subscribe(Subjects.CONFIG_UPDATED, cb=self._config_updated)
        self.tasks.spawn(self._watch_connections(), "connection-watch", critical=True)
        await self.on_start()
        # Healthy only once the service actually takes work.
        await self.nc.subscribe(Subjects.health(self.name), queue=Queues.HEALTH, cb=self._health)
        # "started" means taking work: every subscription has reached the server (nats-py only
        # buffers a SUB), so a request sent right after from another connection finds us.
        await self.nc.flush()
        logger.info("{} started as {}", self.name, self.instance_id)

    async def stop(self) -> None:
        """Drain: stop taking work, finish what is in flight, close connections."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        try:
            await self.on_stop()
        except Exception:
            logger.exception("{} on_stop failed", self.name)
        await self.tasks.cancel_all()
        if self.nc.is_connected:
            try:
                await asyncio.wait_for(self.nc.drain(), 5)
            except Exception as exc:
                logger.debug("nats drain: {}", exc)
        if self.redis is not None:
            await self.redis.aclose()
        logger.info("{} stopped", self.name)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def spawn(
        self,
        coro: Coroutine[Any, Any, Any],
        name: str | None = None,
        *,
        critical: bool = False,
    ) -> asyncio.Task[Any]:
        """Start a task owned until done and cancelled on shutdown. ``critical``: a loop the
        service cannot work without; if it ends, the process exits 1 (and is restarted)."""
        return self.tasks.spawn(
            coro, name or str(getattr(coro, "__qualname__", "task")), critical=critical
        )

    def fail(self, reason: str) -> None:
        """Something the service cannot recover from in-process: stop and exit 1."""
        if self.fatal.is_set() or self.stopping:
            return
        self.fatal_reason = reason
        logger.error("{} cannot go on: {}; exiting so that it is restarted", self.name, reason)
        self.fatal.set()

    async def _watch_connections(self) -> None:
        """Exit (via :meth:`fail`) when NATS or Redis stays unreachable past its outage budget."""
        nats_down_since: float | None = None
        redis_down_since: float | None = None
        while True:
            await asyncio.sleep(1.0)
            if self.stopping:
                # A cancellation swallowed on the way (asyncio.wait_for on Python 3.11 can, when
                # the ping completes at the same moment; a client may turn it into an error)
                # must still end this loop, or stop() waits for it forever.
                raise asyncio.CancelledError
            now = time.monotonic()
            if self.nc.is_connected:
                nats_down_since = None
            else:
                nats_down_since = nats_down_since or now
                if now - nats_down_since > self.settings.nats.max_outage_s:
                    self.fail(f"NATS unreachable for {now - nats_down_since:.0f} s")
                    return
            if self.redis is None:
                continue
            try:
                await asyncio.wait_for(self.redis.ping(), 2.0)
                redis_down_since = None
            except Exception:
                redis_down_since = redis_down_since or now
                if now - redis_down_since > self.settings.redis.max_outage_s:
                    self.fail(f"Redis unreachable for {now - redis_down_since:.0f} s")
                    return

    # -- hooks ---------------------------------------------------------------------------------
    async def on_start(self) -> None:
        """Subscribe and start background work."""

    async def on_stop(self) -> None:
        """Stop taking work (unsubscribe), flush what is in flight."""

    async def on_config(self, old: S, new: S, keys: list[str]) -> None:
        """Apply a validated new configuration (``self.settings`` is already ``new``)."""

    def on_bus_reconnected(self) -> None:
        """NATS came back: messages published to our subscriptions meanwhile are gone. Must not
        block (it runs in the client's reconnect path): spawn the recovery."""

    def health_detail(self) -> dict[str, Any]:
        return {}

    async def _bus_reconnected(self) -> None:
        if not self.stopping:
            self.on_bus_reconnected()

    # -- health and config ---------------------------------------------------------------------
    async def _health(self, msg: Msg) -> None:
        detail = self.health_detail()
        ok = True
        if self.redis is not None:
            try:
                await asyncio.wait_for(self.redis.ping(), 1.0)
            except Exception as exc:
                ok = False
                detail["redis"] = f"down: {type(exc).__name__}"
        pong = HealthPong(service=self.name, instance=self.instance_id, ok=ok, detail=detail)
        await msg.respond(encode(pong))

    async def _config_updated(self, msg: Msg) -> None:
        event = parse(ConfigUpdated, msg)
        if event is None:
            return
        path = event.config_path or self.config_path
        try:
            new = load_settings(type(self.settings), path)
        except ConfigError as exc:
            logger.error("config reload rejected, keeping the previous config: {}", exc)
            return
        old = self.settings
        keys = changed_keys(old, new)
        self.settings = new
        logger.info("config reloaded (source={}): changed keys {}", event.source, keys or "none")
        try:
            await self.on_config(old, new, keys)
        except Exception:
            logger.exception("{} failed to apply the new config", self.name)


def run_service(
    factory: Callable[[S, Path | None], Service[S]],
    settings_cls: type[S],
    name: str,
    config_path: str | Path | None = None,
    argv: Sequence[str] | None = None,
) -> None:
    """Entry point: load settings once, configure logging once, run until SIGTERM/SIGINT.

    Command line: ``[--check-config] [CONFIG_PATH]``. ``--check-config`` validates the
    configuration and exits 0, or prints what is wrong (never a secret) and exits 2. Exits 1
    when the service stopped because it could not go on (see :meth:`Service.fail`).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    check_only = "--check-config" in args
    args = [a for a in args if a != "--check-config"]
    if config_path is None and args:
        config_path = args[0]
    path = Path(config_path) if config_path else None
    try:
        settings = load_settings(settings_cls, path)
    except ConfigError as exc:
        print(f"{name}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    if check_only:
        print(f"{name}: configuration ok", flush=True)
        return
    setup_logging(settings.log, name)
    # With the default thresholds (700, 10, 10) a process holding thousands of live objects
    # (2,000 sockets) runs full collections every few seconds, each stalling the event loop for
    # ~300 ms (measured with bench/gateway_load.py: p99 270 ms -> 42 ms with these).
    gc.set_threshold(50_000, 50, 1000)

    async def main() -> int:
        service = factory(settings, path)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await service.start()
        except Exception as exc:
            logger.opt(exception=exc).error("{} failed to start: {}", name, exc)
            await service.stop()
            return 1
        gc.collect()
        gc.freeze()  # start-up objects live as long as the process: out of every collection
        stopped = asyncio.create_task(stop.wait())
        fatal = asyncio.create_task(service.fatal.wait())
        await asyncio.wait({stopped, fatal}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        fatal.cancel()
        if service.fatal.is_set():
            await service.stop()
            return 1
        logger.info("{} got a stop signal, draining", name)
        await service.stop()
        return 0

    try:
        import uvloop
    except ImportError:  # pragma: no cover - optional speed-up
        code = asyncio.run(main())
    else:
        code = uvloop.run(main())
    if code:
        raise SystemExit(code)
