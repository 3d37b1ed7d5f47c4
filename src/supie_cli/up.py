"""``supie up``: the embedded default. Starts nats-server and valkey-server from their wheels
(unless ``SUPIE_NATS__URL`` / ``SUPIE_REDIS__URL`` name external ones), then every service as its
own supervised process with prefixed logs, prints one line when the stack is ready, and stops
everything on SIGINT/SIGTERM."""

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

__all__ = ["run_up", "Supervised"]


class UpSettings(SupieSettings):
    server: ServerSection = ServerSection()


class Supervised:
    """One service child process, restarted with backoff when it dies."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._stopping = False

    async def run(self) -> None:
        backoff = 0.5
        while not self._stopping:
            started = time.monotonic()
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                f"supie_{self.name}",
                env=self.env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
            await self._pump()
            code = await self.proc.wait()
            if self._stopping:
                return
            self.restarts += 1
            if time.monotonic() - started > 30:
                backoff = 0.5
            print(f"[up] {self.name} exited with {code}; restarting in {backoff:.1f}s", flush=True)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        prefix = f"[{self.name}] "
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                return
            sys.stdout.write(prefix + line.decode(errors="replace"))
            sys.stdout.flush()

    async def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping = True
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _wait_ready(http_url: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=3.0) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(f"{http_url}/healthz")).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
    return False


async def _up(args: argparse.Namespace, settings: UpSettings, config: Path, data_dir: Path) -> int:
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    ws_port = args.ws_port if args.ws_port is not None else settings.server.ws_port
    http_port = args.http_port if args.http_port is not None else settings.server.http_port
    ws_port = ws_port or free_port()
    http_port = http_port or free_port()
    services = [s for s in args.services.split(",") if s]
    missing = [s for s in services if importlib.util.find_spec(f"supie_{s}") is None]
    if missing:
        print(f"supie up: unknown services {missing}", file=sys.stderr)
        return 2

    embedded: list[EmbeddedNats | EmbeddedValkey] = []
    nats_url, redis_url = settings.nats.url, settings.redis.url
    try:
        if not nats_url:
            nats = EmbeddedNats(data_dir / "nats")
            nats.start()
            embedded.append(nats)
            nats_url = nats.url
        if not redis_url:
            valkey = EmbeddedValkey(data_dir / "valkey")
            valkey.start()
            embedded.append(valkey)
            redis_url = valkey.url
    except (OSError, TimeoutError, RuntimeError) as exc:
        print(f"supie up: embedded server failed to start: {exc}", file=sys.stderr)
        for server in embedded:
            server.stop()
        return 1

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
    children = [Supervised(name, env) for name in services]
    tasks = [asyncio.create_task(child.run(), name=f"supervise-{child.name}") for child in children]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    host = "127.0.0.1"
    ready = asyncio.create_task(_wait_ready(f"http://{host}:{http_port}", 300))
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({ready, stopped}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if ready.done() and ready.result():
        print(
            f"Supie is ready: devices ws://{host}:{ws_port}/supie/v1/  "
            f"http://{host}:{http_port}/  (nats {nats_url}, redis {redis_url}, "
            f"data {data_dir})",
            flush=True,
        )
        await stopped
    elif not stop.is_set():
        print("supie up: the stack did not become healthy in time", file=sys.stderr)
        code = 1
    ready.cancel()
    stopped.cancel()
    print("[up] stopping", flush=True)
    await asyncio.gather(*(child.stop() for child in children))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for server in reversed(embedded):
        server.stop()
    print("[up] stopped", flush=True)
    return code


def run_up(args: argparse.Namespace) -> int:
    config = Path(os.path.abspath(args.config or os.environ.get("SUPIE_CONFIG", "config.yaml")))
    overrides: dict[str, object] = {}
    if args.data_dir:
        overrides["data_dir"] = Path(args.data_dir)
    try:
        settings = load_settings(UpSettings, config, **overrides)
    except ConfigError as exc:
        print(f"supie up: {exc}", file=sys.stderr)
        return 2
    data_dir = Path(os.path.abspath(settings.data_dir))
    return asyncio.run(_up(args, settings, config, data_dir))
