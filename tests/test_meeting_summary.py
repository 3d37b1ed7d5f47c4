"""Summary contract, local summarizer (Simplified / Traditional / mixed / comma-only Chinese and
English), and the LLM path against a local fake OpenAI-compatible server: good JSON, JSON wrapped
in prose, broken JSON, slow (timeout)."""

from __future__ import annotations

import json
import threading
import time
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from supie_common.settings import LlmByMode, LlmProvider, MeetingSection
from supie_common.text import to_simplified, to_traditional
from supie_meeting.config import MeetingSettings
from supie_meeting.llm import LlmError, parse_json_object
from supie_meeting.local_summarizer import split_sentences, summarize_local, warm_up
from supie_meeting.snippets import SchemaInvalid, cut_utf8, validate_snippet
from supie_meeting.summarizer import Summarizer
from supie_meeting.summary import SUMMARY_FIELDS, Summary, format_duration, normalize_summary

with warnings.catch_warnings():  # jieba 0.42 has invalid escapes in its source
    warnings.simplefilter("ignore")
    import jieba  # the oracle for "a real word"

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


@pytest.fixture(scope="module", autouse=True)
def _jieba_loaded() -> None:
    """jieba's dictionary loads once per process (about a second); not inside a timed test."""
    warm_up()


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


# -- bilingual table (issue 14 item 5) -----------------------------------------------------------
ZH_COMMA_ONLY = [
    "我们今天主要讨论一下目录页的改版和上线预算，市场部觉得预算太高了，最后我们决定把市场预算"
    "削减百分之十，张三负责更新上线计划和目录页设计，风险是供应商可能延期交付，下一步是下周再"
    "评审一次上线预算"
]
MIXED = [
    "这个feature的risk是供应商可能delay。",
    "我们decided先上线MVP版本。",
    "Alice负责follow up这个feature的设计。",
    "next step是review一下feature的预算。",
    "feature的预算我们再看一下。",
]
EN_COMMA_ONLY = [
    "so we looked at the budget for the launch, marketing thinks the launch budget is too high, "
    "in the end we decided to cut the marketing budget by ten percent, Alice will update the "
    "launch plan by Friday, there is a risk that the vendor delays the launch, next week we "
    "review the launch budget again"
]
ZH_MULTI_FIELD = [
    "我们讨论了预算的问题。",
    "我们决定削减预算，张三负责更新计划。",
    "预算的事就这样。",
]
# name, transcript, the exact content of each cue field, a word the title must hold
BILINGUAL: list[tuple[str, list[str], dict[str, list[str]], str]] = [
    (
        "simplified",
        ZH,
        {"decisions": [ZH[2]], "actions": [ZH[3]], "risks": [ZH[4]], "nextSteps": [ZH[5]]},
        "预算",
    ),
    (
        "traditional",
        [to_traditional(t) for t in ZH],
        {"decisions": [ZH[2]], "actions": [ZH[3]], "risks": [ZH[4]], "nextSteps": [ZH[5]]},
        "预算",
    ),
    (
        "comma-only",
        ZH_COMMA_ONLY,
        {
            "decisions": ["最后我们决定把市场预算削减百分之十"],
            "actions": ["张三负责更新上线计划和目录页设计"],
            "risks": ["风险是供应商可能延期交付"],
            "nextSteps": ["下一步是下周再评审一次上线预算"],
        },
        "预算",
    ),
    (
        "comma-only traditional",
        [to_traditional(t) for t in ZH_COMMA_ONLY],
        {
            "decisions": ["最后我们决定把市场预算削减百分之十"],
            "actions": ["张三负责更新上线计划和目录页设计"],
            "risks": ["风险是供应商可能延期交付"],
            "nextSteps": ["下一步是下周再评审一次上线预算"],
        },
        "预算",
    ),
    (
        "mixed",
        MIXED,
        {
            "risks": [MIXED[0]],
            "decisions": [MIXED[1]],
            "actions": [MIXED[2]],
            "nextSteps": [MIXED[3]],
        },
        "feature",
    ),
    (
        "one sentence, two fields",
        ZH_MULTI_FIELD,
        {"decisions": ["我们决定削减预算"], "actions": ["张三负责更新计划。"]},
        "预算",
    ),
    (
        "english",
        EN,
        {"decisions": [EN[2]], "actions": [EN[3]], "risks": [EN[4]], "nextSteps": [EN[5]]},
        "budget",
    ),
    (
        "english comma-only",
        EN_COMMA_ONLY,
        {
            "decisions": ["in the end we decided to cut the marketing budget by ten percent"],
            "actions": ["Alice will update the launch plan by Friday"],
            "risks": ["there is a risk that the vendor delays the launch"],
            "nextSteps": ["next week we review the launch budget again"],
        },
        "budget",
    ),
]


def _title_words(title: str) -> list[str]:
    for prefix, sep in (("会议：", "、"), ("Meeting: ", ", ")):
        if title.startswith(prefix):
            return title[len(prefix) :].split(sep)
    return []


def _jieba_words(texts: list[str]) -> set[str]:
    return {w.lower() for t in texts for w in jieba.lcut(to_simplified(t), HMM=False)}


@pytest.mark.parametrize("name,texts,fields,topic", BILINGUAL, ids=[case[0] for case in BILINGUAL])
def test_bilingual_cues_land_in_their_field(
    name: str, texts: list[str], fields: dict[str, list[str]], topic: str
) -> None:
    raw = summarize_local(texts)
    out = normalize_summary(raw, 60_000).model_dump()
    _check_contract(out)
    for f in ("decisions", "actions", "risks", "nextSteps"):
        assert out[f] == fields.get(f, []), f  # each cue clause in its field, nothing else
    simplified = [to_simplified(t) for t in texts]
    for f in ("bullets", "decisions", "actions", "risks", "nextSteps"):
        for item in out[f]:
            assert any(item in t for t in simplified), item  # extractive: never invented
            assert to_simplified(item) == item  # Chinese comes out Simplified
    words = _title_words(out["title"])
    assert topic in words, out["title"]
    vocabulary = _jieba_words(texts)
    for word in words:  # real words of the text, never character n-grams
        assert len(word) >= 2 and word.lower() in vocabulary, word


def test_title_is_made_of_words_not_bigrams() -> None:
    texts = [
        "目录页需要改版。",
        "目录页的图片太大了。",
        "我们决定重做目录页。",
        "图片的尺寸再看看。",
    ]
    out = normalize_summary(summarize_local(texts), 60_000).model_dump()
    assert "录页" not in out["title"]
    words = _title_words(out["title"])
    assert "目录" in words and set(words) <= _jieba_words(texts), out["title"]
    assert out["decisions"] == ["我们决定重做目录页。"]


def test_english_cue_next_to_chinese() -> None:
    """ "risk是…": a word boundary never matches between "k" and a CJK character."""
    out = summarize_local(["主要的risk是供应商", "我们agreed先做MVP", "Bob will负责测试"])
    assert out["risks"] == ["主要的risk是供应商"]
    assert out["decisions"] == ["我们agreed先做MVP"]
    assert out["actions"] == ["Bob will负责测试"]
    assert summarize_local(["whisky是好酒", "riskless plan"])["risks"] == []


def test_split_sentences_cuts_long_comma_only_utterances() -> None:
    (utterance,) = ZH_COMMA_ONLY
    clauses = split_sentences(ZH_COMMA_ONLY)
    assert len(clauses) >= 5 and all(c in utterance for c in clauses)
    assert split_sentences(["供应商可能延期，这是一个风险。"]) == ["供应商可能延期，这是一个风险。"]
    assert split_sentences(["你好。", "我們決定了！好"]) == ["你好。", "我们决定了！"]


def test_empty_and_cue_free_transcripts_invent_nothing() -> None:
    for texts in ([], [""], ["嗯。", "好的。"], ["ok.", "yes"]):
        out = normalize_summary(summarize_local(texts), 0).model_dump()
        _check_contract(out)
        assert all(out[f] == [] for f in ("decisions", "actions", "risks", "nextSteps"))
    out = summarize_local(["今天天气不错。", "我们聊聊周末的安排吧"])
    assert out["decisions"] == out["risks"] == out["nextSteps"] == []


def test_local_summary_of_an_hour() -> None:
    """900 segments, English and Traditional Chinese (the speed is in bench/meeting.py)."""
    texts = [f"{EN[i % 6]} Item {i} about topic {i % 17}." for i in range(900)]
    out = normalize_summary(summarize_local(texts), 3_600_000).model_dump()
    _check_contract(out)
    assert out["duration"] == "01:00:00"
    zh = [to_traditional(f"{ZH[i % 6][:-1]}，第{i}项。") for i in range(900)]
    out = normalize_summary(summarize_local(zh), 3_600_000).model_dump()
    _check_contract(out)
    assert len(out["decisions"]) == 4 and all("决定" in d for d in out["decisions"])
    for f in ("title", "bullets", "decisions", "actions", "risks", "nextSteps"):
        for item in [out[f]] if f == "title" else out[f]:
            assert to_simplified(item) == item


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.text(
                alphabet="我們決定負責風險下一步預算上線會議，、。！ risk是will next", max_size=150
            ),
            st.sampled_from(EN + ZH + MIXED + ZH_COMMA_ONLY + EN_COMMA_ONLY),
            st.text(max_size=200),
        ),
        max_size=30,
    )
)
def test_every_item_comes_from_the_transcript(texts: list[str]) -> None:
    raw = summarize_local(texts)
    simplified = [to_simplified(t) for t in texts]
    for f in ("bullets", "decisions", "actions", "risks", "nextSteps"):
        assert len(raw[f]) == len(set(raw[f]))
        for item in raw[f]:
            assert item and any(item in t for t in simplified), item
    for word in _title_words(raw["title"]):
        assert any(word in t.lower() for t in simplified), raw["title"]


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
