"""The optional LLM phrasing of an insight: an OpenAI-compatible chat completion over httpx.

The model gets the extracted signals, the run's stats and the tail of the buffer, and must answer
one strict JSON object with exactly ``insights``, ``risks``, ``actions``, ``nextSteps`` (lists of
strings). Its answer is only a candidate: :func:`judge` keeps the local result whenever the
answer is not that JSON, repeats a log line, or names fewer of the findings (tests, modules,
files, hosts) than the local result does; a kept answer gets its empty lists filled locally.

Clients are cached per provider alias and dropped on every config reload (SPEC §9).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from loguru import logger
from pydantic import ValidationError
from supie_common.llm import ChatClients, LlmError
from supie_common.settings import LlmProvider

from .body import EchoGuard, InsightBody, Limits, finish
from .signals import LogLine, Signal

__all__ = [
    "LlmClients",
    "LlmRejected",
    "SYSTEM_PROMPT",
    "build_prompt",
    "judge",
    "parse_body",
]

MAX_TOKENS = 512
MAX_SIGNALS_IN_PROMPT = 20

SYSTEM_PROMPT = (
    "You turn build and test output into insights for a 2-inch badge screen. Reply with ONE "
    "JSON object and nothing else (no prose, no Markdown), with exactly these keys: "
    '"insights" (at most 5 strings: what happened), "risks" (at most 4: what is at stake), '
    '"actions" (at most 6: what to do now), "nextSteps" (at most 6: what comes after). Each '
    "string is one short sentence under 100 characters that names the failing test, the "
    "missing module, the file and line. NEVER copy a log line: reword it. Use only facts from "
    "the signals and the log; an empty array is better than a guess."
)


class LlmRejected(LlmError):
    """The LLM failed, timed out, or answered something the local result beats."""


def build_prompt(
    signals: Sequence[Signal],
    stats: dict[str, Any],
    lines: Sequence[LogLine],
    max_chars: int,
    *,
    summary: bool,
) -> str:
    """The user message: what happened (stats, signals), then the buffer's tail, the whole
    message kept under ``max_chars`` (the tail is cut first: the signals carry the facts)."""
    head = json.dumps(
        {
            "lastEvent": "summary" if summary else "insight",
            "stats": stats,
            "signals": [s.as_dict() for s in signals[:MAX_SIGNALS_IN_PROMPT]],
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )
    budget = max(max_chars - len(head) - 40, 0)
    tail: list[str] = []
    used = 0
    for line in reversed(lines):
        text = f"[{line.level}] {line.text}"
        if used + len(text) + 1 > budget:
            break
        tail.append(text)
        used += len(text) + 1
    task = "Summarise this finished run." if summary else "Write the insight for this run so far."
    log = "\n".join(reversed(tail)) or "(no lines)"
    return f"{task}\n{head}\nLog tail:\n{log}"[: max(max_chars, 200)]


def parse_body(content: str) -> InsightBody:
    """Strict: the whole reply is one JSON object (a single surrounding code fence is tolerated,
    prose is not) with exactly the four keys, each a list of strings."""
    text = content.strip()
    if text.startswith("```"):
        first_newline = text.find("\n")
        if first_newline < 0 or not text.endswith("```"):
            raise LlmRejected("reply is not a JSON object")
        text = text[first_newline + 1 : -3].strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise LlmRejected("reply is not valid JSON") from None
    if not isinstance(value, dict):
        raise LlmRejected(f"reply is a JSON {type(value).__name__}, not an object")
    keys = set(value)
    expected = {"insights", "risks", "actions", "nextSteps"}
    if keys != expected:
        missing, extra = sorted(expected - keys), sorted(keys - expected)
        raise LlmRejected(f"reply keys differ (missing {missing}, unexpected {extra})")
    try:
        body = InsightBody.model_validate(value)
    except ValidationError:
        raise LlmRejected("reply lists must hold strings only") from None
    return InsightBody(
        insights=[s.strip() for s in body.insights if s.strip()],
        risks=[s.strip() for s in body.risks if s.strip()],
        actions=[s.strip() for s in body.actions if s.strip()],
        next_steps=[s.strip() for s in body.next_steps if s.strip()],
    )


def _mentions(body: InsightBody, facts: Sequence[str]) -> int:
    text = " ".join(body.items()).casefold()
    return sum(1 for fact in facts if fact.casefold() in text)


def judge(
    candidate: InsightBody,
    local: InsightBody,
    lines: Sequence[str],
    facts: Sequence[str],
    limits: Limits,
) -> InsightBody:
    """The LLM's answer if it beats or matches the local one, else :class:`LlmRejected`."""
    guard = EchoGuard(lines)
    for item in candidate.items():
        if guard(item):
            raise LlmRejected("reply repeats a log line")
    if not candidate.insights and local.insights:
        raise LlmRejected("reply has no insight")
    if _mentions(candidate, facts) < _mentions(local, facts):
        raise LlmRejected("reply names fewer findings than the local result")
    body = finish(candidate, lines, limits)
    return InsightBody(
        insights=body.insights or local.insights,
        risks=body.risks or local.risks,
        actions=body.actions or local.actions,
        next_steps=body.next_steps or local.next_steps,
    )


class LlmClients(ChatClients):
    """The shared chat clients, asked with the coding prompt."""

    async def clear(self) -> int:
        """Drop every cached client (config reload)."""
        count = await super().clear()
        if count:
            logger.info("coding llm client cache cleared ({} clients)", count)
        return count

    async def complete(
        self, alias: str, provider: LlmProvider, prompt: str, *, timeout_s: float
    ) -> str:
        """The completion's text, or :class:`~supie_common.llm.LlmError`."""
        return await self.chat(
            alias,
            provider,
            SYSTEM_PROMPT,
            prompt,
            max_tokens=min(provider.max_tokens, MAX_TOKENS),
            timeout_s=timeout_s,
        )
