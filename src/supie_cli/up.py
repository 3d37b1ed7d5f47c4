"""``supie up``: the embedded default, as a supervisor.

Before anything starts it refuses a busy port (device WebSocket, HTTP, the embedded NATS and
Valkey) or a data folder another stack holds, naming which and the holder's pid, and validates
the configuration of every service. Then it runs nats-server and valkey-server from their wheels
(unless ``SUPIE_NATS__URL`` / ``SUPIE_REDIS__URL`` name external ones) and every service as its
own process, each restarted when it dies and reported when it crash-loops. It prints
``Supie is ready: ...`` once, judged only on its own children. SIGINT, SIGTERM and SIGHUP stop
everything in order; if ``supie up`` itself is killed, the kernel stops its children."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import signal
import sys
import time
from pathlib import Path

import httpx
from supie_common.embedded import EmbeddedNats, EmbeddedValkey, free_port
from supie_common.settings import ConfigError, ServerSection, SupieSettings, load_settings

from .config_check import check_configs
from .preflight import DataDirBusy, DataDirLock, PortClaim, busy_ports, listener_pid
from .supervisor import Child, Console, ServerChild, ServiceChild

__all__ = ["run_up", "UpSettings"]

_LOOPBACK = "127.0.0.1"


class UpSettings(SupieSettings):
    server: ServerSection = ServerSection()


def _err(text: str) -> None:
    print(f"supie up: {text}", file=sys.stderr, flush=True)


async def _wait_all(children: list[Child], stop: asyncio.Event, timeout_s: float) -> bool:
    """True once every child has been ready at least once; False on stop or timeout."""

    async def all_ready() -> None:
        for child in children:
            await child.ever_ready.wait()

    ready = asyncio.create_task(all_ready())
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({ready, stopped}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        return ready.done() and not stopped.done()
    finally:
        ready.cancel()
        stopped.cancel()


async def _own_healthz(
    http_url: str, gateway: Child, stop: asyncio.Event, timeout_s: float
) -> bool:
    """The gateway's ``/healthz`` is ok, asked on a port that *our* gateway listens on."""
    port = int(http_url.rsplit(":", 1)[1])
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=3.0) as client:
        while time.monotonic() < deadline and not stop.is_set():
            pid = gateway.pid
            if pid is not None and await asyncio.to_thread(listener_pid, port) == pid:
                try:
                    if (await client.get(f"{http_url}/healthz")).status_code == 200:
                        return True
                except httpx.HTTPError:
                    pass
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass
    return False


def _pending(children: list[Child]) -> str:
    return ", ".join(c.name for c in children if not c.ever_ready.is_set()) or "none"


async def _up(args: argparse.Namespace, settings: UpSettings, config: Path, data_dir: Path) -> int:
    services = [s for s in args.services.split(",") if s]
    missing = [s for s in services if importlib.util.find_spec(f"supie_{s}") is None]
    if missing:
        _err(f"unknown services {missing}")
        return 2

    lock = DataDirLock(data_dir)
    try:
        await asyncio.to_thread(lock.acquire)
    except DataDirBusy as exc:
        _err(str(exc))
        return 1
    try:
        return await _run_locked(args, settings, config, data_dir, services)
    finally:
        lock.release()


async def _run_locked(
    args: argparse.Namespace,
    settings: UpSettings,
    config: Path,
    data_dir: Path,
    services: list[str],
) -> int:
    ws_port = args.ws_port if args.ws_port is not None else settings.server.ws_port
    http_port = args.http_port if args.http_port is not None else settings.server.http_port
    ws_port = ws_port or free_port()
    http_port = http_port or free_port()
    nats_url, redis_url = settings.nats.url, settings.redis.url
    nats_port = (args.nats_port or free_port()) if not nats_url else 0
    valkey_port = (args.valkey_port or free_port()) if not redis_url else 0

    claims = []
    if "gateway" in services:
        claims += [
            PortClaim("ws", settings.server.ip, ws_port),
            PortClaim("http", settings.server.ip, http_port),
        ]
    if nats_port:
        claims.append(PortClaim("embedded nats-server", _LOOPBACK, nats_port))
    if valkey_port:
        claims.append(PortClaim("embedded valkey-server", _LOOPBACK, valkey_port))
    problems = await asyncio.to_thread(busy_ports, claims)
    if problems:
        for problem in problems:
            _err(problem)
        return 1

    bad = await check_configs(services, config, os.environ)
    if bad:
        for problem in bad:
            _err(problem)
        return 2

    console = Console(sys.stdout)
    servers: list[Child] = []
    if nats_port:
        nats = EmbeddedNats(data_dir / "nats", port=nats_port)
        servers.append(
            ServerChild("nats-server", nats.command(), nats_port, nats.log_path, console)
        )
        nats_url = nats.url
    if valkey_port:
        valkey = EmbeddedValkey(data_dir / "valkey", port=valkey_port)
        servers.append(
            ServerChild("valkey-server", valkey.command(), valkey_port, valkey.log_path, console)
        )
        redis_url = valkey.url
    assert nats_url is not None and redis_url is not None

    env = dict(os.environ)
    env.update(
        {
            "SUPIE_NATS__URL": nats_url,
            "SUPIE_REDIS__URL": redis_url,
            "SUPIE_DATA_DIR": str(data_dir),
            "SUPIE_CONFIG": str(config),
            "SUPIE_SERVER__WS_PORT": str(ws_port),
            "SUPIE_SERVER__HTTP_PORT": str(http_port),
            "SUPIE_SERVICES": "[" + ",".join(f'"{s}"' for s in services) + "]",
            "PYTHONUNBUFFERED": "1",
        }
    )
    children: list[Child] = [ServiceChild(name, sys.executable, env, console) for name in services]

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)

    tasks: list[asyncio.Task[None]] = []
    code = 0
    try:
        tasks += [asyncio.create_task(s.run(), name=f"supervise-{s.name}") for s in servers]
        if not await _wait_all(servers, stop, 30.0):
            if not stop.is_set():
                _err(f"embedded servers did not start: {_pending(servers)}; see {data_dir}")
                code = 1
        else:
            tasks += [asyncio.create_task(c.run(), name=f"supervise-{c.name}") for c in children]
            code = await _until_ready_then_stop(
                args, children, stop, ws_port, http_port, nats_url, redis_url, data_dir, console
            )
    finally:
        console.say("stopping")
        await asyncio.gather(*(c.stop() for c in children))
        await asyncio.gather(*(s.stop() for s in reversed(servers)))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        console.say("stopped")
        console.drain()
    return code


async def _until_ready_then_stop(
    args: argparse.Namespace,
    children: list[Child],
    stop: asyncio.Event,
    ws_port: int,
    http_port: int,
    nats_url: str,
    redis_url: str,
    data_dir: Path,
    console: Console,
) -> int:
    started = time.monotonic()
    timeout = float(args.ready_timeout)
    if not await _wait_all(children, stop, timeout):
        if stop.is_set():
            return 0
        _err(f"not ready after {timeout:.0f}s; still waiting for: {_pending(children)}")
        return 1
    gateway = next((c for c in children if c.name == "gateway"), None)
    http_url = f"http://{_LOOPBACK}:{http_port}"
    if gateway is not None:
        left = max(5.0, timeout - (time.monotonic() - started))
        if not await _own_healthz(http_url, gateway, stop, left):
            if stop.is_set():
                return 0
            _err(f"{http_url}/healthz did not answer ok within {timeout:.0f}s")
            return 1
    ws = f"devices ws://{_LOOPBACK}:{ws_port}/supie/v1/  {http_url}/  " if gateway else ""
    console.raw(
        f"Supie is ready: {ws}(nats {nats_url}, redis {redis_url}, data {data_dir}, "
        f"services {','.join(c.name for c in children)})"
    )
    await stop.wait()
    return 0


def run_up(args: argparse.Namespace) -> int:
    config = Path(os.path.abspath(args.config or os.environ.get("SUPIE_CONFIG", "config.yaml")))
    overrides: dict[str, object] = {}
    if args.data_dir:
        overrides["data_dir"] = Path(args.data_dir)
    try:
        settings = load_settings(UpSettings, config, **overrides)
    except ConfigError as exc:
        _err(str(exc))
        return 2
    data_dir = Path(os.path.abspath(settings.data_dir))
    return asyncio.run(_up(args, settings, config, data_dir))
