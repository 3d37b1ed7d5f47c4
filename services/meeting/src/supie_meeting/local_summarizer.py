"""A local extractive summarizer for Chinese (Simplified or Traditional), English and mixed text.

Used when no LLM is configured and whenever the LLM fails. Everything it returns is a sentence,
clause or word taken from the transcript, so it cannot invent content:

- the text is converted to Simplified Chinese first (whisper often writes Traditional), so cue
  phrases match either script and a Chinese summary always comes out in Simplified;
- sentences end at 。！？!?；;… or ". "; a long sentence, or one that carries cues of several
  fields, is cut further at ，,、 (whisper often writes a whole utterance with commas only), and
  a short clause stays with its neighbour unless they belong to different fields;
- decisions / risks / next steps / actions: clauses carrying cue phrases (决定, 风险, 下一步,
  负责, "we decided", "risk", "next", "will", ...), each in the first field whose cue matches;
  English cues are delimited by ASCII letters, so "risk是…" matches as well as "the risk is";
- bullets: the most central clauses (sharing the most recurring words with the rest);
- title: the dominant recurring content words: Chinese words from jieba's dictionary (no
  character n-grams, so never a non-word like "录页"), English words off a stopword list.

jieba's dictionary takes about a second to load: it is loaded once, lazily, by the first summary
of Chinese text (callers run :func:`summarize_local` in a worker thread) or ahead of time by
:func:`warm_up`, which a service may run with ``asyncio.to_thread`` at start.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from supie_common.text import has_cjk, to_simplified

__all__ = ["summarize_local", "split_sentences", "detect_language", "warm_up"]

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_LATIN_LETTER = re.compile(r"[A-Za-z]")
_WORD = re.compile(r"[a-z0-9][a-z0-9'\-]*")
_SENTENCE_END = re.compile(r"(?<=[。！？!?；;…])|(?<=\.)\s+|\n+")
_CLAUSE_SEP = re.compile(r"(\s*[，,、][\s，,、]*)")
_EDGE = " \t,，、"

# A sentence longer than this (characters for Chinese, words for English) is cut into clauses.
_LONG_ZH_CHARS = 36
_LONG_EN_WORDS = 20
# A clause shorter than this is kept with its neighbour ("供应商可能延期，这是一个风险").
_SHORT_ZH_CHARS = 8
_SHORT_EN_WORDS = 4

_EN_STOP = frozenset(
    """a about above after again all also am an and any are as at be because been before being
    below between both but by can could did do does doing done down during each few for from
    further get got had has have having he her here hers him his how i if in into is it its itself
    just let like me more most my no nor not now of off ok okay on once only or other our ours out
    over own really right same she should so some such than that the their theirs them then there
    these they this those through to too under until up us very was we were what when where which
    while who whom why will with would yeah yes you your yours i'm it's that's we'll we're i'll
    you're they're don't can't won't there's let's going gonna think know well um uh so also maybe
    thing things something one two lot bit kind sort need needs want make sure point today
    meeting meetings decided decide decision agreed approved risk risks risky concern concerns
    blocker blockers blocked worried delay delays next step steps follow action actions item items
    responsible owner assigned please last first still yet much many every even back way time
    times say said says week""".split()
)
# Function words, fillers and the cue words themselves: none of them makes a topic.
_ZH_STOP = frozenset(
    """我们 你们 他们 她们 它们 咱们 大家 各位 这个 那个 这些 那些 这样 那样 这么 那么 这里 那里
    这边 那边 就是 然后 一个 一下 一些 一点 有点 没有 什么 怎么 为什么 可以 因为 所以 但是 如果
    还是 已经 现在 今天 明天 昨天 自己 时候 知道 觉得 认为 应该 需要 可能 问题 还有 或者 而且
    并且 以及 比如 其实 非常 比较 特别 一直 不过 只是 进行 东西 事情 起来 出来 一样 一起 之后
    之前 以后 以前 里面 方面 情况 目前 对于 关于 这次 本次 那次 上次 下次 这种 那种 一种 是不是
    有没有 的话 好的 好吧 嗯嗯 讨论 会议 开会 决定 决议 确定 同意 通过 拍板 敲定 结论 负责 跟进
    安排 落实 提交 待办 完成 风险 隐患 担心 延期 阻塞 延误 来不及 瓶颈 下一步 接下来 后续 下周
    下个月 阶段 计划 一定 肯定 希望 主要 我们的 百分之""".split()
)
# Dictionary entries that start or end with a particle ("的话", "了解了") are not topics, nor
# those that start with a negation ("不够", "没用").
_CJK_STOP_EDGE = re.compile(r"^[的了是在和与及就都也还又吗呢吧啊不没别]|[的了吗呢吧啊么]$")

# Ordered: a clause goes to the first field whose cue it carries. English cues are delimited by
# ASCII letters, not \b: "risk是…" has no \b between "k" and "是" (both are \w).
_A, _Z = r"(?<![a-z])", r"(?![a-z])"
_CUES: dict[str, re.Pattern[str]] = {
    "decisions": re.compile(
        r"决定|决议|(?<!不)确定|(?<!不)同意|通过了|定下来|拍板|敲定|结论是|达成一致|就这么定|选定"
        rf"|{_A}(?:(?:we )?(?:have )?decided|decisions?|agreed|approved|go(?:ing)? with"
        rf"|settled on|concluded){_Z}"
    ),
    "risks": re.compile(
        r"风险|隐患|担心|担忧|延期|阻塞|延误|来不及|瓶颈|不确定|卡住|危险"
        rf"|{_A}(?:risks?|risky|concerns?|concerned|blockers?|blocked|worried|worry|delays?"
        rf"|delayed|slips?|danger|uncertain){_Z}"
    ),
    "nextSteps": re.compile(
        r"下一步|接下来|下次|后续|下周|下个月|下阶段|下一阶段"
        rf"|{_A}(?:next|going forward|after that){_Z}"
    ),
    "actions": re.compile(
        r"负责|跟进|安排|落实|提交|待办|去做|完成|请大家|请在|行动项|截止"
        rf"|{_A}(?:will|action items?|responsible|owner|assigned|take care of|to-?do|needs? to"
        rf"|follow[- ]ups?"
        rf"|has to|please|make sure){_Z}|'ll{_Z}"
    ),
}
_LIMITS = {"bullets": 6, "decisions": 4, "risks": 4, "nextSteps": 4, "actions": 4}

_segmenter: Any = None
_segmenter_lock = threading.Lock()


def warm_up() -> None:
    """Load jieba's dictionary now (about a second of CPU): call it off the event loop."""
    _jieba()


def _jieba() -> Any:
    global _segmenter
    if _segmenter is None:
        with _segmenter_lock:
            if _segmenter is None:
                with warnings.catch_warnings():  # jieba 0.42 has invalid escapes in its source
                    warnings.simplefilter("ignore")
                    import jieba

                jieba.setLogLevel(logging.WARNING)
                tokenizer = jieba.Tokenizer()
                tokenizer.initialize()
                _segmenter = tokenizer
    return _segmenter


def detect_language(text: str) -> str:
    """ "zh" when CJK characters make up a notable share of the letters, else "en"."""
    cjk = len(_CJK.findall(text))
    latin = len(_LATIN_LETTER.findall(text))
    return "zh" if cjk and cjk * 3 >= latin else "en"


def _field(clause: str) -> str | None:
    low = clause.lower()
    for field, cue in _CUES.items():
        if cue.search(low):
            return field
    return None


def _fields(sentence: str) -> set[str]:
    low = sentence.lower()
    return {field for field, cue in _CUES.items() if cue.search(low)}


def _is_long(sentence: str) -> bool:
    if has_cjk(sentence):
        return len(_CJK.findall(sentence)) > _LONG_ZH_CHARS
    return len(sentence.split()) > _LONG_EN_WORDS


def _is_short(clause: str) -> bool:
    if has_cjk(clause):
        return len(_CJK.findall(clause)) < _SHORT_ZH_CHARS
    return len(clause.split()) < _SHORT_EN_WORDS


def _clauses(sentence: str) -> Iterator[str]:
    """The sentence whole, or cut at its commas when it is long or mixes fields; every piece is
    an exact substring of the sentence (separators kept when clauses are merged)."""
    if not _is_long(sentence) and len(_fields(sentence)) <= 1:
        yield sentence
        return
    parts = _CLAUSE_SEP.split(sentence)
    merged: list[tuple[str, str | None]] = []  # (text, field)
    for i in range(0, len(parts), 2):
        text = parts[i]
        if not text.strip(_EDGE):
            continue
        field = _field(text)
        if merged:
            prev, prev_field = merged[-1]
            if (_is_short(text) or _is_short(prev)) and (
                field is None or prev_field is None or field == prev_field
            ):
                merged[-1] = (prev + parts[i - 1] + text, prev_field or field)
                continue
        merged.append((text, field))
    for text, _ in merged:
        yield text


def split_sentences(texts: Sequence[str]) -> list[str]:
    """Sentences and clauses, in order, in Simplified Chinese where the text is Chinese."""
    out: list[str] = []
    for raw in texts:
        text = to_simplified(raw)
        for sentence in _SENTENCE_END.split(text):
            sentence = sentence.strip(_EDGE)
            if len(sentence) < 2:
                continue
            for clause in _clauses(sentence):
                clause = clause.strip(_EDGE)
                if len(clause) >= 2:
                    out.append(clause)
    return out


def _english_words(text: str) -> Iterator[str]:
    for w in _WORD.findall(text.lower()):
        w = w.strip("'-")
        if len(w) > 2 and w not in _EN_STOP and not w.isdigit():
            yield w


def _words(sentence: str) -> list[str]:
    """The content words of a sentence: jieba dictionary words of two or more characters for
    Chinese (off a stopword list), English words of three or more letters off a stopword list."""
    if not has_cjk(sentence):
        return list(_english_words(sentence))
    out: list[str] = []
    for token in _jieba().lcut(sentence, HMM=False):
        if _CJK.match(token):
            if len(token) >= 2 and token not in _ZH_STOP and not _CJK_STOP_EDGE.search(token):
                out.append(token)
        else:
            out.extend(_english_words(token))
    return out


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
    seen: set[str] = set()
    for s in ranked:
        if s.text in seen or any(
            len(s.terms & c.terms) / max(len(s.terms | c.terms), 1) > 0.6 for c in chosen
        ):
            continue  # near-duplicate of a chosen bullet
        chosen.append(s)
        seen.add(s.text)
        if len(chosen) >= limit:
            break
    if not chosen:  # nothing recurs (tiny meetings): keep the longest sentences
        for s in sorted(sentences, key=lambda s: (-len(s.text), s.index)):
            if s.text not in seen:
                chosen.append(s)
                seen.add(s.text)
            if len(chosen) >= limit:
                break
    return [s.text for s in sorted(chosen, key=lambda s: s.index)]


def _title(df: Counter[str], language: str) -> str:
    top = [t for t, c in df.most_common(12) if c > 1][:3]
    prefix, sep = ("会议：", "、") if language == "zh" else ("Meeting: ", ", ")
    chosen: list[str] = []
    for term in top:  # as many dominant words as fit the 30-character title
        if len(prefix + sep.join([*chosen, term])) > 30:
            break
        chosen.append(term)
    return prefix + sep.join(chosen) if chosen else ""


def summarize_local(texts: Sequence[str]) -> dict[str, Any]:
    """Raw summary fields (title + five lists) for the normaliser; empty input gives empty lists."""
    raw = split_sentences(texts)
    language = detect_language(" ".join(raw))
    sentences = [_Sentence(i, t, frozenset(_words(t))) for i, t in enumerate(raw)]
    result: dict[str, Any] = {f: [] for f in _LIMITS}
    fallback_title = "会议纪要" if language == "zh" else "Meeting notes"
    for s in sentences:
        field = _field(s.text)
        if field is not None and len(result[field]) < _LIMITS[field]:
            if s.text not in result[field]:
                result[field].append(s.text)
    sentences = [s for s in sentences if s.terms]
    if not sentences:
        result["title"] = fallback_title
        return result
    df: Counter[str] = Counter()
    for s in sentences:
        df.update(s.terms)
    result["bullets"] = _central(sentences, df, _LIMITS["bullets"])
    result["title"] = _title(df, language) or fallback_title
    return result
