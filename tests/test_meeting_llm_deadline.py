"""Issue 10 item 6: a slow LLM never stalls a meeting. A real HTTP LLM that takes 6 s per call,
twice the timer lease: checkpoints fall back to the local summarizer at their deadline, pushes keep
their cadence, the lease is never lost, and the final summary comes at its deadline too."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS


def load_meeting_bus() -> Any:
    name = "supie_tests_meeting_bus"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).parent / "fixtures" / "meeting_bus.py"
        )
        assert spec is not None and spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


bus = load_meeting_bus()
Badge, until, replicas = bus.Badge, bus.until, bus.replicas


class _Sleepy(BaseHTTPRequestHandler):
    calls: list[float] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        _Sleepy.calls.append(time.monotonic())
        time.sleep(6.0)
        body = json.dumps(
            {"choices": [{"message": {"content": json.dumps({"title": "Too late"})}}]}
        ).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the caller gave up, as it should


@pytest.fixture
def sleepy_llm() -> Iterator[str]:
    _Sleepy.calls.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sleepy)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


@pytest.mark.slow  # kills and waits: `make test-slow`
@pytest.mark.timeout(90)
async def test_a_slow_llm_never_stalls_a_meeting(
    spawn_service: Any, nc: NATS, sleepy_llm: str
) -> None:
    (proc,) = await replicas(
        spawn_service,
        nc,
        1,
        {
            "SUPIE_LLM__SLOW__BASE_URL": sleepy_llm,
            "SUPIE_LLM__SLOW__TIMEOUT_S": "30",
            "SUPIE_LLM_BY_MODE__MEETING": "slow",
            "SUPIE_MEETING__CHECKPOINT_INTERVAL_MIN": "0.05",  # every push (3 s)
            "SUPIE_MEETING__TRANSCRIPT_PUSH_INTERVAL_MS": "3000",
            "SUPIE_MEETING__CHECKPOINT_DEADLINE_S": "1",
            "SUPIE_MEETING__SUMMARY_DEADLINE_S": "1.5",
        },
    )
    badge = await Badge(nc).listen()
    m = await badge.start()
    await badge.say("We decided to keep pushes on time.")
    arrivals: list[float] = []
    seen = 0

    def pushes() -> list[float]:
        nonlocal seen
        for frame in badge.pushed[seen:]:
            if frame.get("phase") == "transcript":
                arrivals.append(time.monotonic())
        seen = len(badge.pushed)
        return arrivals

    await until(lambda: len(pushes()) >= 5, 30)
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    # 3 s apart: a push waiting for an LLM call (6 s) would come 9 s after the previous one
    assert all(2.0 < g < 6.0 for g in gaps), gaps
    checkpoints = badge.of("summary", checkpoint=True)
    assert len(checkpoints) >= 2 and len(_Sleepy.calls) >= 2
    assert checkpoints[0]["decisions"] == ["We decided to keep pushes on time."]  # local
    log = proc.log()
    assert "lease lost" not in log and "deadline" in log

    t0 = time.monotonic()
    await badge.finalize()
    summary = (await badge.wait(lambda: badge.of("summary", checkpoint=False), 10))[0]
    assert time.monotonic() - t0 < 5.0
    assert summary["title"] != "Too late" and summary["sessionId"] == m
    events = await bus.finalized_events(nc, {m})
    assert events[m][0].metrics["summarySource"] == "local"
