"""Whisper's decoding checks as pure functions: loop trimming, compression ratio, log-prob."""

from __future__ import annotations

from supie_asr.decoding import average_logprob, compression_ratio, trim_repetitions
from supie_asr.engine import _without_primer


def test_a_loop_at_the_end_keeps_one_occurrence() -> None:
    assert trim_repetitions([9, 1, 2, 3, 1, 2, 3, 1, 2, 3]) == [9, 1, 2, 3]
    # cut short by the length cap in the middle of a block
    assert trim_repetitions([9, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2]) == [9, 1, 2, 3]
    assert trim_repetitions([5, 6] + [7] * 8) == [5, 6, 7]


def test_ordinary_repetition_survives() -> None:
    assert trim_repetitions([1, 2, 3, 4]) == [1, 2, 3, 4]
    assert trim_repetitions([5, 7, 7, 7]) == [5, 7, 7, 7]  # "ha ha ha": one token, 3 times
    assert trim_repetitions([1, 2, 1, 2, 9]) == [1, 2, 1, 2, 9]  # not at the end
    assert trim_repetitions([]) == []


def test_compression_ratio_flags_loops() -> None:
    assert compression_ratio("") == 0.0
    assert compression_ratio("Good morning everyone, let us start the weekly meeting.") < 1.5
    assert compression_ratio("the end of the month " * 10) > 2.4
    assert compression_ratio("抱，" * 30) > 2.4


def test_average_logprob_counts_the_end_token() -> None:
    assert average_logprob(-0.5, 3) == -0.5 * 3 / 4
    assert average_logprob(0.0, 0) == 0.0


def test_a_primer_echo_is_removed() -> None:
    primer = "以下是普通话的句子。"
    assert _without_primer("以下是普通话的句子。", primer) == ""
    assert _without_primer("以下是普通的句子", primer) == ""  # nearly the primer
    assert (
        _without_primer("新版本计划在月底发布。以下是普通话的句子。", primer)
        == "新版本计划在月底发布"
    )
    assert _without_primer("我们决定下周一开始测试。", primer) == "我们决定下周一开始测试。"
    assert _without_primer("hello", "") == "hello"
