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

__all__ = ["ChineseScript", "to_simplified", "to_traditional", "to_script", "has_cjk"]

ChineseScript = Literal["simplified", "traditional"]

# CJK Unified Ideographs (+ extension A) and the CJK compatibility block.
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


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
