"""Summary contract, local summarizer (zh/en), and the LLM path against a local fake
OpenAI-compatible server: good JSON, JSON wrapped in prose, broken JSON, slow (timeout)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from supie_common.settings import LlmByMode, LlmProvider, MeetingSection
from supie_meeting.config import MeetingSettings
from supie_meeting.llm import LlmError, parse_json_object
from supie_meeting.local_summarizer import summarize_local
from supie_meeting.snippets import SchemaInvalid, cut_utf8, validate_snippet
from supie_meeting.summarizer import Summarizer
from supie_meeting.summary import SUMMARY_FIELDS, Summary, format_duration, normalize_summary

EN = [
    "Let's review the budget for the product launch.",
    "The marketing budget for the launch is too high.",
    "We decided to cut the marketing budget by ten percent.",
    "Alice will update the launch plan by Friday.",
    "There is a risk that the vendor delays the launch.",
    "Next step: review the launch budget again next week.",
]
ZH = [
    "我们今天讨论产品上线的预算。",
    "市场预算太高了，上线压力很大。",
    "我们决定把市场预算削减百分之十。",
    "张三负责更新上线计划。",
    "供应商可能延期，这是一个风险。",
    "下一步是下周再次评审上线预算。",
]
GOOD = {
    "title": "Launch budget review",
    "bullets": ["Marketing budget cut by 10%", "dup", "Dup"],
    "decisions": ["Cut marketing budget 10%"],
    "actions": ["Alice updates the plan"],
    "risks": None,
    "nextSteps": "Review again next week",
}


def _check_contract(out: dict[str, Any]) -> None:
    assert list(out) == list(SUMMARY_FIELDS)
    assert isinstance(out["title"], str) and 0 < len(out["title"]) <= 30
    h, m, s = out["duration"].split(":")
    assert len(h) >= 2 and len(m) == 2 and len(s) == 2
    assert int(h) * 3600 + int(m) * 60 + int(s) >= 5
    assert len(out["bullets"]) <= 6
    for f in ("bullets", "decisions", "actions", "risks", "nextSteps"):
        assert isinstance(out[f], list) and all(isinstance(x, str) and x for x in out[f])
        assert len({x.lower() for x in out[f]}) == len(out[f])
        if f != "bullets":
            assert len(out[f]) <= 4


def test_normaliser_fills_caps_and_dedups() -> None:
    out = normalize_summary(
        {
            "title": "x" * 80,
            "bullets": [f"b{i}" for i in range(9)] + ["b1"],
            "risks": None,
            "actions": "one",
            "decisions": [{"a": "b"}, 3, ""],
        },
        1200,
    ).model_dump()
    _check_contract(out)
    assert out["duration"] == "00:00:05"  # raised to meeting.min_duration_ms
    assert len(out["title"]) == 30 and out["risks"] == [] and out["actions"] == ["one"]
    assert out["decisions"] == ["b", "3"]
    assert format_duration(3_725_000) == "01:02:05"
    assert normalize_summary(None, 0).model_dump()["bullets"] == []


@pytest.mark.parametrize("texts,lang", [(EN, "en"), (ZH, "zh")])
def test_local_summarizer_extracts_cues(texts: list[str], lang: str) -> None:
    raw = summarize_local(texts)
    out = normalize_summary(raw, 60_000).model_dump()
    _check_contract(out)
    joined = " ".join(texts)
    for f in ("bullets", "decisions", "actions", "risks", "nextSteps"):
        for item in out[f]:
            assert item in joined  # extractive: never invented
    assert out["decisions"] == [texts[2]]
    assert out["actions"] == [texts[3]]
    assert out["risks"] == [texts[4]]
    assert out["nextSteps"] == [texts[5]]
    assert ("预算" if lang == "zh" else "budget") in out["title"]


def test_local_summary_of_an_hour_is_fast() -> None:
    texts = [f"{EN[i % 6]} Item {i} about topic {i % 17}." for i in range(900)]
    t0 = time.perf_counter()
    out = normalize_summary(summarize_local(texts), 3_600_000).model_dump()
    assert time.perf_counter() - t0 < 1.0
    _check_contract(out)
    assert out["duration"] == "01:00:00"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.text(max_size=200),
            st.text(alphabet="我们决定负责风险下一步预算上线会议。，！？ ", max_size=120),
            st.sampled_from(EN + ZH),
            st.text(min_size=1000, max_size=3000),
        ),
        max_size=40,
    ),
    st.integers(min_value=-10, max_value=10**9),
)
def test_any_transcript_gives_a_valid_summary(texts: list[str], duration_ms: int) -> None:
    out = normalize_summary(summarize_local(texts), duration_ms).model_dump()
    _check_contract(out)
    Summary.model_validate(out)


def test_parse_json_object_fallback() -> None:
    assert parse_json_object('{"a": 1}') == {"a": 1}
    assert parse_json_object('Sure! Here it is:\n```json\n{"a": {"b": 2}}\n```') == {"a": {"b": 2}}
    for bad in ("no json", "{broken", "[1, 2]", '{"a": }'):
        with pytest.raises(LlmError):
            parse_json_object(bad)


def test_snippet_validation_names_the_field() -> None:
    cases = [
        ({}, "items: expected a non-empty array"),
        ({"items": []}, "items: expected a non-empty array"),
        ({"items": ["x"]}, "items[0]: expected an object"),
        ({"items": [{"tag": "a"}]}, "items[0].text: expected a non-empty string"),
        (
            {"items": [{"tag": "a", "text": "ok"}, {"tag": "", "text": "t"}]},
            "items[1].tag: expected a non-empty string",
        ),
        (
            {"items": [{"tag": "a", "text": "t", "speakerId": 5}]},
            "items[0].speakerId: expected a string",
        ),
    ]
    for message, expected in cases:
        with pytest.raises(SchemaInvalid, match=expected.replace("[", r"\[").replace("]", r"\]")):
            validate_snippet(message, 2048)
    text = "会" * 1000  # 3000 bytes
    cut = cut_utf8(text, 2048)
    assert len(cut.encode()) <= 2048 and cut == "会" * 682
    (item,) = validate_snippet({"items": [{"tag": "ASR", "text": text}]}, 2048)
    assert item.text == cut


def test_push_interval_is_clamped() -> None:
    assert MeetingSection(transcript_push_interval_ms=100).push_interval_ms == 3000
    assert MeetingSection(transcript_push_interval_ms=99999).push_interval_ms == 15000
    assert MeetingSection().push_interval_ms == 5000


# -- fake OpenAI-compatible server ---------------------------------------------------------------
class _FakeLlm(BaseHTTPRequestHandler):
    requests: list[dict[str, Any]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _FakeLlm.requests.append(
            {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
        )
        mode = self.path.split("/")[1]
        if mode == "slow":
            time.sleep(1.5)
        content = {
            "good": json.dumps(GOOD),
            "prose": "Here are the minutes:\n" + json.dumps(GOOD) + "\nThanks!",
            "broken": '{"title": "x", "bullets": ["a", ',
            "weak": json.dumps({"title": "", "bullets": [], "decisions": []}),
            "slow": json.dumps(GOOD),
        }.get(mode)
        if content is None:
            self.send_response(500)
            self.end_headers()
            return
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(data.encode())


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeLlm)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _settings(base: str, mode: str, timeout: float = 5.0) -> MeetingSettings:
    return MeetingSettings(
        llm={"fake": LlmProvider(base_url=f"{base}/{mode}/v1", api_key="sk-test", model="m")},
        llm_by_mode=LlmByMode(meeting="fake"),
        meeting=MeetingSection(llm_timeout_s=timeout),
    )


def _segments(texts: list[str]) -> list[dict[str, Any]]:
    return [{"ts": i, "text": t, "speakerId": "dev", "tag": "ASR"} for i, t in enumerate(texts)]


@pytest.mark.parametrize(
    "mode,source",
    [("good", "llm"), ("prose", "llm"), ("broken", "local"), ("weak", "local"), ("error", "local")],
)
async def test_llm_path_and_fallback(fake_llm: str, mode: str, source: str) -> None:
    summarizer = Summarizer(_settings(fake_llm, mode))
    try:
        res = await summarizer.summarize(_segments(EN), 90_000)
    finally:
        await summarizer.reload(summarizer.settings)
    out = res.summary.model_dump()
    _check_contract(out)
    assert res.source == source
    if source == "llm":
        assert out["title"] == "Launch budget review"
        assert out["bullets"] == ["Marketing budget cut by 10%", "dup"]
        assert out["risks"] == [] and out["nextSteps"] == ["Review again next week"]
    else:
        assert out["decisions"] == [EN[2]] and res.fallback_reason
    req = _FakeLlm.requests[-1]
    assert req["path"] == f"/{mode}/v1/chat/completions" and req["auth"] == "Bearer sk-test"
    assert "never invent" in req["body"]["messages"][0]["content"]
    assert req["body"]["max_tokens"] == 800


async def test_llm_timeout_falls_back_fast(fake_llm: str) -> None:
    summarizer = Summarizer(_settings(fake_llm, "slow", timeout=0.3))
    t0 = time.perf_counter()
    res = await summarizer.summarize(_segments(ZH), 10_000)
    assert time.perf_counter() - t0 < 1.2
    assert res.source == "local" and "timed out" in (res.fallback_reason or "")
    assert res.summary.decisions == [ZH[2]]
    await summarizer.reload(_settings(fake_llm, "good"))  # reload drops the cached client
    assert not summarizer.clients._clients
    res = await summarizer.summarize(_segments(ZH), 10_000)
    assert res.source == "llm"
    await summarizer.reload(summarizer.settings)


async def test_no_llm_configured_uses_local() -> None:
    res = await Summarizer(MeetingSettings()).summarize([], 0)
    assert res.source == "local" and res.fallback_reason is None
    _check_contract(res.summary.model_dump())
