"""The ``supie`` command: ``up`` brings the embedded stack up and down cleanly; ``device`` is a
working firmware-protocol client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from supie_common.embedded import free_port

SUPIE = [sys.executable, "-m", "supie_cli"]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPIE_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.mark.timeout(90)
def test_up_reports_ready_serves_healthz_and_stops_clean(tmp_path: Path) -> None:
    ws_port, http_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            *SUPIE,
            "up",
            "--services",
            "gateway",
            "--ws-port",
            str(ws_port),
            "--http-port",
            str(http_port),
            "--data-dir",
            str(tmp_path / "data"),
            "--config",
            str(tmp_path / "config.yaml"),
        ],
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    ready = None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Supie is ready"):
            ready = line
            break
    assert ready is not None, "".join(lines)
    assert f"ws://127.0.0.1:{ws_port}/supie/v1/" in ready
    descendants = psutil.Process(proc.pid).children(recursive=True)
    names = {p.name() for p in descendants}
    assert any("nats-server" in n for n in names) and any("valkey" in n for n in names)
    resp = httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=5)
    assert resp.status_code == 200 and resp.json()["ok"] is True
    assert (tmp_path / "data" / "valkey" / "appendonlydir").exists()  # AOF on
    assert (tmp_path / "data" / "nats" / "jetstream").exists()

    # A crashed service is restarted by the supervisor.
    gateway = next(p for p in descendants if "supie_gateway" in " ".join(p.cmdline()))
    gateway.kill()
    deadline = time.monotonic() + 30
    healthy_again = False
    while time.monotonic() < deadline and not healthy_again:
        time.sleep(0.3)
        try:
            healthy_again = httpx.get(f"http://127.0.0.1:{http_port}/healthz").status_code == 200
        except httpx.HTTPError:
            pass
    assert healthy_again, "the gateway was not restarted"
    descendants = psutil.Process(proc.pid).children(recursive=True)

    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "[up] stopped" in out
    assert "[up] gateway exited with -9; restarting" in out
    time.sleep(0.2)
    alive = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"left behind: {alive}"


def test_up_refuses_an_invalid_config(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("server:\n  http_port: not-a-port\n")
    out = subprocess.run(
        [*SUPIE, "up", "--config", str(cfg)],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "server.http_port" in out.stderr


async def test_device_simulator_prints_hello_and_pong(gateway) -> None:
    import asyncio

    proc = await asyncio.create_subprocess_exec(
        *SUPIE,
        "device",
        "--url",
        gateway.ws_url,
        "--device-id",
        "AA:BB:CC:DD:EE:77",
        "--mode",
        "working",
        "--send",
        '{"type":"listen","state":"detect","text":"hi there"}',
        "--wait",
        "0.5",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    text = out.decode()
    assert proc.returncode == 0, text
    assert '<< {"type": "hello"' in text and '"session_id"' in text
    assert '<< {"type": "pong"' in text
    assert '"type": "mode", "status": "ok"' in text
    assert '<< {"type": "stt", "text": "hi there"' in text


def test_device_simulator_reports_an_unreachable_server(tmp_path: Path) -> None:
    out = subprocess.run(
        [*SUPIE, "device", "--url", f"ws://127.0.0.1:{free_port()}/supie/v1/"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1 and "cannot connect" in out.stderr
