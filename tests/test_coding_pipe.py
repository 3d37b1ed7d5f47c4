"""``supie coding pipe``: the levels it guesses, and what it sends over the device protocol,
recorded by a local WebSocket server standing in for the gateway (the pipe in-process, then the
real command on a real failing pytest run, in command mode and reading stdin). The full path
(pipe -> gateway -> coding -> a badge's insight) runs against the real gateway and is expected
to need the new gateway's request/reply forwarding."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from supie_common.device_client import DeviceClient, firmware_hello
from websockets.asyncio.server import ServerConnection, serve

from supie_cli.coding_pipe import exit_status_of, guess_level, pipe_lines

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "fixtures" / "coding"
SUMMARY = {
    "type": "coding",
    "event": "summary",
    "phase": "test",
    "insights": ["Run failed"],
    "risks": ["r"],
    "actions": ["a"],
    "nextSteps": ["n"],
}


class FakeGateway:
    """Records every frame a client sends; answers hello, mode and coding like the gateway."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.headers: dict[str, str] = {}
        self.url = ""

    async def handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.headers = dict(ws.request.headers)
        async for data in ws:
            msg = json.loads(data)
            self.frames.append(msg)
            if msg["type"] == "hello":
                await ws.send(
                    json.dumps(
                        {
                            "type": "hello",
                            "transport": "websocket",
                            "session_id": "s-1",
                            "audio_params": msg.get("audio_params", {}),
                        }
                    )
                )
            elif msg["type"] == "mode":
                await ws.send(
                    json.dumps(
                        {"type": "mode", "status": "ok", "state": msg["state"], "mode": msg["mode"]}
                    )
                )
            elif msg["type"] == "coding":
                await ws.send(json.dumps({"type": "coding", "status": "ok", "event": msg["event"]}))
                if msg["event"] == "stop":
                    await ws.send(json.dumps(SUMMARY))

    def coding(self, event: str | None = None) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == "coding" and event in (None, f.get("event"))]


@pytest.fixture
async def fake_gateway() -> AsyncIterator[FakeGateway]:
    gw = FakeGateway()
    async with serve(gw.handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        gw.url = f"ws://127.0.0.1:{port}/supie/v1/"
        yield gw


# -- levels -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "level"),
    [
        ("FAILED tests/test_a.py::test_x - assert 1 == 2", "error"),
        ("E       AssertionError: assert 250 == 225", "error"),
        ("src/parser.c:102:5: error: 'n' undeclared", "error"),
        ("src/index.ts(3,22): error TS2307: Cannot find module './routes'", "error"),
        ("Traceback (most recent call last):", "error"),
        ("KeyError: 'database_url'", "error"),
        ("--- FAIL: TestServeHTTP (0.01s)", "error"),
        ("test tests::withdraw ... FAILED", "error"),
        ("\x1b[31mFAILED\x1b[0m tests/test_a.py::t", "error"),
        ("========= 2 failed, 12 passed in 0.84s =========", "error"),
        ("Killed", "error"),
        ("src/parser.c:88:12: warning: unused variable 'len'", "warn"),
        ("warning: unused variable: `fee`", "warn"),
        ("src/shop/cart.py:3:8: F401 [*] `os` imported but unused", "warn"),
        ("DeprecationWarning: pkg_resources is deprecated", "warn"),
        ("========= 41 passed, 0 failed in 2.17s =========", "info"),
        ("Compiled with 0 errors", "info"),
        ("collected 14 items", "info"),
        ("tests/test_auth.py ..F.        [ 28%]", "info"),
        ("", "info"),
    ],
)
def test_guess_level(line: str, level: str) -> None:
    assert guess_level(line) == level


def test_exit_status_line() -> None:
    assert exit_status_of("exit status 2") == 2
    assert exit_status_of("Exit code 0.") == 0
    assert exit_status_of("the exit status 2 of x") is None


# -- what the pipe sends ------------------------------------------------------------------------


async def _lines(texts: list[str]) -> AsyncIterator[str]:
    for text in texts:
        yield text + "\n"


async def test_the_pipe_speaks_the_device_protocol(fake_gateway: FakeGateway) -> None:
    lines = (CORPUS / "pytest_failures.log").read_text().splitlines()
    echoed: list[str] = []
    result = await pipe_lines(
        fake_gateway.url,
        "aa:bb:cc:dd:ee:42",
        _lines([*lines, "progress 10%\rprogress 100%"]),
        step="pytest -x",
        exit_code=lambda: 1,
        wait_s=5,
        echo=echoed.append,
    )
    frames = fake_gateway.frames
    assert fake_gateway.headers["device-id"] == "aa:bb:cc:dd:ee:42"
    assert frames[0]["type"] == "hello"
    assert frames[1] == {"type": "mode", "state": "start", "mode": "coding"}
    assert frames[2] == {"type": "coding", "event": "start"}
    logs = fake_gateway.coding("log")
    non_empty = [line.strip() for line in lines if line.strip()]
    assert [f["text"] for f in logs] == [*non_empty, "progress 100%"]
    by_text = {f["text"]: f["level"] for f in logs}
    assert (
        by_text["FAILED tests/test_auth.py::test_login_rejects_bad_password - assert 200 == 401"]
        == "error"
    )
    assert by_text["collected 14 items"] == "info"
    assert frames[-2] == {
        "type": "coding",
        "event": "step",
        "name": "pytest -x (exit 1)",
        "status": "fail",
    }
    assert frames[-1] == {"type": "coding", "event": "stop"}
    assert echoed[: len(lines)] == lines  # the output passes through, untouched
    assert result.sent == len(logs) and result.status == "fail" and result.exit_code == 1
    assert result.insights == [SUMMARY]


async def test_without_an_exit_code_the_status_comes_from_the_output(
    fake_gateway: FakeGateway,
) -> None:
    result = await pipe_lines(
        fake_gateway.url, "aa:bb:cc:dd:ee:43", _lines(["all good", "exit status 3"]), wait_s=1
    )
    step = fake_gateway.coding("step")[0]
    assert step == {"type": "coding", "event": "step", "name": "pipe (exit 3)", "status": "fail"}
    assert [f["text"] for f in fake_gateway.coding("log")] == ["all good"]  # not sent as a log
    assert result.exit_code == 3
    ok = await pipe_lines(fake_gateway.url, "aa:bb:cc:dd:ee:44", _lines(["fine"]), wait_s=1)
    assert ok.status == "ok" and fake_gateway.coding("step")[-1]["status"] == "ok"


FAILING_TEST = """
def test_adds():
    assert 1 + 1 == 2

def test_login_rejects_bad_password():
    status = 200
    assert status == 401
"""


def _project(tmp_path: Path) -> Path:
    (tmp_path / "test_shop.py").write_text(FAILING_TEST)
    return tmp_path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPIE_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def test_the_command_on_a_real_failing_pytest_run(
    fake_gateway: FakeGateway, tmp_path: Path
) -> None:
    project = _project(tmp_path)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "supie_cli", "coding", "pipe",
        "--device", "aa:bb:cc:dd:ee:45", "--url", fake_gateway.url, "--wait", "2", "--",
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(project),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env(), cwd=project,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 1, err.decode()  # pytest's own exit status
    assert "test_login_rejects_bad_password" in out.decode()  # passed through
    assert "Run failed" in err.decode()  # the summary, shown on stderr
    logs = fake_gateway.coding("log")
    failed = [f for f in logs if f["text"].startswith("FAILED")]
    assert failed and failed[0]["level"] == "error"
    assert "test_login_rejects_bad_password" in failed[0]["text"]
    step = fake_gateway.coding("step")[0]
    assert step["status"] == "fail" and step["name"].endswith("(exit 1)")
    assert fake_gateway.frames[-1] == {"type": "coding", "event": "stop"}


async def test_the_command_reading_stdin(fake_gateway: FakeGateway, tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "supie_cli", "coding", "pipe", "--quiet",
        "--device", "aa:bb:cc:dd:ee:46", "--url", fake_gateway.url, "--wait", "1",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=_env(),
    )  # fmt: skip
    data = b"error: could not compile `ledger`\nexit status 101\n"
    out, err = await asyncio.wait_for(proc.communicate(data), 60)
    assert proc.returncode == 0, err.decode()
    assert out == b""  # --quiet
    assert [f["text"] for f in fake_gateway.coding("log")] == ["error: could not compile `ledger`"]
    assert fake_gateway.coding("step")[0]["name"] == "pipe (exit 101)"


async def test_an_unreachable_gateway_is_a_clear_error(tmp_path: Path) -> None:
    from supie_common.embedded import free_port

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "supie_cli", "coding", "pipe", "--device", "aa:bb:cc:dd:ee:47",
        "--url", f"ws://127.0.0.1:{free_port()}/supie/v1/",
        stdin=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env(),
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(b"hello\n"), 60)
    assert proc.returncode == 1
    assert "supie coding pipe: ws://127.0.0.1:" in err.decode()


# -- the whole path ------------------------------------------------------------------------------


async def test_pipe_to_a_badge_through_gateway_and_coding(
    make_gateway: Any, nats_url: str, redis_url: str, tmp_path: Path, asr_owner: set[str]
) -> None:
    from supie_coding.config import CodingSettings
    from supie_coding.service import CodingService
    from supie_common.settings import load_settings

    settings = load_settings(
        CodingSettings,
        tmp_path / "no-config.yaml",
        nats={"url": nats_url},
        redis={"url": redis_url},
        coding={"insight_debounce_ms": 300},
    )
    coding = CodingService(settings)
    await coding.start()
    gateway = await make_gateway()
    mate = DeviceClient(gateway.ws_url, "ab:cd:ef:01:00:02")  # same group (first 8 characters)
    try:
        await mate.connect()
        await mate.hello(firmware_hello())
        await mate.send_json({"type": "mode", "state": "start", "mode": "coding"})
        project = _project(tmp_path)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(project),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=project,
        )  # fmt: skip
        output, _ = await proc.communicate()
        assert proc.returncode == 1
        result = await pipe_lines(
            gateway.ws_url,
            "ab:cd:ef:01:00:01",
            _lines(output.decode().splitlines()),
            step="pytest",
            exit_code=lambda: proc.returncode,
            wait_s=20,
            ack_timeout_s=10,
        )
        assert not result.rejected, result.rejected
        insights = [m for m in result.insights if m["event"] == "insight"]
        assert any(
            "test_login_rejects_bad_password" in " ".join(m["insights"]) for m in insights
        ), result.insights
        assert any(m["event"] == "summary" for m in result.insights)
        shared = await mate.expect("coding", timeout=20, event="insight")
        assert shared["from"] == "ab:cd:ef:01:00:01"
    finally:
        await mate.close()
        await coding.stop()
