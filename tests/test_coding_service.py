"""The coding service over real NATS and Valkey, driven the way the gateway drives it
(``DeviceInbound`` and ``Transcript`` requests, retried with the same id until a replica
answers) and observed where badges read (``device.<dev>.out``): acks and errors, normalisation,
debounce and immediacy, clear, one summary per stop, limits, speech notes, group broadcast, the
log line, LLM answers good and bad, and replicas (in-process and real processes, one killed
mid-stream, one restarted with an insight pending)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from loguru import logger
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from redis.asyncio import Redis
from supie_coding.config import CodingSettings
from supie_coding.llm import LlmClients
from supie_coding.normalize import normalize_text
from supie_coding.service import CodingService
from supie_coding.state import CodingKeys, decode_entry
from supie_common.contracts import (
    DeviceInbound,
    DeviceOutbound,
    InboundReply,
    ModeChanged,
    Subjects,
    Transcript,
    decode,
    encode,
    new_id,
)
from supie_common.contracts.device import CodingAck, to_frame, validate_server_message
from supie_common.embedded import free_port
from supie_common.settings import load_settings
from supie_common.store import Presence

from supie_cli.coding_pipe import guess_level

CORPUS = Path(__file__).parent / "fixtures" / "coding"


def corpus(name: str) -> list[str]:
    return [line for line in (CORPUS / f"{name}.log").read_text().splitlines() if line.strip()]


async def wait_until(pred: Callable[[], Any], within: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise TimeoutError(f"not within {within}s: {what}")


class Badge:
    """One badge as the coding service sees it: what the gateway sends for it, what it gets."""

    def __init__(self, nc: NATS, device_id: str | None = None, group: str = "") -> None:
        self.nc = nc
        self.device_id = device_id or f"cc:{new_id()[:10]}"
        self.group = group
        self.session_id = new_id()
        self.frames: list[dict[str, Any]] = []
        self.arrivals: list[float] = []

    async def listen(self) -> Badge:
        async def cb(msg: Any) -> None:
            out = decode(DeviceOutbound, msg.data)
            if out.frame is not None:
                self.frames.append(json.loads(out.frame))
                self.arrivals.append(time.monotonic())

        await self.nc.subscribe(Subjects.device_out(self.device_id), cb=cb)
        await self.nc.flush()
        return self

    def env(self) -> dict[str, str]:
        return {"device_id": self.device_id, "session_id": self.session_id, "gateway_id": "gw-t"}

    def inbound(self, message: dict[str, Any], message_id: str | None = None) -> bytes:
        return encode(
            DeviceInbound(
                **self.env(),
                mode="coding",
                group_key=self.group,
                message_id=message_id or new_id(),
                message=message,  # type: ignore[arg-type]
            )
        )

    async def request(self, subject: str, data: bytes, within: float = 30.0) -> InboundReply:
        """As the gateway: retry (same payload, same id) until a replica answers for good."""
        deadline = time.monotonic() + within
        delay = 0.2
        while True:
            try:
                msg = await self.nc.request(subject, data, timeout=2.0)
                reply = decode(InboundReply, msg.data)
                if not reply.retry:
                    return reply
            except (NoRespondersError, NatsTimeoutError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"no replica accepted a message on {subject}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def send(self, message: dict[str, Any], message_id: str | None = None) -> InboundReply:
        return await self.request(Subjects.CODING_INBOUND, self.inbound(message, message_id))

    async def send_raw(self, message: dict[str, Any]) -> InboundReply:
        """A DeviceInbound whose message skips validation (what a buggy gateway could send)."""
        payload = {**self.env(), "message_id": new_id(), "message": message}
        return await self.request(Subjects.CODING_INBOUND, json.dumps(payload).encode())

    async def log(self, text: str, level: str = "info") -> InboundReply:
        return await self.send({"type": "coding", "event": "log", "level": level, "text": text})

    async def event(self, event: str, **fields: Any) -> InboundReply:
        return await self.send({"type": "coding", "event": event, **fields})

    async def say(self, text: str, utterance_id: str | None = None) -> InboundReply:
        t = Transcript(
            **self.env(),
            stream_id="s1",
            utterance_id=utterance_id or f"s1:{new_id()[:8]}",
            text=text,
            start_ms=0,
            end_ms=900,
            mode="coding",
        )
        return await self.request(Subjects.CODING_TEXT, encode(t))

    def of(self, event: str) -> list[dict[str, Any]]:
        return [
            f
            for f in self.frames
            if f.get("type") == "coding" and f.get("event") == event and "status" not in f
        ]

    def acks(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("type") == "coding" and "status" in f]


# == fixtures ====================================================================================


@pytest.fixture
async def make_coding(nats_url: str, redis_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """``await make_coding(coding={...}, llm_clients=..., **settings)`` -> a started replica."""
    started: list[CodingService] = []

    async def make(llm_clients: LlmClients | None = None, **overrides: Any) -> CodingService:
        coding = {"insight_debounce_ms": 300, **overrides.pop("coding", {})}
        settings = load_settings(
            CodingSettings,
            tmp_path / "no-config.yaml",
            nats={"url": nats_url},
            redis=overrides.pop("redis", {"url": redis_url}),
            coding=coding,
            **overrides,
        )
        svc = CodingService(settings, llm_clients=llm_clients)
        await svc.start()
        started.append(svc)
        return svc

    yield make
    for svc in started:
        await svc.stop()


@pytest.fixture
async def badge(nc: NATS) -> Badge:
    return await Badge(nc).listen()


def items_of(frame: dict[str, Any]) -> list[str]:
    return [*frame["insights"], *frame["risks"], *frame["actions"], *frame["nextSteps"]]


async def stream(b: Badge, lines: list[str]) -> None:
    for line in lines:
        reply = await b.log(line, guess_level(line))
        assert reply.frames == [to_frame(CodingAck(event="log"))], reply


# == events ======================================================================================


async def test_every_event_is_acked_and_never_echoed(make_coding: Any, badge: Badge) -> None:
    await make_coding()
    replies = [
        await badge.event("start"),
        await badge.log("Collecting pytest-8.3.3 wheel SECRET-LINE-42"),
        await badge.event("step", name="install", status="ok"),
        await badge.event("phase", phase="test"),
        await badge.event("phase", name="lint"),  # the firmware's ambiguous field
        await badge.event("clear"),
        await badge.event("stop"),
    ]
    events = ["start", "log", "step", "phase", "phase", "clear", "stop"]
    for reply, event in zip(replies, events, strict=True):
        assert [json.loads(f) for f in reply.frames] == [
            {"type": "coding", "status": "ok", "event": event}
        ]
    await wait_until(lambda: badge.of("summary"), what="the summary after stop")
    assert not any("SECRET-LINE-42" in json.dumps(f) for f in badge.frames)
    for frame in badge.frames:
        validate_server_message(frame)


async def test_text_is_normalised_cut_at_512_characters_utf8_safe(
    make_coding: Any, badge: Badge, redis: Redis
) -> None:
    svc = await make_coding()
    await badge.log("```bash\n  npm   run\tbuild \n```")
    await badge.log("错" * 700)
    await badge.log("🙂" * 600)
    lines = await svc.state.lines(badge.device_id)
    assert [line.text for line in lines] == ["npm run build", "错" * 512, "🙂" * 512]
    raw = await redis.lrange(CodingKeys.lines(badge.device_id), 0, -1)
    for entry in raw:
        entry.encode("utf-8")  # every stored entry is valid UTF-8


async def test_semantic_errors_name_the_field(make_coding: Any, badge: Badge) -> None:
    await make_coding()
    cases = [
        ({"type": "coding", "event": "log", "text": "```\n   \n```"}, "text"),
        ({"type": "coding", "event": "step", "name": "~~~"}, "name"),
        ({"type": "coding", "event": "phase", "phase": "```"}, "phase"),
    ]
    for message, field in cases:
        reply = await badge.send(message)
        error = json.loads(reply.frames[0])
        assert error["status"] == "error" and error["code"] == "SCHEMA_INVALID"
        assert error["field"] == field and error["message"].startswith(f"{field}: ")
    raw_cases = [
        ({"type": "coding", "event": "log", "level": "info"}, "text"),
        ({"type": "coding", "event": "phase"}, "phase"),
        ({"type": "coding", "event": "explode"}, "event"),
        ({"type": "coding", "event": "log", "level": "loud", "text": "x"}, "level"),
    ]
    for message, field in raw_cases:
        reply = await badge.send_raw(message)
        error = json.loads(reply.frames[0])
        assert (error["code"], error["field"]) == ("SCHEMA_INVALID", field), error
    # nothing was recorded, nothing else was disturbed
    assert (await badge.log("still fine")).frames == [to_frame(CodingAck(event="log"))]


async def test_a_message_id_is_applied_once(make_coding: Any, badge: Badge) -> None:
    svc = await make_coding()
    message = {"type": "coding", "event": "log", "level": "error", "text": "boom once"}
    first = await badge.send(message, message_id="m-1")
    again = await badge.send(message, message_id="m-1")
    assert first.frames == again.frames == [to_frame(CodingAck(event="log"))]
    assert [line.text for line in await svc.state.lines(badge.device_id)] == ["boom once"]
    assert int((await svc.state.stats(badge.device_id))["errors"]) == 1


async def test_the_buffer_keeps_the_last_history_max_lines(make_coding: Any, badge: Badge) -> None:
    svc = await make_coding(coding={"history_max_lines": 10})
    for n in range(15):
        await badge.log(f"line {n}")
    assert [line.text for line in await svc.state.lines(badge.device_id)] == [
        f"line {n}" for n in range(5, 15)
    ]


async def test_published_without_reply_subject_frames_go_to_device_out(
    make_coding: Any, badge: Badge, nc: NATS
) -> None:
    await make_coding()
    await nc.publish(Subjects.CODING_INBOUND, badge.inbound({"type": "coding", "event": "start"}))
    await wait_until(lambda: badge.acks(), what="the ack on device_out")
    assert badge.acks() == [{"type": "coding", "status": "ok", "event": "start"}]


async def test_store_down_asks_the_gateway_to_retry(
    make_coding: Any, badge: Badge, nc: NATS
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}"
    await make_coding(redis={"url": dead, "max_outage_s": 600})
    msg = await nc.request(
        Subjects.CODING_INBOUND, badge.inbound({"type": "coding", "event": "start"}), timeout=10
    )
    reply = decode(InboundReply, msg.data)
    assert reply.retry and reply.frames == []


async def test_a_redis_that_lost_its_scripts_is_served_anyway(
    make_coding: Any, badge: Badge, redis: Redis
) -> None:
    svc = await make_coding()
    await badge.log("before the flush")
    await redis.script_flush()  # what a restarted Redis without persistence looks like
    assert (await badge.log("after the flush")).frames == [to_frame(CodingAck(event="log"))]
    await badge.log("error: and an immediate one", "error")
    texts = [line.text for line in await svc.state.lines(badge.device_id)]
    assert texts == ["before the flush", "after the flush", "error: and an immediate one"]


async def test_mode_end_ends_the_run(make_coding: Any, badge: Badge, nc: NATS) -> None:
    svc = await make_coding()
    await badge.event("start")
    await badge.event("phase", phase="build")
    await nc.publish(
        Subjects.MODE_CHANGED, encode(ModeChanged(**badge.env(), state="end", mode="coding"))
    )

    async def ended() -> bool:
        st = await svc.state.stats(badge.device_id)
        return st.get("running") == "0" and st.get("phase") == "idle"

    deadline = time.monotonic() + 10
    while not await ended():
        assert time.monotonic() < deadline, "mode end not recorded"
        await asyncio.sleep(0.05)


# == insights: timing ==============================================================================


async def test_info_lines_are_debounced(make_coding: Any, badge: Badge) -> None:
    await make_coding(coding={"insight_debounce_ms": 1500})
    t0 = time.monotonic()
    for n in range(5):
        await badge.log(f"Compiling module {n} of 5")
    await wait_until(lambda: badge.of("insight"), what="the debounced insight")
    assert badge.arrivals[badge.frames.index(badge.of("insight")[0])] - t0 >= 1.5
    assert len(badge.of("insight")) == 1  # five lines, one insight


async def test_the_debounce_is_clamped_to_300_ms(make_coding: Any, badge: Badge) -> None:
    svc = await make_coding(coding={"insight_debounce_ms": 20})
    assert svc.settings.coding.debounce_ms == 300
    t0 = time.monotonic()
    await badge.log("Resolving dependencies")
    await wait_until(lambda: badge.of("insight"), what="the insight")
    assert badge.arrivals[-1] - t0 >= 0.3


@pytest.mark.parametrize(
    "message",
    [
        {"type": "coding", "event": "log", "level": "error", "text": "fatal: not a git repo"},
        {"type": "coding", "event": "step", "name": "unit tests", "status": "fail"},
        {"type": "coding", "event": "phase", "phase": "deploy"},
    ],
    ids=["error-line", "step", "phase"],
)
async def test_error_line_step_and_phase_are_immediate(
    make_coding: Any, badge: Badge, message: dict[str, Any]
) -> None:
    await make_coding(coding={"insight_debounce_ms": 30_000})
    await badge.log("Starting the run")  # due in 30 s...
    t0 = time.monotonic()
    await badge.send(message)  # ...but this one asks for it now
    await wait_until(lambda: badge.of("insight"), within=15, what="the immediate insight")
    assert badge.arrivals[-1] - t0 < 15  # far below the 30 s debounce
    if message["event"] == "phase":
        assert badge.of("insight")[0]["phase"] == "deploy"


async def test_an_unchanged_insight_is_not_resent(make_coding: Any, badge: Badge) -> None:
    svc = await make_coding()
    await badge.log("Traceback (most recent call last):", "error")
    await wait_until(lambda: badge.of("insight"), what="first insight")
    n = len(badge.of("insight"))
    for _ in range(3):
        await badge.log("Downloading cache", "info")
    await wait_until(lambda: svc.counts["suppressed"] >= 1, what="a suppressed duplicate")
    assert len(badge.of("insight")) == n


async def test_clear_drops_the_buffer_and_the_pending_insight(
    make_coding: Any, badge: Badge
) -> None:
    svc = await make_coding(coding={"insight_debounce_ms": 800})
    for n in range(3):
        await badge.log(f"step {n} running")
    await badge.event("clear")
    assert await svc.state.lines(badge.device_id) == []
    await asyncio.sleep(2.0)  # well past the debounce: nothing was due any more
    assert badge.of("insight") == []
    await badge.log("FAILED tests/test_a.py::test_new - assert 0", "error")
    await wait_until(lambda: badge.of("insight"), what="an insight after clear")
    assert "test_new" in " ".join(items_of(badge.of("insight")[-1]))


async def test_disabled_insights_still_buffer_and_ack(make_coding: Any, badge: Badge) -> None:
    svc = await make_coding(coding={"insight_enabled": False})
    await badge.log("error: boom", "error")
    await badge.event("stop")
    await asyncio.sleep(1.0)
    assert badge.of("insight") == [] and badge.of("summary") == []
    assert len(await svc.state.lines(badge.device_id)) == 1


# == insights: content =============================================================================


@pytest.mark.parametrize(
    ("name", "mention"),
    [
        ("pytest_failures", "test_login_rejects_bad_password"),
        ("python_import_error", "pip install redis"),
        ("tsc_errors", "src/components/Cart.tsx line 42"),
        ("oom_kill", "out of memory"),
    ],
)
async def test_a_streamed_log_becomes_a_specific_insight(
    make_coding: Any, badge: Badge, name: str, mention: str
) -> None:
    await make_coding()
    lines = corpus(name)
    await stream(badge, lines)
    await wait_until(
        lambda: any(mention in " ".join(items_of(f)) for f in badge.of("insight")),
        what=f"an insight naming {mention!r}",
    )
    normalised = {normalize_text(line, 512) for line in lines}
    for frame in badge.of("insight"):
        validate_server_message(frame)
        assert len(frame["insights"]) <= 5 and len(frame["risks"]) <= 4
        assert len(frame["actions"]) <= 6 and len(frame["nextSteps"]) <= 6
        assert frame["insights"] and frame["risks"] and frame["actions"] and frame["nextSteps"]
        for item in items_of(frame):
            assert item not in normalised
            assert not any(len(n) >= 16 and " " in n and n in item for n in normalised)


async def test_stop_sends_one_summary_even_when_repeated(make_coding: Any, badge: Badge) -> None:
    await make_coding()
    await make_coding()  # a second replica competing for the work
    await badge.event("start")
    await stream(badge, corpus("pytest_failures"))
    await badge.event("stop")
    stop = {"type": "coding", "event": "stop"}
    await badge.send(stop, message_id="stop-1")
    await badge.send(stop, message_id="stop-1")  # a retry
    await badge.send(stop)  # a second stop of the same run
    await wait_until(lambda: badge.of("summary"), what="the summary")
    await asyncio.sleep(1.5)
    summaries = badge.of("summary")
    assert len(summaries) == 1
    summary = summaries[0]
    assert summary["insights"][0].startswith("Run failed")
    assert "test_login_rejects_bad_password" in " ".join(items_of(summary))
    # a new run gets its own summary
    await badge.event("start")
    await badge.log("===== 3 passed in 0.1s =====")
    await badge.event("stop")
    await wait_until(lambda: len(badge.of("summary")) == 2, what="the second run's summary")
    assert badge.of("summary")[1]["insights"][0].startswith("Run passed")


async def test_limits_follow_the_configuration(make_coding: Any, badge: Badge) -> None:
    await make_coding(coding={"insight_max_items": 2, "summary_max_items": 3})
    await stream(badge, corpus("gcc_errors") + corpus("pytest_failures"))
    await badge.event("stop")
    await wait_until(lambda: badge.of("summary"), what="the summary")
    assert all(len(f["insights"]) <= 2 for f in badge.of("insight"))
    summary = badge.of("summary")[0]
    assert max(len(summary[k]) for k in ("insights", "risks", "actions", "nextSteps")) <= 3
    assert len(summary["insights"]) == 3


async def test_speech_is_a_note_that_feeds_insights(make_coding: Any, badge: Badge) -> None:
    svc = await make_coding()
    reply = await badge.say("the login test fails on CI", utterance_id="s1:100")
    assert reply.frames == [] and not reply.retry
    await badge.say("the login test fails on CI", utterance_id="s1:100")  # redelivered: once
    lines = await svc.state.lines(badge.device_id)
    assert [(line.text, line.level, line.kind) for line in lines] == [
        ("the login test fails on CI", "note", "note")
    ]
    await wait_until(lambda: badge.of("insight"), what="an insight from the note")
    assert "login test fails ci" in " ".join(badge.of("insight")[0]["nextSteps"])
    partial = Transcript(
        **badge.env(),
        stream_id="s1",
        utterance_id="s1:200",
        text="half",
        start_ms=0,
        end_ms=1,
        kind="partial",
    )
    await badge.request(Subjects.CODING_TEXT, encode(partial))
    assert len(await svc.state.lines(badge.device_id)) == 1


async def test_insights_reach_the_online_badges_of_the_group_with_from(
    make_coding: Any, nc: NATS, redis: Redis
) -> None:
    await make_coding()
    group = f"team-{new_id()[:6]}"
    sender = await Badge(nc, group=group).listen()
    mate = await Badge(nc, group=group).listen()
    offline = await Badge(nc, group=group).listen()
    stranger = await Badge(nc, group=f"other-{new_id()[:6]}").listen()
    presence = Presence(redis, ttl_s=30)
    for b in (sender, mate, stranger):
        await presence.register(b.device_id, "gw-t", b.session_id, b.group)
    await sender.log("ModuleNotFoundError: No module named 'httpx'", "error")
    await wait_until(lambda: sender.of("insight") and mate.of("insight"), what="both badges")
    mine, theirs = sender.of("insight")[0], mate.of("insight")[0]
    assert "from" not in mine
    assert theirs["from"] == sender.device_id
    assert {k: v for k, v in theirs.items() if k != "from"} == mine
    await asyncio.sleep(0.5)
    assert offline.of("insight") == [] and stranger.of("insight") == []


async def test_the_log_line_has_stats_never_the_text(make_coding: Any, badge: Badge) -> None:
    records: list[str] = []
    sink = logger.add(lambda m: records.append(str(m)), level="INFO", format="{message}")
    try:
        await make_coding()
        await badge.log("E   ModuleNotFoundError: No module named 'leakcheck_zz'", "error")
        await wait_until(
            lambda: any("[Coding Insight]" in r for r in records), what="the insight log line"
        )
    finally:
        logger.remove(sink)
    line = next(r for r in records if "[Coding Insight]" in r)
    assert re.search(
        r"\[Coding Insight\] final=false phase=\S+ insights=\d+ risks=\d+ actions=\d+ "
        r"nextSteps=\d+ jsonSHA=[0-9a-f]{16} elapsedMs=\d+",
        line,
    ), line
    assert not any("leakcheck_zz" in r for r in records)


# == the LLM =======================================================================================


class FakeLlm:
    """An OpenAI-compatible endpoint behind ``httpx.MockTransport``: answers what it is told."""

    def __init__(self) -> None:
        self.answer: Callable[[dict[str, Any]], Any] = lambda body: "{}"
        self.prompts: list[str] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.prompts.append(body["messages"][1]["content"])
        answer = self.answer(body)
        if asyncio.iscoroutine(answer):
            answer = await answer
        if isinstance(answer, httpx.Response):
            return answer
        return httpx.Response(200, json={"choices": [{"message": {"content": answer}}]})

    def clients(self) -> LlmClients:
        return LlmClients(transport=httpx.MockTransport(self.handle))


LLM_SETTINGS = {
    "llm": {"fake": {"base_url": "http://llm.test/v1", "model": "tiny", "api_key": "sk-x"}},
    "llm_by_mode": {"coding": "fake"},
}


def llm_json(**lists: list[str]) -> str:
    body = {"insights": [], "risks": [], "actions": [], "nextSteps": []}
    body.update(lists)
    return json.dumps(body)


async def run_with_llm(make_coding: Any, badge: Badge, fake: FakeLlm) -> dict[str, Any]:
    await make_coding(
        llm_clients=fake.clients(),
        coding={"llm_timeout_s": 0.5, "insight_max_chars": 900},
        **LLM_SETTINGS,
    )
    await stream(badge, corpus("pytest_failures"))
    await wait_until(lambda: badge.of("insight") and fake.prompts, what="an insight")
    await asyncio.sleep(0.3)
    return badge.of("insight")[-1]


async def test_a_good_llm_answer_is_used_and_its_empty_lists_filled(
    make_coding: Any, badge: Badge
) -> None:
    fake = FakeLlm()
    fake.answer = lambda body: llm_json(
        insights=[
            "Login accepts a wrong password: test_login_rejects_bad_password gets 200",
            "Discount maths is off in test_total_with_discount (250 instead of 225)",
        ],
        risks=["Anyone can log in with any password"],
        actions=["Check the password comparison in the login view"],
    )
    frame = await run_with_llm(make_coding, badge, fake)
    assert frame["insights"][0].startswith("Login accepts a wrong password")
    assert frame["risks"] == ["Anyone can log in with any password"]
    assert frame["nextSteps"]  # filled by the local heuristics
    prompt = fake.prompts[-1]
    assert len(prompt) <= 900
    assert "test_login_rejects_bad_password" in prompt and '"signals"' in prompt


@pytest.mark.parametrize(
    "answer",
    [
        "Sure! Here are the insights: tests fail.",
        '{"insights": ["x"], "risks": [], "actions": []}',
        llm_json(insights=["test_login_rejects_bad_password"], summary=["extra key"]),
        llm_json(
            insights=[
                "FAILED tests/test_auth.py::test_login_rejects_bad_password - assert 200 == 401"
            ]
        ),
        llm_json(insights=["Some tests failed"], risks=["Things may break"]),
        '["an", "array"]',
        llm_json(insights=[1, 2]),  # type: ignore[list-item]
    ],
    ids=["prose", "missing-key", "extra-key", "echo", "weaker", "array", "not-strings"],
)
async def test_a_bad_llm_answer_falls_back_to_local(
    make_coding: Any, badge: Badge, answer: str
) -> None:
    fake = FakeLlm()
    fake.answer = lambda body: answer
    frame = await run_with_llm(make_coding, badge, fake)
    local = "test_login_rejects_bad_password failed at tests/test_auth.py line 31"
    assert any(item.startswith(local) for item in frame["insights"]), frame


async def test_a_slow_or_failing_llm_falls_back_to_local(make_coding: Any, badge: Badge) -> None:
    fake = FakeLlm()
    calls = 0

    async def slow_then_500(body: dict[str, Any]) -> Any:
        nonlocal calls
        calls += 1
        if calls % 2:
            await asyncio.sleep(3)  # past llm_timeout_s (0.5 s)
            return llm_json(insights=["too late"])
        return httpx.Response(500, json={"error": "down"})

    fake.answer = slow_then_500
    t0 = time.monotonic()
    frame = await run_with_llm(make_coding, badge, fake)
    assert "test_login_rejects_bad_password" in " ".join(frame["insights"])
    assert time.monotonic() - t0 < 20


# == real replica processes =======================================================================

CODING_ENV = {"SUPIE_CODING__INSIGHT_DEBOUNCE_MS": "300"}


async def start_replicas(spawn_service: Any, nc: NATS, n: int, **env: str) -> list[Any]:
    procs = [spawn_service("supie_coding", {**CODING_ENV, **env}) for _ in range(n)]
    for proc in procs:
        await proc.wait_healthy(nc, "coding")
        # health answers from any replica: wait for this one's own word that it takes work
        await wait_until(lambda p=proc: "coding started as" in p.log(), 60, "replica start")
    return procs


async def test_two_replica_processes_share_the_work_one_summary_per_stop(
    spawn_service: Any, nc: NATS
) -> None:
    procs = await start_replicas(spawn_service, nc, 2)
    badges = [await Badge(nc).listen() for _ in range(6)]
    lines = corpus("pytest_failures")

    async def run(b: Badge) -> None:
        await b.event("start")
        await stream(b, lines)
        stop = {"type": "coding", "event": "stop"}
        await b.send(stop, message_id=f"stop-{b.device_id}")
        await b.send(stop, message_id=f"stop-{b.device_id}")  # a gateway retry
        await b.send(stop)  # and a second stop

    await asyncio.gather(*(run(b) for b in badges))
    await wait_until(lambda: all(b.of("summary") for b in badges), what="every summary")
    await asyncio.sleep(1.5)
    assert [len(b.of("summary")) for b in badges] == [1] * 6
    for b in badges:
        assert "test_login_rejects_bad_password" in " ".join(items_of(b.of("summary")[0]))
    for proc in procs:  # both replicas wrote insights
        await wait_until(lambda p=proc: "[Coding Insight]" in p.log(), what="work on each")


async def test_a_replica_killed_mid_stream_loses_no_line(
    spawn_service: Any, nc: NATS, redis: Redis
) -> None:
    first, _second = await start_replicas(spawn_service, nc, 2)
    b = await Badge(nc).listen()
    await b.event("start")
    sent = []
    for n in range(60):
        if n == 20:
            first.kill()  # SIGKILL: whatever it held in flight is retried by "the gateway"
        text = f"FAILED tests/test_n.py::test_{n} - assert {n} == 0" if n % 10 == 9 else f"ok {n}"
        await b.log(text, guess_level(text))
        sent.append(text)
    stored = await redis.lrange(CodingKeys.lines(b.device_id), 0, -1)
    assert [decode_entry(e).text for e in stored] == sent  # every line once, in order
    await b.event("stop")
    await wait_until(lambda: b.of("summary"), what="the summary from the survivor")
    assert "60 lines" in b.of("summary")[0]["insights"][0]


async def test_a_pending_insight_survives_a_restart(
    spawn_service: Any, nc: NATS, redis: Redis
) -> None:
    (first,) = await start_replicas(spawn_service, nc, 1, SUPIE_CODING__INSIGHT_DEBOUNCE_MS="4000")
    b = await Badge(nc).listen()
    t0 = time.monotonic()
    await b.log("E   ModuleNotFoundError: No module named 'tomli'", "warn")  # debounced
    first.kill()
    assert await redis.zscore(CodingKeys.DUE, b.device_id) is not None
    await start_replicas(spawn_service, nc, 1, SUPIE_CODING__INSIGHT_DEBOUNCE_MS="4000")
    await wait_until(lambda: b.of("insight"), what="the insight, written by the new replica")
    assert b.arrivals[-1] - t0 >= 4.0
    assert "pip install tomli" in " ".join(b.of("insight")[0]["actions"])
