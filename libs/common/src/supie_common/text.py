"""Chinese script conversion and small text helpers shared by asr, meeting, workflow and coding.

Whisper often writes Mandarin in Traditional characters; everything downstream (voice commands,
the local summarizer, the console's search) works on Simplified text, so Chinese output is
converted once with OpenCC (a maintained converter with phrase-level tables, not a character map).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Literal

import opencc

__all__ = [
    "ChineseScript",
    "to_simplified",
    "to_traditional",
    "to_script",
    "has_cjk",
    "fold_for_matching",
]

ChineseScript = Literal["simplified", "traditional"]

# CJK Unified Ideographs (+ extension A) and the CJK compatibility block.
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# Anything but letters, digits, CJK and apostrophes separates words; "_" too (\w has it).
_SEPARATORS = re.compile(r"[^\w']+")
_LONE_APOSTROPHES = re.compile(r"(?<!\w)'+|'+(?!\w)")  # quotes, not "let's"
_SPACES = re.compile(r"  +")
_LATIN = re.compile("[a-z]")
# A space next to a Chinese character carries no meaning (whisper puts them at random).
_SPACE_BY_CJK = re.compile(r" (?=[\u3400-\u4dbf\u4e00-\u9fff])|(?<=[\u3400-\u4dbf\u4e00-\u9fff]) ")
# Full-width letters and digits (ｏｋ, ２) to ASCII, and typographic apostrophes to "'"; the rest
# of what NFKC would fold is punctuation, which only separates words anyway. NFKC itself costs
# several µs on every Chinese sentence.
_FOLD_TABLE = {c: c - 0xFEE0 for c in range(0xFF10, 0xFF5B)} | {
    0x2019: "'",
    0x2018: "'",
    0x02BC: "'",
    0x0060: "'",
    0xFF07: "'",
}
_NEEDS_TABLE = re.compile("[\uff07\uff10-\uff5a\u2018\u2019\u02bc`]")


@lru_cache(maxsize=2)
def _converter(config: str) -> opencc.OpenCC:
    return opencc.OpenCC(config)


def has_cjk(text: str) -> bool:
    """True when the text holds at least one Chinese character."""
    return _CJK.search(text) is not None


def to_simplified(text: str) -> str:
    """Traditional (Taiwan, Hong Kong or generic) Chinese to Simplified; other text unchanged."""
    if not has_cjk(text):
        return text
    return str(_converter("t2s").convert(text))


def to_traditional(text: str) -> str:
    """Simplified Chinese to Traditional; other text unchanged."""
    if not has_cjk(text):
        return text
    return str(_converter("s2t").convert(text))


def to_script(text: str, script: ChineseScript) -> str:
    return to_simplified(text) if script == "simplified" else to_traditional(text)


def fold_for_matching(text: str) -> str:
    """The form phrase tables match against: full-width folded to ASCII, Traditional to
    Simplified, lower case, punctuation to single spaces, and no space next to a Chinese character.

    ``"好的，結束會議吧！"`` gives ``"好的结束会议吧"``; ``"OK, let’s END the meeting."`` gives
    ``"ok let's end the meeting"``; ``"好的 ok 结束"`` gives ``"好的ok结束"``.
    """
    folded = text.translate(_FOLD_TABLE) if _NEEDS_TABLE.search(text) else text
    folded = folded.lower()
    if not folded.isascii() and has_cjk(folded):
        folded = to_simplified(folded)
    folded = _SEPARATORS.sub(" ", folded)
    if "_" in folded:
        folded = folded.replace("_", " ")
    if "'" in folded:
        folded = _LONE_APOSTROPHES.sub(" ", folded)
    if folded.isascii():
        return _SPACES.sub(" ", folded).strip() if "  " in folded else folded.strip()
    if _LATIN.search(folded) is None:  # Chinese (and digits) only: no space means anything
        return folded.replace(" ", "")
    return _SPACE_BY_CJK.sub("", _SPACES.sub(" ", folded).strip())
