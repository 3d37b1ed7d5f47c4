"""End to end through the real gateway: firmware-exact badges in working mode share one list
(device -> gateway -> workflow -> every badge), and a spoken command (the committed espeak-ng
fixture, streamed as Opus) goes device -> gateway -> asr -> mode router -> workflow.intent ->
the command event, then the second open task done in every badge's snapshot.

The English command goes through the bundled tiny.en model, the Mandarin one (espeak-ng pinyin)
through the bundled multilingual model, primed with the list's vocabulary (``asr.initial_prompts``)
so that whisper writes 任务 rather than its homophone 人物."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from supie_common.device_client import DeviceClient, opus_packets_for_wav

SPEECH = Path(__file__).parent / "fixtures" / "speech"


def _load_support() -> Any:
    name = "workflow_test_support"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).with_name("test_workflow_support.py")
        )
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


support = _load_support()


def badge_id(prefix: str) -> str:
    """A MAC-like id whose first 8 characters (its default group) are ``prefix``."""
    raw = uuid.uuid4().hex[:4]
    return f"{prefix}:{raw[:2]}:{raw[2:]}"


@pytest.fixture
async def workflow(nats_url: str, redis_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    svc = await support.start_workflow(nats_url, redis_url, tmp_path)
    yield svc
    await svc.stop()


async def snapshot(dev: DeviceClient, timeout: float = 10.0, **match: Any) -> list[dict[str, Any]]:
    while True:
        msg = await dev.expect("workflow", timeout=timeout, event="update", **match)
        if "tasks" in msg:
            return list(msg["tasks"])


async def snapshot_where(
    dev: DeviceClient, pred: Any, timeout: float = 20.0
) -> list[dict[str, Any]]:
    """The first snapshot (older ones may still be queued: greetings, replies) that passes."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        assert left > 0, "no snapshot passed"
        tasks = await snapshot(dev, timeout=left)
        if pred(tasks):
            return tasks


async def working(dev: DeviceClient) -> None:
    await dev.hello()
    await dev.send_json({"type": "mode", "state": "start", "mode": "working"})
    await dev.expect("mode", timeout=10)


@pytest.mark.timeout(90)
async def test_badges_of_one_group_share_a_list_through_the_gateway(
    gateway: Any, workflow: Any
) -> None:
    group = f"e2e{uuid.uuid4().hex[:2]}:{uuid.uuid4().hex[:2]}"[:8]
    async with (
        DeviceClient(gateway.ws_url, badge_id(group)) as a,
        DeviceClient(gateway.ws_url, badge_id(group)) as b,
        DeviceClient(gateway.ws_url, badge_id("ff:ee:dd")) as stranger,
    ):
        for dev in (a, b, stranger):
            await working(dev)
        await a.send_json(
            {"type": "workflow", "event": "update", "tasks": [{"id": "1", "title": "Ship"}]}
        )
        ack = await a.expect("workflow", timeout=10, status="ok")
        assert ack["event"] == "update"
        await snapshot_where(b, lambda ts: [t["id"] for t in ts] == ["1"])
        await b.send_json({"type": "workflow", "event": "complete", "ids": ["1"]})
        await snapshot_where(a, lambda ts: ts and ts[0]["status"] == "done")
        assert not [m for m in stranger.received if m.get("tasks")]


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("fixture", "language"), [("workflow_complete_en", "en"), ("workflow_complete_zh", "zh")]
)
async def test_complete_the_second_task_spoken_to_a_badge(
    make_gateway: Any,
    workflow: Any,
    spawn_service: Any,
    nc: NATS,
    fixture: str,
    language: str,
) -> None:
    gateway = await make_gateway(asr={"language": language})  # it opens the streams
    prompt = json.dumps({"zh": "以下是普通话的句子，关于任务。"})
    asr = spawn_service(
        "supie_asr",
        {"SUPIE_ASR__CPU_THREADS": "2", "SUPIE_ASR__LANGUAGE": language,
         "SUPIE_ASR__INITIAL_PROMPTS": prompt},
    )  # fmt: skip
    await asr.wait_healthy(nc, "asr", timeout=120)
    group = f"e2f{uuid.uuid4().hex[:2]}:{uuid.uuid4().hex[:2]}"[:8]
    async with (
        DeviceClient(gateway.ws_url, badge_id(group)) as speaker,
        DeviceClient(gateway.ws_url, badge_id(group)) as mate,
    ):
        for dev in (speaker, mate):
            await working(dev)
        tasks = [
            {"id": "A", "priority": 2},
            {"id": "B", "priority": 0},
            {"id": "C", "priority": 1, "status": "done"},
            {"id": "D", "priority": 1},
        ]
        await speaker.send_json({"type": "workflow", "event": "update", "tasks": tasks})
        await snapshot_where(mate, lambda ts: len(ts) == 4)
        await speaker.listen("start", mode="manual")
        for packet in opus_packets_for_wav(SPEECH / f"{fixture}.wav"):
            await speaker.send_audio(packet)
            await asyncio.sleep(0.015)
        await speaker.listen("stop", mode="manual")
        notice = await speaker.expect("workflow", timeout=60, event="command")
        assert (notice["intent"], notice["ordinal"], notice["taskId"]) == ("complete", 2, "D")
        for dev in (speaker, mate):
            await snapshot_where(
                dev, lambda ts: {t["id"]: t["status"] for t in ts}.get("D") == "done"
            )
