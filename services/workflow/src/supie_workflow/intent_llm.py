"""An optional LLM behind the phrase table (``llm_by_mode.intent``, OpenAI-compatible): asked only
when the rules find no command in a short utterance, never required. Any failure or doubt
(timeout, bad JSON, unknown intent) means "no command": doing nothing is the safe answer.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from loguru import logger
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
        self._transport = transport
        self._client: tuple[LlmProvider, httpx.AsyncClient] | None = None

    @staticmethod
    def provider(settings: SupieSettings) -> LlmProvider | None:
        """Only an explicitly configured intent LLM: a default one (meeting summaries) is not
        asked about every working-mode utterance."""
        alias = settings.llm_by_mode.intent
        return settings.llm.get(alias) if alias else None

    def _http(self, provider: LlmProvider) -> httpx.AsyncClient:
        if self._client is not None and self._client[0] == provider:
            return self._client[1]
        headers = {"Content-Type": "application/json"}
        if provider.api_key:
            headers["Authorization"] = f"Bearer {provider.api_key.get_secret_value()}"
        client = httpx.AsyncClient(
            base_url=provider.base_url.rstrip("/"), headers=headers, transport=self._transport
        )
        self._client = (provider, client)
        return client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client[1].aclose()
            self._client = None

    async def recognise(self, provider: LlmProvider, text: str) -> Command | None:
        text = text.strip()
        if not text or len(text) > MAX_TEXT_CHARS:
            return None
        body = {
            "model": provider.model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": text},
            ],
            "temperature": 0,
            "max_tokens": 60,
        }
        try:
            resp = await self._http(provider).post(
                "/chat/completions", json=body, timeout=min(provider.timeout_s, DEADLINE_S)
            )
            resp.raise_for_status()
            content = resp.json()["choices"][0]["message"]["content"]
            return _parse(content)
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            logger.warning("intent LLM gave no usable answer ({})", type(exc).__name__)
            return None


def _parse(content: Any) -> Command | None:
    if not isinstance(content, str):
        return None
    start, end = content.find("{"), content.rfind("}")
    if start < 0 or end <= start:
        return None
    value = json.loads(content[start : end + 1])
    if not isinstance(value, dict):
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
