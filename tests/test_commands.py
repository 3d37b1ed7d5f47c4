"""The shared voice-command phrase table (supie_common.commands): table tests in Chinese and
English, the cases of issue 10 "Why", ordinals, the intent filter, and properties (negation never
yields a command, a sentence that merely contains a phrase is none, any text is handled)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from supie_common.commands import (
    ALL_INTENTS,
    FILLER,
    MEETING_INTENTS,
    PHRASES,
    WORKING_INTENTS,
    Intent,
    VoiceCommand,
    parse_command,
    parse_ordinal,
)
from supie_common.text import fold_for_matching, to_traditional

F, S, A, C, R = Intent.FINALIZE, Intent.SWITCH_MODE, Intent.ASSIGN, Intent.COMPLETE, Intent.REFRESH

# (utterance, intent, target_mode or ordinal) -- the third item is the target mode for S, the
# ordinal for A / C, None otherwise.
ZH_POSITIVE: list[tuple[str, Intent, str | int | None]] = [
    ("结束会议", F, None),
    ("好的，结束会议", F, None),
    ("那我们就结束会议吧", F, None),
    ("结束本次会议", F, None),
    ("结束一下会议", F, None),
    ("好，结束今天的会议吧。", F, None),
    ("停止录制", F, None),
    ("停止录音吧", F, None),
    ("开始总结", F, None),
    ("那我们开始总结吧", F, None),
    ("出个纪要", F, None),
    ("生成纪要", F, None),
    ("帮我生成一下会议纪要", F, None),
    ("整理一下会议纪要吧", F, None),
    ("会议到此结束，谢谢大家", F, None),
    ("今天的会议结束了", F, None),
    ("好了，散会吧！", F, None),
    ("时间差不多了，结束会议", F, None),
    ("小智，结束会议", F, None),
    ("嗯，总结一下会议", F, None),
    ("進入工作模式", S, "working"),
    ("进入工作模式", S, "working"),
    ("切换到工作模式吧", S, "working"),
    ("工作模式", S, "working"),
    ("好的，打开工作模式", S, "working"),
    ("进入会议模式", S, "meeting"),
    ("我们开会吧", S, "meeting"),
    ("切换到编程模式", S, "coding"),
    ("认领任务", A, None),
    ("领取任务", A, None),
    ("我来做", A, None),
    ("第二个任务我来做", A, 2),
    ("认领第三个任务", A, 3),
    ("我认领任务一", A, 1),
    ("把第二个任务分配给我", A, 2),
    ("一号任务交给我吧", A, 1),
    ("接手这个任务", A, None),
    ("完成任务", C, None),
    ("完成第二个任务", C, 2),
    ("第二个任务完成了", C, 2),
    ("把第二个任务标记完成", C, 2),
    ("任务三标记为完成", C, 3),
    ("我做完了", C, None),
    ("第一个做完了", C, 1),
    ("搞定了", C, None),
    ("任务二搞定了", C, 2),
    ("完成第十个任务", C, 10),
    ("完成第十二个任务", C, 12),
    ("完成第2个任务", C, 2),
    ("完成第２个任务。", C, 2),
    ("刷新列表", R, None),
    ("刷新任务", R, None),
    ("好的，刷新一下任务列表吧", R, None),
    ("拉取任务", R, None),
    ("同步一下任务列表", R, None),
    ("查看任务列表", R, None),
    ("重新加载任务", R, None),
]

ZH_NEGATIVE = [
    # issue 10 "Why"
    "先别急着结束会议…",
    "先别急着结束会议，还有一个问题",
    "我们开始总结一下上周的问题",
    "我们讨论一下新的工作模式怎么设计",
    # negation
    "不要结束会议",
    "别结束会议",
    "不用生成纪要",
    "不必开始总结",
    "还没结束会议",
    "暂时不结束会议",
    "先不结束会议",
    "我不想进入工作模式",
    "别切换到工作模式",
    "不要刷新列表",
    "别认领这个任务",
    "我还没完成第二个任务",
    "第二个任务还没做完",
    "没搞定",
    # questions
    "结束会议吗",
    "要不要结束会议",
    "你觉得我们应该结束会议吗",
    "任务完成了吗",
    "做完了吗",
    # sentences that merely contain the words
    "结束会议之后我们再讨论",
    "会议结束后请把纪要发给我",
    "这个会议什么时候结束",
    "昨天的会议结束得很晚",
    "我们上次生成纪要的时候出了问题",
    "停止录制这个功能有bug",
    "工作模式的界面需要改一下",
    "工作模式和会议模式有什么区别",
    "这个任务谁来做",
    "完成第二个任务需要多久",
    "刷新列表的按钮在哪里",
    "我们已经完成了大部分工作",
    "把任务一交给张三",
    "我来做个总结",
    # ambiguous ordinals, bare words
    "第二个任务和第三个任务完成了",
    "完成第零个任务",
    "会议",
    "结束",
    "总结一下",
    "好的好的",
]

EN_POSITIVE: list[tuple[str, Intent, str | int | None]] = [
    ("End the meeting.", F, None),
    ("end meeting", F, None),
    ("Okay, let's end the meeting now.", F, None),
    ("ok, end the meeting", F, None),
    ("let's finalize the meeting now", F, None),
    ("Finalize meeting.", F, None),
    ("Finalise the meeting, please.", F, None),
    ("Alright everyone, let's wrap up.", F, None),
    ("Let's wrap it up.", F, None),
    ("Stop recording.", F, None),
    ("Start summary", F, None),
    ("Make a summary, please.", F, None),
    ("Generate minutes.", F, None),
    ("Generate the meeting minutes now.", F, None),
    ("Can you summarize the meeting?", F, None),
    ("That's all, end the meeting.", F, None),
    ("The meeting is over.", F, None),
    ("Meeting adjourned.", F, None),
    ("We can end the meeting now", F, None),
    ("I'd like to end the meeting.", F, None),
    ("Go ahead and finalize the meeting", F, None),
    ("Hey Xiaozhi, end the meeting.", F, None),
    ("END THE MEETING, THANKS!", F, None),
    ("Switch to working mode.", S, "working"),
    ("Enter working mode", S, "working"),
    ("working mode", S, "working"),
    ("Go to meeting mode.", S, "meeting"),
    ("Coding mode, please.", S, "coding"),
    ("Start a meeting", S, "meeting"),
    ("Claim task two.", A, 2),
    ("Claim", A, None),
    ("I'll take the second task.", A, 2),
    ("Assign the second task to me", A, 2),
    ("Assign it to me.", A, None),
    ("Give me task 3", A, 3),
    ("Task three is mine.", A, 3),
    ("Take task five", A, 5),
    ("Complete the second task", C, 2),
    ("complete the 2nd task", C, 2),
    ("Complete task #3.", C, 3),
    ("COMPLETE THE FOURTH TASK!", C, 4),
    ("Mark task 2 as done.", C, 2),
    ("Mark it done", C, None),
    ("Mark done", C, None),
    ("Task 4 is done.", C, 4),
    ("The third task is complete.", C, 3),
    ("I'm done with task one", C, 1),
    ("I finished the first task.", C, 1),
    ("Done with number two.", C, 2),
    ("Check off the tenth task", C, 10),
    ("Refresh", R, None),
    ("Refresh the task list.", R, None),
    ("Okay, refresh the list please", R, None),
    ("Pull.", R, None),
    ("Pull tasks", R, None),
    ("Reload tasks", R, None),
    ("Sync tasks.", R, None),
    ("Show my tasks", R, None),
    ("Update the list", R, None),
]

EN_NEGATIVE = [
    # issue 10 "Why"
    "we should not end the meeting yet",
    "We should not end the meeting yet.",
    # negation
    "Don't end the meeting.",
    "do not end the meeting",
    "Let's not end the meeting.",
    "Never end the meeting",
    "No need to end the meeting.",
    "We shouldn't end the meeting now.",
    "Please don't finalize the meeting.",
    "I don't want to stop recording.",
    "Don't mark it done.",
    "Task two is not done.",
    "Mark task 2 as not done",
    "I haven't finished task two",
    "No, don't refresh.",
    # questions and proposals
    "When will we end the meeting?",
    "Can we end the meeting early today?",
    "Should we end the meeting?",
    "Did you stop recording?",
    "Who will take the second task?",
    # sentences that merely contain the words
    "The end of the meeting is at five.",
    "After we end the meeting, send the notes.",
    "We'll end the meeting at 5 pm.",
    "The meeting is over there in room 5.",
    "Let's talk about the working mode design.",
    "What is working mode?",
    "I think the working mode needs more work.",
    "Make a summary of the budget discussion.",
    "The summary should mention the risks.",
    "Refresh my memory about the budget.",
    "I opened a pull request.",
    "Pull the latest code from the repo.",
    "I will take a break.",
    "Take it easy.",
    "I'm done talking, any questions?",
    "Close the door please, it's cold.",
    "Finish the report by Friday.",
    # ambiguous ordinals, bare words
    "Complete the second and third tasks.",
    "Complete task 0",
    "meeting",
    "the task",
    "okay okay",
]

NEGATIONS_ZH = ["先别", "不要", "别", "不用", "不必", "还没", "暂时不", "不", "没", "先不", "无需"]
NEGATIONS_EN = [
    "don't",
    "do not",
    "not",
    "never",
    "no need to",
    "shouldn't",
    "we should not",
    "please don't",
    "let's not",
    "no",
    "won't",
    "can't",
]


def _check(cmd: VoiceCommand | None, intent: Intent, extra: str | int | None) -> None:
    assert cmd is not None
    assert cmd.intent == intent
    if intent == S:
        assert cmd.target_mode == extra and cmd.ordinal is None
    else:
        assert cmd.target_mode is None
        assert cmd.ordinal == (extra if intent in (A, C) else None)
    assert cmd.keyword in {p.label for p in PHRASES if p.intent == intent}


def test_tables_are_big_enough() -> None:
    for table in (ZH_POSITIVE, ZH_NEGATIVE, EN_POSITIVE, EN_NEGATIVE):
        assert len(table) >= 40
    assert len(set(ZH_NEGATIVE)) == len(ZH_NEGATIVE) and len(set(EN_NEGATIVE)) == len(EN_NEGATIVE)


@pytest.mark.parametrize("text,intent,extra", ZH_POSITIVE)
def test_chinese_commands(text: str, intent: Intent, extra: str | int | None) -> None:
    cmd = parse_command(text)
    _check(cmd, intent, extra)
    assert cmd is not None and cmd.language == "zh"
    # Traditional script, and the intent set of the mode it belongs to, give the same command.
    assert parse_command(to_traditional(text)) == cmd
    mode_intents = WORKING_INTENTS if intent in (A, C, R) else MEETING_INTENTS
    assert parse_command(text, mode_intents) == cmd


@pytest.mark.parametrize("text,intent,extra", EN_POSITIVE)
def test_english_commands(text: str, intent: Intent, extra: str | int | None) -> None:
    cmd = parse_command(text)
    _check(cmd, intent, extra)
    assert cmd is not None and cmd.language == "en"
    assert parse_command(text.lower()) == cmd == parse_command(text.upper())
    full_width = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)
    assert parse_command(full_width) == cmd


@pytest.mark.parametrize("text", ZH_NEGATIVE + EN_NEGATIVE)
def test_not_commands(text: str) -> None:
    assert parse_command(text) is None
    assert parse_command(to_traditional(text)) is None


def test_the_cases_of_issue_10() -> None:
    """Each of these finalized the meeting or switched mode with the substring match."""
    for text in (
        "先别急着结束会议…",
        "我们开始总结一下上周的问题",
        "we should not end the meeting yet",
    ):
        assert parse_command(text, MEETING_INTENTS) is None
    assert parse_command("我们讨论一下新的工作模式怎么设计", MEETING_INTENTS) is None
    assert parse_command("我们讨论一下新的工作模式怎么设计", {S}) is None


def test_mixed_languages() -> None:
    cases = [
        ("ok，結束會議", F, "zh"),
        ("好的, end the meeting", F, "en"),
        ("我们 finalize meeting 吧", F, "en"),
        ("完成task 2", C, "zh"),
        ("好的，mark task 3 as done", C, "en"),
        ("ok 刷新一下", R, "zh"),
    ]
    for text, intent, language in cases:
        cmd = parse_command(text)
        assert cmd is not None and cmd.intent == intent and cmd.language == language, text
    assert parse_command("完成task 2") == VoiceCommand(C, None, 2, "完成任务", "zh")
    assert parse_command("好的，don't end the meeting") is None
    assert parse_command("ok，不要结束会议") is None


def test_intents_filter() -> None:
    assert parse_command("结束会议", WORKING_INTENTS) is None
    assert parse_command("完成第二个任务", MEETING_INTENTS) is None
    assert parse_command("refresh", MEETING_INTENTS) is None
    assert parse_command("end the meeting", [C, R]) is None
    assert parse_command("end the meeting", []) is None
    for intents in (MEETING_INTENTS, WORKING_INTENTS, ALL_INTENTS, [S], (S,)):
        cmd = parse_command("进入会议模式", intents)
        assert cmd == VoiceCommand(S, "meeting", None, "进入会议模式", "zh")


def test_command_fields() -> None:
    assert parse_command("好的，结束会议") == VoiceCommand(F, None, None, "结束会议", "zh")
    assert parse_command("Mark task 2 as done.") == VoiceCommand(C, None, 2, "mark done", "en")
    assert parse_command("Switch to working mode.") == VoiceCommand(
        S, "working", None, "working mode", "en"
    )
    cmd = parse_command("assign the second task to me")
    assert cmd is not None and cmd.intent == "assign" and str(cmd.intent) == "assign"
    assert Intent.SWITCH_MODE == "mode_switch"  # the value the gateway's stt intent carries


def test_short_means_a_few_words_of_filler() -> None:
    assert parse_command("好的好的好的好的好的结束会议") is not None  # five filler units
    assert parse_command("好的好的好的好的好的好的结束会议") is None  # six
    assert parse_command("ok so well now then end the meeting") is not None
    assert parse_command("ok so well now then and end the meeting") is None
    assert parse_command("end the meeting now please thanks everyone") is not None
    assert parse_command("end the meeting now please thanks everyone guys") is None


def test_parse_ordinal() -> None:
    cases = {"3": 3, "三": 3, "十": 10, "十二": 12, "二十": 20, "二十三": 23, "两": 2, "一": 1}
    cases |= {"third": 3, "3rd": 3, "three": 3, "1st": 1, "tenth": 10, "42": 42}
    for text, value in cases.items():
        assert parse_ordinal(text) == value, text
    for bad in ("", "十十", "一二", "百", "x", "二十三四"):
        assert parse_ordinal(bad) is None, bad


def test_filler_holds_no_negation() -> None:
    for language, negations in (("zh", NEGATIONS_ZH), ("en", NEGATIONS_EN)):
        lead, tail = FILLER[language]
        for filler in lead | tail:
            # 差不多 ("about time") is the one idiom with a 不 that negates nothing.
            words = filler.replace("差不多", "") if language == "zh" else f" {filler} "
            assert not any((n if language == "zh" else f" {n} ") in words for n in negations), (
                filler
            )


def test_fold_for_matching() -> None:
    assert fold_for_matching("好的，結束會議吧！") == "好的结束会议吧"
    assert fold_for_matching("OK, let’s END the meeting.") == "ok let's end the meeting"
    assert fold_for_matching("ｃｏｍｐｌｅｔｅ　ｔａｓｋ　２。") == "complete task 2"
    assert fold_for_matching("好的， end the meeting") == "好的end the meeting"
    assert fold_for_matching("'quoted' rock_n_roll  x") == "quoted rock n roll x"
    assert fold_for_matching(" 任务 2 ") == "任务2"
    assert fold_for_matching("...") == "" == fold_for_matching("")


# -- properties ----------------------------------------------------------------------------------
_POSITIVES = [t for t, _, _ in ZH_POSITIVE + EN_POSITIVE]
# Characters and words that no phrase or filler is made of: context that is not filler.
_ZH_CONTENT = "讨论设计产品预算市场问题方案客户数据报告"
_EN_CONTENT = ["budget", "design", "customer", "report", "vendor", "launch", "quarter", "data"]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(_POSITIVES),
    st.sampled_from(NEGATIONS_ZH + NEGATIONS_EN),
    st.sampled_from(["", " ", "，", ", "]),
)
def test_a_negation_before_a_command_is_never_one(text: str, negation: str, sep: str) -> None:
    assert parse_command(negation + sep + text) is None
    assert parse_command(negation + " " + text.lower()) is None


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_POSITIVES), st.sampled_from(NEGATIONS_ZH + NEGATIONS_EN), st.data())
def test_a_negation_anywhere_in_a_command_makes_it_none(
    text: str, negation: str, data: st.DataObject
) -> None:
    """Between the filler and the phrase, inside the phrase, or after it."""
    folded = fold_for_matching(text)
    if folded.isascii():
        words = folded.split(" ")
        at = data.draw(st.integers(0, len(words)))
        spoken = " ".join([*words[:at], negation, *words[at:]])
    else:
        at = data.draw(st.integers(0, len(folded)))
        spoken = folded[:at] + negation + folded[at:]
    assert parse_command(spoken) is None


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(ZH_POSITIVE),
    st.text(alphabet=_ZH_CONTENT, min_size=2, max_size=40),
    st.booleans(),
)
def test_chinese_phrase_inside_a_sentence_is_none(
    case: tuple[str, Intent, object], context: str, before: bool
) -> None:
    text = case[0]
    assert parse_command(context + text if before else text + context) is None


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(EN_POSITIVE),
    st.lists(st.sampled_from(_EN_CONTENT), min_size=1, max_size=12),
    st.booleans(),
)
def test_english_phrase_inside_a_sentence_is_none(
    case: tuple[str, Intent, object], context: list[str], before: bool
) -> None:
    words = " ".join(context)
    text = case[0]
    assert parse_command(f"{words} {text}" if before else f"{text} {words}") is None


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.text(max_size=400),
        st.text(alphabet="结束会议工作模式任务第二个完成不别吧了 ,.!?okendthmeting", max_size=200),
        st.text(min_size=2000, max_size=20000),
    ),
    st.sets(st.sampled_from(list(Intent))),
)
def test_any_text_is_handled(text: str, intents: set[Intent]) -> None:
    cmd = parse_command(text, intents)
    assert cmd is None or (isinstance(cmd, VoiceCommand) and cmd.intent in intents)
    if cmd is not None and cmd.ordinal is not None:
        assert 1 <= cmd.ordinal <= 99


def test_long_text_is_never_a_command() -> None:
    assert parse_command("结束会议" + "，" * 400) is None
    assert parse_command("好的" * 200 + "结束会议") is None
    assert parse_command("end the meeting " * 50) is None
