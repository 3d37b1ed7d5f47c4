"""A local extractive summarizer for Chinese and English transcripts.

Used when no LLM is configured and whenever the LLM fails. Everything it returns is a sentence
(or term) taken from the transcript, so it cannot invent content:
- bullets: the most central sentences (sharing the most recurring terms with the rest);
- decisions / risks / next steps / actions: sentences carrying cue phrases (决定, 风险, 下一步,
  负责, "we decided", "risk", "next", "will", ...);
- title: the dominant recurring terms.
Chinese has no spaces, so its terms are character bigrams (no dictionary needed).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["summarize_local", "split_sentences", "detect_language"]

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_CJK_RUN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+")
_WORD = re.compile(r"[a-z0-9][a-z0-9'\-]*")
_SENTENCE_END = re.compile(r"(?<=[。！？!?；;])|(?<=\.)\s+|\n+")

_EN_STOP = frozenset(
    """a about above after again all also am an and any are as at be because been before being
    below between both but by can could did do does doing done down during each few for from
    further get got had has have having he her here hers him his how i if in into is it its itself
    just let like me more most my no nor not now of off ok okay on once only or other our ours out
    over own really right same she should so some such than that the their theirs them then there
    these they this those through to too under until up us very was we were what when where which
    while who whom why will with would yeah yes you your yours i'm it's that's we'll we're i'll
    you're they're don't can't won't there's let's going gonna think know well um uh so also maybe
    thing things something one two lot bit kind sort need needs want make sure""".split()
)
_ZH_STOP_CHARS = frozenset(
    "的了是在我你他她它们这那就都也和与及吗呢吧啊嗯哦呀个一有不没很还要会说把被给对"
)
_ZH_STOP_BIGRAMS = frozenset(
    """我们 你们 他们 这个 那个 就是 然后 一个 没有 什么 可以 因为 所以 但是 如果 还是 已经
    现在 今天 大家 一下 这样 那么 自己 时候 知道 觉得 应该 需要 可能 问题 一些 这些 那些""".split()
)

# Ordered: the first category whose cue matches a sentence gets it.
_CUES: dict[str, tuple[re.Pattern[str], ...]] = {
    "decisions": (
        re.compile(r"决定|决议|确定|同意|通过了|定下来|拍板|敲定"),
        re.compile(
            r"\b(we )?(have )?decided\b|\bdecision\b|\bagreed\b|\bapproved\b|"
            r"\bgo(ing)? with\b|\bsettled on\b"
        ),
    ),
    "risks": (
        re.compile(r"风险|隐患|担心|延期|阻塞|延误|来不及|瓶颈"),
        re.compile(
            r"\brisks?\b|\brisky\b|\bconcerns?\b|\bblockers?\b|\bblocked\b|\bworried\b|"
            r"\bdelays?\b|\bslip\b"
        ),
    ),
    "nextSteps": (
        re.compile(r"下一步|接下来|下次|后续|下周|下个月|下阶段"),
        re.compile(r"\bnext\b|\bgoing forward\b|\bfollow[- ]up\b|\bafter that\b"),
    ),
    "actions": (
        re.compile(r"负责|跟进|安排|落实|提交|待办|去做|完成|请大家|请在"),
        re.compile(
            r"\bwill\b|'ll\b|\baction items?\b|\bresponsible\b|\bowner\b|\bassigned\b|"
            r"\btake care of\b|\bto-?do\b|\bneeds? to\b|\bhas to\b|\bplease\b|\bmake sure\b"
        ),
    ),
}
_LIMITS = {"bullets": 6, "decisions": 4, "risks": 4, "nextSteps": 4, "actions": 4}


def detect_language(text: str) -> str:
    """ "zh" when CJK characters make up a notable share of the letters, else "en"."""
    cjk = len(_CJK.findall(text))
    latin = len(re.findall(r"[A-Za-z]", text))
    return "zh" if cjk and cjk * 3 >= latin else "en"


def split_sentences(texts: Sequence[str]) -> list[str]:
    out: list[str] = []
    for text in texts:
        for part in _SENTENCE_END.split(text):
            part = part.strip(" \t,，、")
            if len(part) >= 2:
                out.append(part)
    return out


def _terms(sentence: str) -> list[str]:
    low = sentence.lower()
    terms = [w.strip("'-") for w in _WORD.findall(low)]
    terms = [w for w in terms if len(w) > 2 and w not in _EN_STOP and not w.isdigit()]
    for run in _CJK_RUN.findall(low):
        if len(run) == 1:
            continue
        for i in range(len(run) - 1):
            bigram = run[i : i + 2]
            if bigram in _ZH_STOP_BIGRAMS or (
                bigram[0] in _ZH_STOP_CHARS or bigram[1] in _ZH_STOP_CHARS
            ):
                continue
            terms.append(bigram)
    return terms


@dataclass
class _Sentence:
    index: int
    text: str
    terms: frozenset[str]
    score: float = 0.0


def _central(sentences: list[_Sentence], df: Counter[str], limit: int) -> list[str]:
    n = max(len(sentences), 1)
    for s in sentences:
        # Terms that recur across the meeting make a sentence central; one-off terms do not.
        shared = [t for t in s.terms if df[t] > 1]
        if not shared:
            s.score = 0.0
            continue
        weight = sum(math.log(1 + df[t]) * math.log(1 + n / df[t]) for t in shared)
        s.score = weight / math.sqrt(len(s.terms))
    ranked = sorted((s for s in sentences if s.score > 0), key=lambda s: (-s.score, s.index))
    chosen: list[_Sentence] = []
    for s in ranked:
        if any(len(s.terms & c.terms) / max(len(s.terms | c.terms), 1) > 0.6 for c in chosen):
            continue  # near-duplicate of a chosen bullet
        chosen.append(s)
        if len(chosen) >= limit:
            break
    if not chosen:  # nothing recurs (tiny meetings): keep the longest sentences
        chosen = sorted(sentences, key=lambda s: (-len(s.text), s.index))[:limit]
    return [s.text for s in sorted(chosen, key=lambda s: s.index)]


def _title(df: Counter[str], language: str) -> str:
    top = [t for t, c in df.most_common(12) if c > 1][:3]
    prefix, sep = ("会议：", "、") if language == "zh" else ("Meeting: ", ", ")
    title = ""
    for term in top:  # as many dominant terms as fit the 30-character title
        candidate = prefix + sep.join([*filter(None, title[len(prefix) :].split(sep)), term])
        if len(candidate) > 30:
            break
        title = candidate
    return title


def summarize_local(texts: Sequence[str]) -> dict[str, Any]:
    """Raw summary fields (title + five lists) for the normaliser; empty input gives empty lists."""
    joined = " ".join(texts)
    language = detect_language(joined)
    raw = split_sentences(texts)
    sentences = [_Sentence(i, t, frozenset(_terms(t))) for i, t in enumerate(raw)]
    sentences = [s for s in sentences if s.terms]
    result: dict[str, Any] = {f: [] for f in _LIMITS}
    result["title"] = ""
    if not sentences:
        result["title"] = "会议纪要" if language == "zh" else "Meeting notes"
        return result
    df: Counter[str] = Counter()
    for s in sentences:
        df.update(s.terms)
    result["bullets"] = _central(sentences, df, _LIMITS["bullets"])
    for s in sentences:
        low = s.text.lower()
        for field, patterns in _CUES.items():
            if any(p.search(low) for p in patterns):
                if len(result[field]) < _LIMITS[field] and s.text not in result[field]:
                    result[field].append(s.text)
                break
    result["title"] = _title(df, language) or ("会议纪要" if language == "zh" else "Meeting notes")
    return result
