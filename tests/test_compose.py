"""docker-compose.yml, executed (``make compose-test``; skipped unless ``SUPIE_COMPOSE_TEST=1``).

podman-compose brings the stack up with two replicas of every service (the images are built
locally by scripts/compose-test.sh), the test waits for every container's health and each
gateway's ``/healthz``, then one badge on each gateway replica holds a meeting with real speech:
each gets its summary, each meeting is archived and served by *either* gateway, and the webhook
receiver (``supie webhook echo``) verified exactly one signed delivery per meeting. Everything
is torn down, volumes included."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from supie_common.audio import OpusEncoder
from supie_common.device_client import DeviceClient

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "supie-ct"
FILES = [
    "-f",
    str(ROOT / "docker-compose.yml"),
    "-f",
    str(ROOT / "scripts/compose-test.override.yml"),
]
SERVICES = ("gateway", "asr", "meeting", "workflow", "coding", "webhook")
REPLICAS = 2

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("SUPIE_COMPOSE_TEST") != "1",
        reason="runs the compose file under podman: `make compose-test` (SUPIE_COMPOSE_TEST=1)",
    ),
    pytest.mark.slow,
    pytest.mark.timeout(900),
]

_spec = importlib.util.spec_from_file_location(
    "speech_fixtures", Path(__file__).parent / "fixtures" / "speech" / "speech.py"
)
assert _spec is not None and _spec.loader is not None
speech = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(speech)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(ROOT / "scripts" / "containers.conf"))
    return env


def _run(*cmd: str, timeout: float = 300, check: bool = True) -> str:
    out = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} -> {out.returncode}\n{out.stdout}\n{out.stderr}")
    return out.stdout


def _compose(*args: str, timeout: float = 600, check: bool = True) -> str:
    return _run("podman-compose", "-p", PROJECT, *FILES, *args, timeout=timeout, check=check)


def _container(service: str, n: int) -> str:
    return f"{PROJECT}_{service}_{n}"


def _host_port(container: str, port: int) -> int:
    out = _run("podman", "port", container, f"{port}/tcp").strip().splitlines()[0]
    return int(out.rsplit(":", 1)[1])


def _health(container: str) -> str:
    out = _run("podman", "inspect", "--format", "{{.State.Health.Status}}", container, check=False)
    return out.strip()


def _logs(container: str) -> str:
    out = subprocess.run(
        ["podman", "logs", container], env=_env(), capture_output=True, text=True, timeout=60
    )
    return out.stdout + out.stderr


def _wait(what: str, condition: Any, timeout: float, interval: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture(scope="module")
def stack() -> Iterator[dict[str, int]]:
    if shutil.which("podman-compose") is None:
        pytest.fail("podman-compose is missing: run `make compose-test`")
    _compose("down", "-v", timeout=300, check=False)
    started = time.monotonic()
    try:
        _compose("up", "-d")
        containers = [_container(s, n) for s in SERVICES for n in range(1, REPLICAS + 1)]
        running = _run("podman", "ps", "--format", "{{.Names}}").split()
        assert set(containers) <= set(running), running

        # podman runs healthchecks only when asked (no systemd timers here): ask, until healthy.
        def all_healthy() -> bool:
            for name in containers:
                if _health(name) != "healthy":
                    _run("podman", "healthcheck", "run", name, check=False, timeout=60)
            return all(_health(name) == "healthy" for name in containers)

        _wait("every container healthy", all_healthy, 300, interval=3)
        ports = {
            f"{kind}{n}": _host_port(_container("gateway", n), port)
            for n in range(1, REPLICAS + 1)
            for kind, port in (("ws", 8004), ("http", 8003))
        }

        def healthz(n: int) -> bool:
            try:
                r = httpx.get(f"http://127.0.0.1:{ports[f'http{n}']}/healthz", timeout=5)
            except httpx.HTTPError:
                return False
            return r.status_code == 200 and r.json()["ok"] is True

        _wait("/healthz ok on both gateways", lambda: healthz(1) and healthz(2), 180)
        ports["healthy_after_s"] = round(time.monotonic() - started)
        ports["containers"] = len(_run("podman", "ps", "--format", "{{.Names}}").split())
        print(f"compose stack healthy after {ports['healthy_after_s']} s")
        yield ports
    except BaseException:
        for name in _run("podman", "ps", "-a", "--format", "{{.Names}}").split():
            if name.startswith(PROJECT):
                print(f"---- {name}\n{_logs(name)[-3000:]}")
        raise
    finally:
        _compose("down", "-v", timeout=300, check=False)


# Run inside a meeting container: the meetings in the NATS archive bucket, and any on disk.
_LIST_ARCHIVE = """
import asyncio, json, os, pathlib
import nats
async def main():
    nc = await nats.connect(os.environ["SUPIE_NATS__URL"])
    store = await nc.jetstream().object_store("supie_meetings")
    names = [o.name for o in await store.list()]
    await nc.close()
    files = pathlib.Path(os.environ["SUPIE_DATA_DIR"], "meetings").glob("*.json")
    print(json.dumps({
        "objects": [n.removesuffix(".json") for n in names if "/" not in n],
        "files": [f.stem for f in files],
    }))
asyncio.run(main())
"""


def _device_id() -> str:
    raw = uuid.uuid4().hex[:12]
    return ":".join(raw[i : i + 2] for i in range(0, 12, 2))


async def _meeting(ws_url: str, pcm: np.ndarray, spans: list[tuple[int, int]]) -> dict[str, Any]:
    async with DeviceClient(ws_url, _device_id()) as dev:
        await dev.hello()
        await dev.send_json({"type": "mode", "state": "start", "mode": "meeting"})
        await dev.expect("mode", status="ok", state="start", timeout=20)
        for start, end in spans:
            await dev.listen("start", mode="manual")
            chunk = pcm[max(0, start - 4800) : end + 4800]
            await dev.stream_packets(OpusEncoder(frame_ms=60).encode_all(chunk), frame_ms=30)
            await asyncio.sleep(0.4)  # past the gateway's listen debounce
            await dev.listen("stop")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            pushed = [
                m
                for m in dev.received
                if m.get("type") == "meeting" and m.get("phase") == "transcript"
            ]
            if sum(len(m.get("items", [])) for m in pushed) >= len(spans):
                break
            await asyncio.sleep(0.5)
        await dev.send_json({"type": "meeting", "phase": "finalize"})
        ack = await dev.expect("meeting", phase="finalize", timeout=20)
        summary = await dev.expect("meeting", phase="summary", timeout=90)
        assert summary["sessionId"] == ack["sessionId"]
        return summary


async def test_compose_stack_runs_meetings_through_both_gateways(stack: dict[str, int]) -> None:
    pcm = speech.samples("meeting_us")
    spans = speech.sentence_spans(pcm)[:3]
    summaries = await asyncio.gather(
        _meeting(f"ws://127.0.0.1:{stack['ws1']}/supie/v1/", pcm, spans),
        _meeting(f"ws://127.0.0.1:{stack['ws2']}/supie/v1/", pcm, spans),
    )
    ids = [s["sessionId"] for s in summaries]
    assert len(set(ids)) == 2 and all(s["title"] for s in summaries)
    assert all(s["sourceSegments"] >= 1 for s in summaries), summaries

    async with httpx.AsyncClient(timeout=10) as http:
        for meeting_id in ids:
            for n in (1, 2):  # the archive is shared: either gateway serves either meeting
                url = f"http://127.0.0.1:{stack[f'http{n}']}/supie/meetings/{meeting_id}"
                for _ in range(100):
                    resp = await http.get(url)
                    if resp.status_code == 200:
                        break
                    await asyncio.sleep(0.3)
                body = resp.json()
                assert resp.status_code == 200 and body["success"] is True, body
                assert body["data"]["summary"]["title"]

    # ... and it is the shared one on JetStream (docker-compose.yml: backend nats), not the
    # volume both replicas happen to mount: each meeting is an object in the bucket, no file.
    listed = json.loads(
        _run("podman", "exec", _container("meeting", 2), "python", "-c", _LIST_ARCHIVE)
    )
    assert set(ids) <= set(listed["objects"]), listed
    assert not set(ids) & set(listed["files"]), listed

    def verified() -> dict[str, int] | None:
        logs = _logs(_container("receiver", 1))
        counts = {m: logs.count(f"verified: session {m}") for m in ids}
        return counts if all(counts.values()) else None

    counts = await asyncio.to_thread(_wait, "a verified webhook per meeting", verified, 120)
    await asyncio.sleep(3)  # a duplicate delivery would land by now
    counts = await asyncio.to_thread(verified) or counts
    assert counts == dict.fromkeys(ids, 1), counts
    assert "REJECTED" not in _logs(_container("receiver", 1))
    print(
        json.dumps(
            {
                "test": "compose",
                "services": len(SERVICES),
                "replicas": REPLICAS,
                "containers": stack["containers"],
                "healthy_after_s": stack["healthy_after_s"],
                "meetings": len(ids),
                "archive": "nats",
                "served_by_both_gateways": True,
                "webhooks_verified": sum(counts.values()),
            }
        )
    )
