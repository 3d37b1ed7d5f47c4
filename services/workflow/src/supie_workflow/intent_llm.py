"""An optional LLM behind the phrase table (``llm_by_mode.intent``, OpenAI-compatible): asked only
when the rules find no command in a short utterance, never required. Any failure or doubt
(timeout, bad JSON, unknown intent) means "no command": doing nothing is the safe answer.
"""

from __future__ import annotations

import httpx
from loguru import logger
from supie_common.llm import ChatClients, LlmError, parse_json_object
from supie_common.settings import LlmProvider, SupieSettings

from .intents import Command

__all__ = ["IntentLlm", "SYSTEM_PROMPT", "MAX_TEXT_CHARS"]

MAX_TEXT_CHARS = 120  # longer utterances are conversation, not commands
DEADLINE_S = 5.0

SYSTEM_PROMPT = (
    "You decide whether an utterance spoken to a team task list is a command. Reply with ONE "
    'JSON object and nothing else: {"intent": "assign" | "complete" | "refresh" | "none", '
    '"ordinal": integer or null}. assign = the speaker claims a task; complete = the speaker '
    "marks a task done; refresh = the speaker wants the list again. ordinal = the 1-based task "
    'number spoken ("the second task", "第二个任务" -> 2), else null. Anything negated, asked as '
    'a question, or merely talking about tasks is "none".'
)


class IntentLlm:
    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._clients = ChatClients(transport)

    @staticmethod
    def provider(settings: SupieSettings) -> LlmProvider | None:
        """Only an explicitly configured intent LLM: a default one (meeting summaries) is not
        asked about every working-mode utterance."""
        alias = settings.llm_by_mode.intent
        return settings.llm.get(alias) if alias else None

    async def aclose(self) -> None:
        await self._clients.clear()

    async def recognise(self, provider: LlmProvider, text: str) -> Command | None:
        text = text.strip()
        if not text or len(text) > MAX_TEXT_CHARS:
            return None
        try:
            content = await self._clients.chat(
                "intent",
                provider,
                SYSTEM_PROMPT,
                text,
                max_tokens=60,
                timeout_s=min(provider.timeout_s, DEADLINE_S),
                temperature=0,
            )
        except LlmError as exc:
            logger.warning("intent LLM gave no usable answer ({})", exc)
            return None
        return _parse(content)


def _parse(content: str) -> Command | None:
    try:
        value = parse_json_object(content)
    except LlmError:
        return None
    intent = value.get("intent")
    ordinal = value.get("ordinal")
    if type(ordinal) is not int or not 1 <= ordinal <= 99:
        ordinal = None
    if intent == "assign":
        return Command("assign", ordinal, "llm")
    if intent == "complete":
        return Command("complete", ordinal, "llm")
    if intent == "refresh":
        return Command("refresh", None, "llm")
    return None
