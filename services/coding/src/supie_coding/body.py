"""The four lists an insight carries, and the rules every list obeys before it leaves: limits,
de-duplication, a length a 2-inch screen can show, and never a raw log line."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field, StrictStr

__all__ = [
    "ITEM_MAX_CHARS",
    "ECHO_MIN_CHARS",
    "EchoGuard",
    "InsightBody",
    "Limits",
    "clip",
    "echoes",
    "finish",
]

ITEM_MAX_CHARS = 110
# An item may quote a token that is also a whole log line ("Killed", a test id cargo lists on a
# line of its own): only lines of several words and at least this long count as "a raw log line"
# when contained in an item (equality always counts).
ECHO_MIN_CHARS = 16
_SPACE = re.compile(r"\s+")


class InsightBody(BaseModel):
    """``insights``, ``risks``, ``actions``, ``nextSteps``: also the strict shape an LLM must
    answer with (exactly these four keys, each a list of strings)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    insights: list[StrictStr]
    risks: list[StrictStr]
    actions: list[StrictStr]
    next_steps: list[StrictStr] = Field(alias="nextSteps")

    def items(self) -> Iterable[str]:
        yield from self.insights
        yield from self.risks
        yield from self.actions
        yield from self.next_steps

    def counts(self) -> tuple[int, int, int, int]:
        return len(self.insights), len(self.risks), len(self.actions), len(self.next_steps)


@dataclass(frozen=True, slots=True)
class Limits:
    insights: int = 5
    risks: int = 4
    actions: int = 6
    next_steps: int = 6


def clip(text: str, limit: int = ITEM_MAX_CHARS) -> str:
    """One line of at most ``limit`` characters, cut at a word boundary with an ellipsis."""
    text = _SPACE.sub(" ", text).strip()
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit * 0.6:
        cut = cut[:space]
    return cut.rstrip(" ,;:-(") + "…"


@lru_cache(maxsize=32768)  # every insight compares against the buffer, mostly the same lines
def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


_PROBE = 8  # the long lines are indexed by their first characters


class EchoGuard:
    """Answers "does this item repeat a buffered log line?" for one buffer."""

    def __init__(self, lines: Sequence[str]) -> None:
        self.exact = {n for line in lines if (n := _norm(line))}  # "": only whitespace
        # Indexed by their first characters: an item is checked against the few lines that
        # could start at each of its positions instead of against every line.
        self.by_head: dict[str, list[str]] = {}
        for n in self.exact:
            if len(n) >= ECHO_MIN_CHARS and " " in n:
                self.by_head.setdefault(n[:_PROBE], []).append(n)

    def __call__(self, item: str) -> bool:
        n = _norm(item)
        if n in self.exact:
            return True
        heads = self.by_head
        if not heads:
            return False
        for i in range(len(n) - ECHO_MIN_CHARS + 1):
            candidates = heads.get(n[i : i + _PROBE])
            if candidates and any(n.startswith(line, i) for line in candidates):
                return True
        return False


def echoes(item: str, lines: Sequence[str]) -> bool:
    """True if ``item`` is a log line, or contains a whole one (of several words and at least
    :data:`ECHO_MIN_CHARS` characters), ignoring case and whitespace."""
    return EchoGuard(lines)(item)


def finish(body: InsightBody, lines: Sequence[str] | EchoGuard, limits: Limits) -> InsightBody:
    """Clip, de-duplicate (across all four lists), drop echoes of ``lines``, apply the limits."""
    guard = lines if isinstance(lines, EchoGuard) else EchoGuard(lines)
    seen: set[str] = set()

    def clean(items: list[str], limit: int) -> list[str]:
        out: list[str] = []
        for item in items:
            item = clip(item)
            key = _norm(item).rstrip(".…")
            if not key or key in seen or guard(item):
                continue
            seen.add(key)
            out.append(item)
            if len(out) == limit:
                break
        return out

    return InsightBody(
        insights=clean(body.insights, limits.insights),
        risks=clean(body.risks, limits.risks),
        actions=clean(body.actions, limits.actions),
        next_steps=clean(body.next_steps, limits.next_steps),
    )
