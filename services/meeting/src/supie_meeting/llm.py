"""An OpenAI-compatible chat client (httpx) that asks for the summary as strict JSON.

Clients are cached per provider alias and dropped on every config reload (SPEC §9), so a changed
base URL, key or timeout applies to the next summary.
"""

from __future__ import annotations

from typing import Any

from loguru import logger
from supie_common.llm import ChatClients, LlmError, parse_json_object
from supie_common.settings import LlmProvider

__all__ = ["LlmError", "LlmClients", "build_prompt", "parse_json_object", "SYSTEM_PROMPT"]

SYSTEM_PROMPT = (
    "You write meeting minutes from a transcript. Reply with ONE JSON object and nothing else, "
    'with exactly these keys: "title" (string, at most 30 characters, the dominant topic), '
    '"bullets" (at most 6 strings: the key points), "decisions", "actions", "risks", '
    '"nextSteps" (at most 4 strings each). Each item 20-40 characters, in the transcript\'s '
    "language. Use ONLY facts stated in the transcript: never invent names, dates, numbers, "
    "owners or decisions. When the transcript states no decision (or action, risk, next step), "
    "that field MUST be an empty array []. Never use null."
)


def build_prompt(lines: list[str], max_chars: int, *, checkpoint: bool) -> str:
    """The user message: the transcript's tail (the end of a meeting carries its conclusions)."""
    transcript = "\n".join(lines)
    if len(transcript) > max_chars:
        transcript = transcript[-max_chars:]
        transcript = transcript[transcript.find("\n") + 1 :] or transcript
    kind = "an interim checkpoint summary" if checkpoint else "the final minutes"
    return f"Write {kind} for this meeting transcript.\n\nTranscript:\n{transcript or '(empty)'}"


class LlmClients(ChatClients):
    """The shared chat clients, asked for the summary as one JSON object."""

    async def clear(self) -> int:
        """Drop every cached client (config reload)."""
        count = await super().clear()
        if count:
            logger.info("llm client cache cleared ({} clients)", count)
        return count

    async def complete_json(
        self, alias: str, provider: LlmProvider, prompt: str, *, max_tokens: int, timeout_s: float
    ) -> dict[str, Any]:
        content = await self.chat(
            alias, provider, SYSTEM_PROMPT, prompt, max_tokens=max_tokens, timeout_s=timeout_s
        )
        return parse_json_object(content)
