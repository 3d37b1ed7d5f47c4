"""What the developer said in coding mode (a ``note`` line): its topic words, never the sentence
itself, so an insight can point back at it without repeating it."""

from __future__ import annotations

import re
from collections.abc import Sequence

from .model import Kind, LogLine, Signal

__all__ = ["extract", "topic_words"]

_WORD = re.compile(r"[\w./:-]+", re.UNICODE)
_STOP = frozenset(
    """a an the and or but if then so to of in on at for with from by is are was were be been
    it its this that these those there here i me my we our you your he she they them his her
    do does did doing done not no yes ok okay please just also still again now some any all
    can could should would will shall may might must have has had get got go going
    um uh like well really very quite about into over under after before when while what
    which who whom why how""".split()
)


def topic_words(text: str, limit: int = 4) -> list[str]:
    """The first few content words, in order, without repeats (works for CJK too: a run of
    CJK characters counts as one word)."""
    out: list[str] = []
    for word in _WORD.findall(text.lower()):
        word = word.strip(".:-/")
        if len(word) < 2 or word in _STOP or word in out:
            continue
        out.append(word)
        if len(out) == limit:
            break
    return out


def extract(lines: Sequence[LogLine]) -> list[Signal]:
    out: list[Signal] = []
    for i, entry in enumerate(lines):
        if entry.kind != "note" or not entry.text:
            continue
        words = topic_words(entry.text)
        if words:
            out.append(Signal(Kind.NOTE, tool="speech", subject=" ".join(words), index=i))
    return out[-3:]
