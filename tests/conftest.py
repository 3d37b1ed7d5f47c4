"""Shared fixtures: real nats-server and valkey-server (the embedded default's binaries) on free
ports, clients for them, and helpers to run Supie services in-process or as subprocesses."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from redis.asyncio import Redis
from supie_common.bus import connect_nats
from supie_common.embedded import EmbeddedNats, EmbeddedValkey
from supie_common.store import connect_redis

pytest_plugins = ["tests.fixtures_cluster", "tests.fixtures_netns"]

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path_factory.mktemp("nats"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def valkey_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedValkey]:
    server = EmbeddedValkey(tmp_path_factory.mktemp("valkey"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def nats_url(nats_server: EmbeddedNats) -> str:
    return nats_server.url


@pytest.fixture
def redis_url(valkey_server: EmbeddedValkey) -> str:
    return valkey_server.url


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    client = await connect_nats(nats_url, "test-client")
    yield client
    await client.drain()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = connect_redis(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def stack_env(nats_url: str, redis_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for a service subprocess pointed at the test servers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPIE_")}
    env.update(
        {
            "SUPIE_NATS__URL": nats_url,
            "SUPIE_REDIS__URL": redis_url,
            "SUPIE_DATA_DIR": str(tmp_path / "data"),
            "SUPIE_CONFIG": str(tmp_path / "config.yaml"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


class ServiceProcess:
    """A service run as ``python -m <module>`` (for kill / restart tests)."""

    def __init__(self, module: str, env: dict[str, str], log_path: Path) -> None:
        self.module = module
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        return self

    async def wait_healthy(self, nc: NATS, service: str, timeout: float = 60.0) -> None:
        from supie_common.bus import BusError, request
        from supie_common.contracts import HealthPing, HealthPong, Subjects

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.module} exited: {self.log()[-3000:]}")
            try:
                await request(nc, Subjects.health(service), HealthPing(), HealthPong, timeout=0.5)
                return
            except BusError:
                await asyncio.sleep(0.1)
        raise TimeoutError(f"{service} not healthy after {timeout}s: {self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self, timeout: float = 15.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def spawn_service(stack_env: dict[str, str], tmp_path: Path) -> Iterator[object]:
    """``spawn_service("supie_meeting", extra_env={...})`` -> started :class:`ServiceProcess`."""
    procs: list[ServiceProcess] = []
    counter = iter(range(1000))

    def spawn(module: str, extra_env: dict[str, str] | None = None) -> ServiceProcess:
        env = dict(stack_env)
        env.update(extra_env or {})
        proc = ServiceProcess(module, env, tmp_path / f"{module}-{next(counter)}.log").start()
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        proc.terminate()


class GatewayHandle:
    """An in-process gateway bound to free ports."""

    def __init__(self, service: object) -> None:
        self.service = service

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.service.ws_port}/supie/v1/"  # type: ignore[attr-defined]

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.service.http_port}"  # type: ignore[attr-defined]


@pytest.fixture
async def make_gateway(nats_url: str, redis_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """``await make_gateway(**settings_overrides)`` -> started in-process gateway replica."""
    from supie_common.settings import load_settings
    from supie_gateway import GatewayService, GatewaySettings

    started: list[GatewayService] = []

    async def make(**overrides: object) -> GatewayHandle:
        server = {"ip": "127.0.0.1", "ws_port": 0, "http_port": 0}
        server.update(overrides.pop("server", {}))  # type: ignore[arg-type]
        nats = {"url": nats_url, **overrides.pop("nats", {})}  # type: ignore[dict-item]
        overrides.setdefault("data_dir", tmp_path / "data")
        settings = load_settings(
            GatewaySettings,
            tmp_path / "no-config.yaml",
            nats=nats,
            redis={"url": redis_url},
            server=server,
            **overrides,
        )
        svc = GatewayService(settings)
        await svc.start()
        started.append(svc)
        return GatewayHandle(svc)

    yield make
    for svc in started:
        await svc.stop()


@pytest.fixture
async def gateway(make_gateway):  # type: ignore[no-untyped-def]
    return await make_gateway()


@pytest.fixture(autouse=True)
def _clean_supie_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's SUPIE_* variables."""
    for key in list(os.environ):
        if key.startswith("SUPIE_"):
            monkeypatch.delenv(key, raising=False)


@pytest.fixture
async def asr_owner(nc: NATS) -> AsyncIterator[set[str]]:
    """A stand-in asr replica that owns every stream it is asked to open (answers the open and
    heartbeats), for gateway tests about the socket-to-bus path. Yields the opened stream ids."""
    from supie_common.contracts import (
        AsrEvent,
        AsrOpenReply,
        AsrOpenRequest,
        Queues,
        Subjects,
        decode,
        encode,
    )

    streams: set[str] = set()

    async def on_open(msg) -> None:  # type: ignore[no-untyped-def]
        req = decode(AsrOpenRequest, msg.data)
        streams.add(req.stream_id)
        await msg.respond(encode(AsrOpenReply(ok=True, stream_id=req.stream_id, owner="test")))

    async def beat() -> None:
        while True:
            for sid in list(streams):
                await nc.publish(
                    Subjects.asr_events(sid),
                    encode(AsrEvent(kind="heartbeat", stream_id=sid, owner="test")),
                )
            await asyncio.sleep(0.3)

    sub = await nc.subscribe(Subjects.ASR_OPEN, queue=Queues.ASR, cb=on_open)
    task = asyncio.create_task(beat())
    yield streams
    task.cancel()
    await sub.unsubscribe()
