"""Voice and typed commands: one phrase table for meeting and working mode (SPEC §5, §7).

A command fires only when the utterance *is* the command:

1. The text is folded (:func:`supie_common.text.fold_for_matching`): full-width to ASCII,
   Traditional to Simplified, lower case, punctuation dropped, so whisper's casing and
   punctuation and either Chinese script give the same string.
2. A task ordinal (第二个任务, 任务一, 3号任务, "task 2", "the second task", "number three")
   is cut out into an ordinal slot, for the working-mode phrases that take one. Two ordinals,
   or one outside 1..99, make the utterance no command (which task is meant is unknown).
3. The whole utterance must be: at most :data:`MAX_LEAD` filler units, one table phrase, at
   most :data:`MAX_TAIL` filler units. Filler is a closed list of discourse words, addressing
   and particles (好的 / 那我们就 / 小智 ... 吧 / 了 / 啊 / 呢; "ok" / "let's" / "can you" ...
   "now" / "please"), of either language. So 好的，结束会议 / 那我们就结束会议吧 /
   "ok, end the meeting" / "let's finalize the meeting now" / "好的, end the meeting" are
   commands, and a sentence that merely contains the words (我们讨论一下新的工作模式怎么设计,
   我们开始总结一下上周的问题) is not.
4. No negation around the phrase: 不 / 别 / 没 / 甭 / 勿 / 无需 (so 先别, 不要, 不用, 不必,
   还没, 暂时不 ...), "not" / "no" / "never" / "-n't" (so "don't", "shouldn't", "no need to").
   Negations are not filler either, so this holds twice over (先别急着结束会议,
   "we should not end the meeting yet"). A question is no command: 吗 is not filler.

The phrase decides the intent (and the target mode) and the command's language, so mixed
utterances ("ok，结束会议") work. Matching is one precompiled expression per set of intents and
script (cached), run once per utterance; texts too long to be a command are refused up front.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Literal

from .text import fold_for_matching

__all__ = [
    "Intent",
    "VoiceCommand",
    "TargetMode",
    "Language",
    "MEETING_INTENTS",
    "WORKING_INTENTS",
    "ALL_INTENTS",
    "MAX_LEAD",
    "MAX_TAIL",
    "PHRASES",
    "FILLER",
    "Phrase",
    "parse_command",
    "parse_ordinal",
]

TargetMode = Literal["meeting", "working", "coding"]
Language = Literal["zh", "en"]


class Intent(StrEnum):
    FINALIZE = "finalize"  # end the meeting and summarise
    SWITCH_MODE = "mode_switch"  # enter a mode (target_mode)
    ASSIGN = "assign"  # claim a task
    COMPLETE = "complete"  # mark a task done
    REFRESH = "refresh"  # pull the task list


@dataclass(frozen=True, slots=True)
class VoiceCommand:
    intent: Intent
    target_mode: TargetMode | None = None  # for SWITCH_MODE
    ordinal: int | None = None  # 1-based task ordinal, when one was said
    keyword: str = ""  # the table phrase that matched
    language: Language = "zh"


MEETING_INTENTS: frozenset[Intent] = frozenset({Intent.FINALIZE, Intent.SWITCH_MODE})
WORKING_INTENTS: frozenset[Intent] = frozenset(
    {Intent.ASSIGN, Intent.COMPLETE, Intent.REFRESH, Intent.SWITCH_MODE}
)
ALL_INTENTS: frozenset[Intent] = frozenset(Intent)

MAX_LEAD = 5  # filler units before the phrase ("short utterance")
MAX_TAIL = 4  # filler units after it
_MAX_RAW_CHARS = 300  # longer texts are never a command (and cost nothing to refuse)
_MAX_FOLDED_CHARS = 120
_MAX_ORDINAL = 99

# The ordinal slot: the folded text has the ordinal replaced by this private-use character.
_SLOT = "\ue000"


@dataclass(frozen=True, slots=True)
class Phrase:
    """One table row: ``pattern`` is a regular expression over folded text, where ``ORD`` stands
    for the ordinal slot and ``OBJ`` for "the task" in any of its spoken forms (ordinal or not)."""

    intent: Intent
    label: str
    language: Language
    pattern: str
    target_mode: TargetMode | None = None


# -- the object of a task command ----------------------------------------------------------------
_OBJ_ZH = "(?:(?:把|将)?(?:ORD|这个任务|这项任务|这条任务|该任务|这个|这条|这项|任务))"
_OBJ_EN = "(?:ORD|it|this|that|this one|that one|the task|this task|that task|my task|a task|task)"

# -- mode names ----------------------------------------------------------------------------------
_ENTER_ZH = (
    "(?:进入|切换到|切换至|切换成|切到|换到|换成|转到|改成|打开|开启|启动|开始|回到|返回|进|去|用)?"
)
_ENTER_EN = (
    "(?:(?:enter|switch to|switch into|switch back to|go to|go into|go back to|change to|turn on"
    "|start|open|activate|begin|back to|return to|use) )?(?:the )?"
)


_F, _S, _A, _C, _R = (
    Intent.FINALIZE,
    Intent.SWITCH_MODE,
    Intent.ASSIGN,
    Intent.COMPLETE,
    Intent.REFRESH,
)

# fmt: off
PHRASES: tuple[Phrase, ...] = (
    # ---- finalize (SPEC §5; fork-protocol §3.3) ----
    Phrase(_F, "结束会议", "zh",
           "结束(?:一下)?(?:本次|这次|这个|这场|本场|今天的|今天|我们的)?(?:会议|会)"),
    Phrase(_F, "会议结束", "zh", "(?:本次|这次|今天的)?会议(?:到此|就此|现在|就)?结束"),
    Phrase(_F, "散会", "zh", "散会"),
    Phrase(_F, "停止录制", "zh", "(?:停止|结束)(?:一下)?(?:录制|录音)"),
    Phrase(_F, "开始总结", "zh", "(?:开始|进行)(?:会议)?总结"),
    Phrase(_F, "总结会议", "zh", "总结(?:一下)?(?:本次|这次|今天的)?会议(?:内容)?"),
    Phrase(_F, "出个纪要", "zh", "出(?:个|一个|一份|份)(?:会议)?(?:纪要|总结)"),
    Phrase(_F, "生成纪要", "zh",
           "生成(?:一下)?(?:一份|一个|个)?(?:会议)?(?:纪要|总结|摘要|记录)"),
    Phrase(_F, "整理纪要", "zh", "整理(?:一下)?(?:会议)?纪要"),
    Phrase(_F, "end the meeting", "en",
           "(?:end|finish|close|conclude|terminate|stop|wrap up)"
           " (?:the |this |our |today's )?meeting"),
    Phrase(_F, "wrap up", "en", "wrap (?:it |this |things |the meeting )?up"),
    Phrase(_F, "finalize meeting", "en",
           "finali[sz]e(?: the| this| our)?(?: meeting)?(?: notes| minutes| summary)?"),
    Phrase(_F, "stop recording", "en", "(?:stop|end|finish) (?:the )?recording"),
    Phrase(_F, "start summary", "en", "start (?:the |a )?summary|start summari[sz]ing"),
    Phrase(_F, "make a summary", "en",
           "(?:make|create|write|give me|give us|produce|prepare)"
           " (?:a |the |us a |me a )?(?:meeting )?summary"),
    Phrase(_F, "generate minutes", "en",
           "generate (?:the |a )?(?:meeting )?(?:minutes|summary|notes)"),
    Phrase(_F, "summarize the meeting", "en", "summari[sz]e (?:the |this |our )?meeting"),
    Phrase(_F, "meeting is over", "en",
           "(?:the |this )?meeting(?: is)? (?:over|done|finished|adjourned)"),
    Phrase(_F, "adjourn", "en", "adjourn(?: the meeting)?"),
    # ---- mode switch (fork-protocol §3.1) ----
    Phrase(_S, "进入工作模式", "zh", _ENTER_ZH + "(?:工作|办公)模式", "working"),
    Phrase(_S, "进入会议模式", "zh", _ENTER_ZH + "(?:会议|开会)模式", "meeting"),
    Phrase(_S, "开始会议", "zh", "(?:开始|进入)(?:会议|开会)|开会", "meeting"),
    Phrase(_S, "进入编程模式", "zh", _ENTER_ZH + "(?:编程|编码|代码|写代码|开发)模式", "coding"),
    Phrase(_S, "working mode", "en", _ENTER_EN + "(?:working|work) mode", "working"),
    Phrase(_S, "meeting mode", "en", _ENTER_EN + "meeting mode", "meeting"),
    Phrase(_S, "start a meeting", "en",
           "(?:start|begin|open) (?:a |the |new |a new )?meeting", "meeting"),
    Phrase(_S, "coding mode", "en",
           _ENTER_EN + "(?:coding|code|programming|developer) mode", "coding"),
    # ---- assign (fork-protocol §3.4) ----
    Phrase(_A, "认领任务", "zh", "OBJ?(?:我)?(?:来)?认领(?:一下)?OBJ?"),
    Phrase(_A, "领取任务", "zh", "OBJ?(?:我)?(?:来)?领(?:取)?(?:一下)?OBJ?"),
    Phrase(_A, "接手", "zh", "OBJ?(?:我)?(?:来)?(?:接手|接收|接受|接下|承接)(?:一下)?OBJ?"),
    Phrase(_A, "我来做", "zh",
           "OBJ?(?:我来做|我来负责|我来处理|我来跟进|我负责|我来|我做|我接|归我)OBJ?"),
    Phrase(_A, "分配给我", "zh", "OBJ?(?:分配|指派|分|交|派|给)给我"),
    Phrase(_A, "claim task", "en", "(?:claim|grab|take|pick up|take on|accept|pick) OBJ|claim"),
    Phrase(_A, "assign to me", "en",
           "(?:assign|give) (?:OBJ )?to me|give me (?:ORD|the task|that task|this task)"),
    # The subject is optional: "i'll" / "let me" / "i want to" are lead filler, and the lead never
    # gives back what it took.
    Phrase(_A, "i'll take it", "en",
           "(?:i )?"
           "(?:do|handle|take care of|own|pick up|work on|grab|take on) OBJ"),
    Phrase(_A, "it's mine", "en",
           "(?:ORD|it|this|that|this one|this task|that task)(?: is|'s) mine"),
    # ---- complete ----
    Phrase(_C, "完成任务", "zh", "(?:我)?(?:已经)?完成(?:了)?OBJ?|OBJ(?:已经)?(?:已)?完成"),
    Phrase(_C, "标记完成", "zh", "OBJ?标(?:记)?OBJ?(?:为|成)?(?:已)?完成"),
    Phrase(_C, "做完了", "zh",
           "(?:我|我们)?(?:已经)?OBJ?(?:做完|干完|弄完|办完|写完)(?:了)?OBJ?"),
    Phrase(_C, "搞定了", "zh", "(?:我|我们)?OBJ?(?:搞定|完事|完工|弄好|做好)(?:了)?"),
    Phrase(_C, "complete task", "en",
           "(?:complete|finish|close|check off|tick off|cross off) OBJ|complete"),
    Phrase(_C, "mark done", "en", "mark (?:OBJ )?(?:as )?(?:done|complete|completed|finished)"),
    Phrase(_C, "task is done", "en",
           "(?:ORD|the task|this task|that task|my task|task|it|this|that|this one)"
           "(?: is| has been|'s)? (?:done|complete|completed|finished)"),
    Phrase(_C, "i'm done", "en",
           "(?:i'm|i am|i've|i have|we're|we are|we've|we have)(?: all)?"
           " (?:done|finished|completed)(?: (?:with )?OBJ)?"
           "|(?:i |we )?(?:finished|completed) OBJ|done with OBJ"),
    # ---- refresh ----
    Phrase(_R, "刷新任务", "zh", "刷新(?:一下)?(?:我的)?(?:任务)?(?:列表|清单)?"),
    Phrase(_R, "拉取任务", "zh", "拉取(?:一下)?(?:最新的|最新)?(?:任务)?(?:列表|清单)?"),
    Phrase(_R, "同步任务", "zh", "同步(?:一下)?(?:任务)(?:列表|清单)?"),
    Phrase(_R, "更新任务列表", "zh", "更新(?:一下)?(?:任务)?(?:列表|清单)"),
    Phrase(_R, "获取任务", "zh", "获取(?:一下)?(?:最新的|最新)?任务(?:列表|清单)?"),
    Phrase(_R, "重新加载", "zh", "重新加载(?:一下)?(?:任务)?(?:列表|清单)?"),
    Phrase(_R, "查看任务", "zh",
           "(?:查看|看看|看一下|显示)(?:一下)?(?:我的|所有的|所有)?任务(?:列表|清单)?"),
    Phrase(_R, "refresh", "en", "refresh(?: the| my)?(?: task| tasks)?(?: list)?"),
    Phrase(_R, "pull", "en", "pull(?: the| my)?(?: latest)?(?: task| tasks)?(?: list)?"),
    Phrase(_R, "reload", "en", "reload(?: the| my)?(?: task| tasks)?(?: list)?"),
    Phrase(_R, "sync tasks", "en", "sync(?: the| my)?(?: task| tasks)?(?: list)?"),
    Phrase(_R, "update the list", "en", "update (?:the |my )?(?:task )?list"),
    Phrase(_R, "show my tasks", "en",
           "(?:show|list|get|fetch)(?: me)?(?: the| my| all| all the)?(?: latest)?"
           " (?:tasks|task list|todo list|to do list)"),
)

# -- filler: what may surround a phrase ----------------------------------------------------------
_LEAD_ZH = """
    好的 好吧 好了 好 行 行了 可以 可以了 嗯嗯 嗯 呃 额 啊 哦 噢 喂 那么 那就 那我们 那 就
    我们来 我们 咱们 大家 各位 现在 今天的 今天 先 请你 请 麻烦你 麻烦 帮我们 帮我 帮忙
    让我们 来 下面 然后 最后 马上 立刻 直接 赶紧 准备 我想 我要 要 想 差不多了 时间差不多了
    时间到了 今天就到这里 就到这里 到这里 小智 你好 谢谢大家 谢谢 大家辛苦了 辛苦了 这样吧
    这样 一起 再
""".split()
_TAIL_ZH = """
    吧 了 啊 呀 呢 哈 嘛 啦 哦 喔 噢 嗯 咯 喽 一下 好的 好 谢谢大家 谢谢你 谢谢 大家辛苦了
    辛苦了 现在 马上 立刻 就好 就行 就可以了 可以了 小智
""".split()
_LEAD_EN = [
    "ok", "okay", "o k", "alright", "all right", "right", "so", "well", "now", "then", "and",
    "um", "uh", "er", "hmm", "oh", "hey", "hi", "hello", "yes", "yeah", "yep", "good", "great",
    "fine", "cool", "perfect", "guys", "everyone", "everybody", "folks", "team", "please",
    "kindly", "just", "let's", "lets", "let us", "we can", "we'll", "we will", "i'll", "i will",
    "i want to", "i'd like to", "i would like to", "we want to", "we'd like to", "can you",
    "could you", "would you", "will you", "go ahead and", "time to", "it's time to", "let me",
    "i'm going to", "i am going to", "we're going to", "we are going to", "i can", "thanks",
    "thank you", "xiaozhi", "hey xiaozhi", "that's all", "that's it", "that is all", "time's up",
]
_TAIL_EN = [
    "now", "please", "thanks", "thank you", "then", "for today", "for now", "today", "right now",
    "already", "everyone", "everybody", "guys", "folks", "team", "ok", "okay", "here",
    "immediately", "for me", "too", "as well", "xiaozhi",
]
# fmt: on
FILLER: dict[Language, tuple[frozenset[str], frozenset[str]]] = {
    "zh": (frozenset(_LEAD_ZH), frozenset(_TAIL_ZH)),
    "en": (frozenset(_LEAD_EN), frozenset(_TAIL_EN)),
}

# Negation, searched in what surrounds the phrase. 差不多 ("about time") is not one.
_NEGATION_ZH = re.compile(r"(?<!差)不(?!多)|别|没|甭|勿|莫|无需|无须|未|休想")
_NEGATION_EN = re.compile(
    r"\b(?:not|no|never|nope|nah|don't|dont|without|cannot|neither|nor)\b|n't\b"
)

# -- ordinals ------------------------------------------------------------------------------------
_ZH_DIGITS = dict(zip("零一二三四五六七八九", range(10), strict=True)) | {"两": 2}
_EN_NUMBERS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5,
    "sixth": 6, "seventh": 7, "eighth": 8, "ninth": 9, "tenth": 10,
}  # fmt: skip
_ZH_NUM = "[0-9]{1,3}|[零一二两三四五六七八九十]{1,3}"
_EN_NUM = "[0-9]{1,3}|one|two|three|four|five|six|seven|eight|nine|ten"
_EN_NTH = (
    "[0-9]{1,3}(?:st|nd|rd|th)|first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth"
)
# The number is captured in group "n"; "一下", "一些", "一起" ... after 任务 are words, not numbers.
_ORDINAL_ZH = re.compile(
    rf"第 ?(?P<n>{_ZH_NUM}) ?(?:个|项|条|号|件)?(?:任务|事项)?"
    rf"|(?:任务|事项) ?(?:编号|号)? ?(?P<m>{_ZH_NUM})(?![下些起样直共定般切旦])(?: ?号)?"
    rf"|(?P<k>{_ZH_NUM}) ?号(?:任务)?"
)
_ORDINAL_EN = re.compile(
    rf"(?<![a-z0-9'])(?:the (?P<n>{_EN_NTH})(?: (?:task|item|one|todo))?"
    rf"|(?P<m>{_EN_NTH}) (?:task|item|todo)"
    rf"|(?:task|item|todo|ticket|number)(?: number)? ?(?P<k>{_EN_NUM}))(?![a-z0-9'])"
)
_ORDINALS = {"zh": (_ORDINAL_ZH,), "en": (_ORDINAL_EN,), "mixed": (_ORDINAL_ZH, _ORDINAL_EN)}
_LATIN = re.compile("[a-z]")
_ORDINAL_INTENTS = frozenset({Intent.ASSIGN, Intent.COMPLETE})


def parse_ordinal(number: str) -> int | None:
    """ "3", "三", "十二", "两", "third", "3rd", "three" → 3, 3, 12, 2, 3, 3, 3; else None."""
    number = number.strip()
    if number in _EN_NUMBERS:
        return _EN_NUMBERS[number]
    digits = number.rstrip("stndrh") if number[:1].isdigit() else number
    if digits.isdigit():
        return int(digits)
    if not number or any(ch not in _ZH_DIGITS and ch != "十" for ch in number):
        return None
    if "十" not in number:
        return _ZH_DIGITS[number] if len(number) == 1 else None
    tens, _, ones = number.partition("十")
    if len(tens) > 1 or len(ones) > 1 or "十" in ones:
        return None
    return (_ZH_DIGITS[tens] if tens else 1) * 10 + (_ZH_DIGITS[ones] if ones else 0)


# -- compiling -----------------------------------------------------------------------------------
def _alternatives(words: Collection[str]) -> str:
    # Longest first so that "好的" is tried before "好"; spaces inside a filler stay literal.
    return "|".join(re.escape(w) for w in sorted(set(words), key=lambda w: (-len(w), w)))


def _expand(phrase: Phrase) -> str:
    obj = _OBJ_ZH if phrase.language == "zh" else _OBJ_EN
    return phrase.pattern.replace("OBJ", obj).replace("ORD", _SLOT)


@lru_cache(maxsize=32)
def _compiled(
    intents: frozenset[Intent], script: Language | Literal["mixed"]
) -> tuple[re.Pattern[str], tuple[Phrase, ...]]:
    """One expression per set of intents and script: pure Chinese text is only tried against the
    Chinese rows and filler, ASCII text against the English ones, mixed text against both."""
    zh, en = script != "en", script != "zh"
    phrases = tuple(
        p for p in PHRASES if p.intent in intents and (zh if p.language == "zh" else en)
    )
    lead = _alternatives([*(_LEAD_ZH if zh else ()), *(_LEAD_EN if en else ())])
    tail = _alternatives([*(_TAIL_ZH if zh else ()), *(_TAIL_EN if en else ())])
    body = "|".join(f"(?P<p{i}>{_expand(p)})" for i, p in enumerate(phrases)) or "(?!)"
    # The lead is possessive: filler is tokenised longest first and never given back, which keeps
    # the match linear (no retry of every phrase after every way of splitting the filler).
    pattern = rf"(?:(?:{lead}) ?){{0,{MAX_LEAD}}}+(?:{body})(?: ?(?:{tail})){{0,{MAX_TAIL}}}"
    return re.compile(pattern), phrases


def _cut_ordinal(
    folded: str, regexes: tuple[re.Pattern[str], ...]
) -> tuple[str, int | None] | None:
    """The text with its one ordinal replaced by the slot; None when it has several, or one out of
    1..99 (which task is meant is then unknown)."""
    m: re.Match[str] | None = None
    for regex in regexes:
        hit = regex.search(folded)
        if hit is None:
            continue
        if m is not None or regex.search(folded, hit.end()) is not None:
            return None
        m = hit
    if m is None:
        return folded, None
    value = parse_ordinal(m["n"] or m["m"] or m["k"])
    if value is None or not 1 <= value <= _MAX_ORDINAL:
        return None
    return folded[: m.start()] + _SLOT + folded[m.end() :], value


def _negated(text: str) -> bool:
    return bool(_NEGATION_ZH.search(text) or _NEGATION_EN.search(text))


def parse_command(text: str, intents: Collection[Intent] = ALL_INTENTS) -> VoiceCommand | None:
    """The command this utterance is, among ``intents``; None when it is not one (see the module
    docstring for the rules). Never raises on any string."""
    if not text or len(text) > _MAX_RAW_CHARS:
        return None
    folded = fold_for_matching(text)
    if not folded or len(folded) > _MAX_FOLDED_CHARS:
        return None
    if folded.isascii():
        script: Language | Literal["mixed"] = "en"
    else:
        script = "mixed" if _LATIN.search(folded) else "zh"
    key = intents if isinstance(intents, frozenset) else frozenset(intents)
    ordinal: int | None = None
    if not _ORDINAL_INTENTS.isdisjoint(key):
        cut = _cut_ordinal(folded, _ORDINALS[script])
        if cut is None:
            return None
        folded, ordinal = cut
    regex, phrases = _compiled(key, script)
    m = regex.fullmatch(folded)
    if m is None or m.lastgroup is None:
        return None
    phrase = phrases[int(m.lastgroup[1:])]
    start, end = m.span(m.lastgroup)
    if _negated(folded[:start] + " " + folded[end:]):
        return None
    return VoiceCommand(
        intent=phrase.intent,
        target_mode=phrase.target_mode,
        ordinal=ordinal,
        keyword=phrase.label,
        language=phrase.language,
    )
