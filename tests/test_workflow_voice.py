"""Voice and typed commands in working mode, as the mode router hands them to ``workflow.intent``:
the command is announced to the speaker before it acts, then the N-th *open* task (snapshot order)
is done or claimed in every badge's list. The English command is transcribed from its committed
espeak-ng fixture by the real ASR engine; the Mandarin one is sent as whisper writes it (the
bundled tiny.en model does not do Mandarin; the audio path is in test_workflow_e2e.py)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from nats.aio.client import Client as NATS
from redis.asyncio import Redis
from supie_common.contracts.device import validate_server_message
from supie_workflow.intent_llm import IntentLlm

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


@pytest.fixture
async def make_workflow(nats_url: str, redis_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    started: list[Any] = []

    async def make(**overrides: Any) -> Any:
        svc = await support.start_workflow(nats_url, redis_url, tmp_path, **overrides)
        started.append(svc)
        return svc

    yield make
    for svc in started:
        await svc.stop()


@pytest.fixture
async def gw(nc: NATS, redis: Redis) -> AsyncIterator[Any]:
    gateway = await support.FakeGateway(nc, redis).start()
    yield gateway
    await gateway.stop()


async def make_team(gw: Any, speaker_id: str | None = None) -> tuple[Any, Any]:
    """Two badges of a group whose list is B(P0), C(P1, done), D(P1), A(P2): the open tasks in
    snapshot order are B, D, A, so "the second task" is D."""
    g = speaker_id[:8] if speaker_id else support.group_name()
    speaker = await gw.badge(speaker_id or support.device_in(g), g)
    mate = await gw.badge(support.device_in(g), g)
    await gw.send(
        speaker,
        {
            "event": "update",
            "tasks": [
                {"id": "A", "title": "a", "priority": 2},
                {"id": "B", "title": "b", "priority": 0},
                {"id": "C", "title": "c", "priority": 1, "status": "done"},
                {"id": "D", "title": "d", "priority": 1},
            ],
        },
    )
    return speaker, mate


def status(tasks: list[dict[str, Any]] | None) -> dict[str, str]:
    return {t["id"]: t["status"] for t in tasks or []}


def owners(tasks: list[dict[str, Any]] | None) -> dict[str, str | None]:
    return {t["id"]: t.get("owner") for t in tasks or []}


# Whisper hears the robotic "ren4 wu4" as 人物 unless primed with the vocabulary of the list.
ZH_PROMPT = "以下是普通话的句子，关于任务。"


def transcribe(name: str, model: str, language: str, models_dir: Path) -> str:
    """What the real ASR engine (a bundled whisper model) hears in a fixture."""
    from supie_asr.engine import Request, create_engine
    from supie_common.audio import read_wav
    from supie_common.settings import AsrSection

    pcm, _ = read_wav(SPEECH / f"{name}.wav")
    cfg = AsrSection(cpu_threads=2, initial_prompts={"zh": ZH_PROMPT})
    engine = create_engine(cfg, model, models_dir)
    audio = pcm.astype(np.float32) / 32768.0
    return engine.transcribe_batch([Request(audio, language)])[0].text


async def assert_second_open_task_done(gw: Any, speaker: Any, mate: Any, text: str) -> None:
    before = len(speaker.frames)
    frames = await gw.say(speaker, text)
    for f in frames:
        validate_server_message(f)
    received = speaker.frames[before:]
    notice = received[0]
    assert notice == {
        "type": "workflow",
        "event": "command",
        "intent": "complete",
        "ordinal": 2,
        "taskId": "D",
        "text": text.strip(),
    }
    validate_server_message(notice)
    # announced before acting: the notice came first, then the reply (ack, snapshot)
    assert received[1:] == frames
    assert frames[0]["event"] == "complete" and frames[0]["ids"] == ["D"]
    for badge in (speaker, mate):
        assert status(badge.last_snapshot()) == {"B": "open", "C": "done", "D": "done", "A": "open"}


async def test_complete_the_second_task_spoken_in_english(
    make_workflow: Any, gw: Any, tmp_path: Path
) -> None:
    await make_workflow()
    text = await asyncio.to_thread(transcribe, "workflow_complete_en", "tiny.en", "en", tmp_path)
    refs = json.loads((SPEECH / "workflow_commands.json").read_text(encoding="utf-8"))
    assert text.lower().strip(" .") == refs["workflow_complete_en"]["text"]
    await assert_second_open_task_done(gw, *await make_team(gw), text)


async def test_complete_the_second_task_in_mandarin(make_workflow: Any, gw: Any) -> None:
    """As whisper writes it (punctuation included)."""
    await make_workflow()
    await assert_second_open_task_done(gw, *await make_team(gw), "完成第二个任务。")


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_complete_the_second_task_spoken_in_mandarin(
    make_workflow: Any, gw: Any, tmp_path: Path
) -> None:
    """The espeak-ng pinyin fixture through the bundled multilingual model."""
    await make_workflow()
    refs = json.loads((SPEECH / "workflow_commands.json").read_text(encoding="utf-8"))
    text = await asyncio.to_thread(transcribe, "workflow_complete_zh", "base", "zh", tmp_path)
    assert text.rstrip("。") == refs["workflow_complete_zh"]["text"] == "完成第二个任务"
    await assert_second_open_task_done(gw, *await make_team(gw), text)


async def test_complete_the_second_task_in_traditional_chinese(make_workflow: Any, gw: Any) -> None:
    await make_workflow()
    await assert_second_open_task_done(gw, *await make_team(gw), "完成第二個任務")


async def test_claim_without_an_ordinal_takes_the_first_free_task(
    make_workflow: Any, gw: Any
) -> None:
    speaker_id = support.device_in(support.group_name())
    await make_workflow(workflow={"device_alias": {speaker_id: "Ann"}})
    speaker, mate = await make_team(gw, speaker_id)
    await gw.send(mate, {"event": "assign", "id": "B", "owner": "Bob"})
    frames = await gw.say(speaker, "claim task")
    notice = speaker.frames[-3]
    assert (notice["event"], notice["intent"], notice["taskId"]) == ("command", "assign", "D")
    assert "ordinal" not in notice
    assert frames[0]["event"] == "assign" and frames[0]["ids"] == ["D"]
    assert owners(mate.last_snapshot()) == {"B": "Bob", "C": None, "D": "Ann", "A": None}
    await gw.say(speaker, "认领第一个任务")  # the first open task, whoever has it
    assert owners(mate.last_snapshot())["B"] == "Ann"


async def test_refresh_sends_the_list_and_changes_nothing(make_workflow: Any, gw: Any) -> None:
    await make_workflow()
    speaker, mate = await make_team(gw)
    pushes = len(mate.frames)
    frames = await gw.say(speaker, "refresh the list")
    assert speaker.frames[-2]["intent"] == "refresh"
    assert len(frames) == 1 and [t["id"] for t in frames[0]["tasks"]] == ["B", "C", "D", "A"]
    assert len(mate.frames) == pushes


async def test_what_is_not_a_command_does_nothing(make_workflow: Any, gw: Any) -> None:
    await make_workflow()
    speaker, mate = await make_team(gw)
    marks = len(speaker.frames), len(mate.frames)
    for text in (
        "we should not complete the second task yet",
        "let's talk about the tasks for next week",
        "   ",
    ):
        assert await gw.say(speaker, text) == []
    assert (len(speaker.frames), len(mate.frames)) == marks
    _, snap = await gw.send(speaker, {"event": "list"})
    assert status(snap["tasks"]) == {"B": "open", "C": "done", "D": "open", "A": "open"}


async def test_an_ordinal_past_the_open_tasks_is_announced_then_not_found(
    make_workflow: Any, gw: Any
) -> None:
    await make_workflow()
    speaker, mate = await make_team(gw)
    pushes = len(mate.frames)
    frames = await gw.say(speaker, "complete task 9")
    assert speaker.frames[-3]["intent"] == "complete" and speaker.frames[-3]["ordinal"] == 9
    err = frames[0]
    assert err["code"] == "NOT_FOUND" and err["field"] == "ordinal" and "3 open" in err["message"]
    assert len(mate.frames) == pushes


async def test_a_retried_utterance_is_announced_and_applied_once(
    make_workflow: Any, gw: Any
) -> None:
    await make_workflow()
    speaker, mate = await make_team(gw)
    first = await gw.say(speaker, "Complete the second task.", utterance_id="s1:100")
    again = await gw.say(speaker, "Complete the second task.", utterance_id="s1:100")
    assert again[0] == first[0] and first[0]["ids"] == ["D"]
    assert len(speaker.of(event="command")) == 1
    # had it been applied twice, A (the second open task after D was done) would be done too
    assert status(mate.last_snapshot())["A"] == "open"


def llm_transport(answer: str | None, seen: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if answer is None:
            return httpx.Response(500, json={"error": "down"})
        return httpx.Response(200, json={"choices": [{"message": {"content": answer}}]})

    return httpx.MockTransport(handle)


LLM_CONFIG = {
    "llm": {"intent-llm": {"base_url": "http://llm.test/v1", "api_key": "sk-test-123"}},
    "llm_by_mode": {"intent": "intent-llm"},
}


async def test_an_intent_llm_backs_the_rules_when_configured(make_workflow: Any, gw: Any) -> None:
    seen: list[httpx.Request] = []
    answer = 'Sure: {"intent": "complete", "ordinal": 3}'
    await make_workflow(intent_llm=IntentLlm(llm_transport(answer, seen)), **LLM_CONFIG)
    speaker, mate = await make_team(gw)
    frames = await gw.say(speaker, "the report thing is finally out of the door")
    assert frames[0]["ids"] == ["A"]  # the third open task
    assert status(mate.last_snapshot())["A"] == "done"
    assert len(seen) == 1 and seen[0].headers["authorization"] == "Bearer sk-test-123"
    body = json.loads(seen[0].content)
    assert body["messages"][-1]["content"] == "the report thing is finally out of the door"
    # a rule match never asks the LLM
    await gw.say(speaker, "refresh the list")
    assert len(seen) == 1


@pytest.mark.parametrize("answer", [None, "no idea", '{"intent": "delete everything"}'])
async def test_an_unusable_llm_answer_means_no_command(
    make_workflow: Any, gw: Any, answer: str | None
) -> None:
    seen: list[httpx.Request] = []
    await make_workflow(intent_llm=IntentLlm(llm_transport(answer, seen)), **LLM_CONFIG)
    speaker, mate = await make_team(gw)
    pushes = len(mate.frames)
    assert await gw.say(speaker, "the report thing is finally out of the door") == []
    assert len(seen) == 1 and len(mate.frames) == pushes


async def test_without_an_intent_llm_only_the_rules_count(make_workflow: Any, gw: Any) -> None:
    seen: list[httpx.Request] = []
    # a default LLM (for meeting summaries) is not asked about working-mode speech
    await make_workflow(
        intent_llm=IntentLlm(llm_transport('{"intent": "complete"}', seen)),
        llm={"summaries": {"base_url": "http://llm.test/v1"}},
        llm_by_mode={"default": "summaries"},
    )
    speaker, _ = await make_team(gw)
    assert await gw.say(speaker, "the report thing is finally out of the door") == []
    assert seen == []
