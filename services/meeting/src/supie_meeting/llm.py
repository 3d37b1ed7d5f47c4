"""An OpenAI-compatible chat client (httpx) that asks for the summary as strict JSON.

Clients are cached per provider alias and dropped on every config reload (SPEC §9), so a changed
base URL, key or timeout applies to the next summary.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from loguru import logger
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


class LlmError(RuntimeError):
    """The LLM call failed, timed out or returned something unusable."""


def build_prompt(lines: list[str], max_chars: int, *, checkpoint: bool) -> str:
    """The user message: the transcript's tail (the end of a meeting carries its conclusions)."""
    transcript = "\n".join(lines)
    if len(transcript) > max_chars:
        transcript = transcript[-max_chars:]
        transcript = transcript[transcript.find("\n") + 1 :] or transcript
    kind = "an interim checkpoint summary" if checkpoint else "the final minutes"
    return f"Write {kind} for this meeting transcript.\n\nTranscript:\n{transcript or '(empty)'}"


def parse_json_object(text: str) -> dict[str, Any]:
    """Strict JSON first; else the outermost ``{...}`` (models like to wrap JSON in prose)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        start, end = text.find("{"), text.rfind("}")
        if start < 0 or end <= start:
            raise LlmError("no JSON object in the reply") from None
        try:
            value = json.loads(text[start : end + 1])
        except json.JSONDecodeError as exc:
            raise LlmError(f"reply is not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise LlmError(f"expected a JSON object, got {type(value).__name__}")
    return value


class LlmClients:
    """One ``httpx.AsyncClient`` per provider alias, reused until :meth:`clear`."""

    def __init__(self) -> None:
        self._clients: dict[str, tuple[LlmProvider, httpx.AsyncClient]] = {}

    def _client(self, alias: str, provider: LlmProvider) -> httpx.AsyncClient:
        cached = self._clients.get(alias)
        if cached is not None and cached[0] == provider:
            return cached[1]
        headers = {"Content-Type": "application/json"}
        if provider.api_key:
            headers["Authorization"] = f"Bearer {provider.api_key.get_secret_value()}"
        client = httpx.AsyncClient(base_url=provider.base_url.rstrip("/"), headers=headers)
        self._clients[alias] = (provider, client)
        return client

    async def clear(self) -> None:
        """Drop every cached client (config reload)."""
        clients, self._clients = self._clients, {}
        for _, client in clients.values():
            await client.aclose()
        if clients:
            logger.info("llm client cache cleared ({} clients)", len(clients))

    async def complete_json(
        self, alias: str, provider: LlmProvider, prompt: str, *, max_tokens: int, timeout_s: float
    ) -> dict[str, Any]:
        client = self._client(alias, provider)
        body = {
            "model": provider.model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": prompt},
            ],
            "temperature": provider.temperature,
            "max_tokens": max_tokens,
        }
        try:
            resp = await client.post("/chat/completions", json=body, timeout=timeout_s)
        except httpx.TimeoutException:
            raise LlmError(f"timed out after {timeout_s}s") from None
        except httpx.HTTPError as exc:
            raise LlmError(f"request failed: {type(exc).__name__}") from None
        if resp.status_code != 200:
            raise LlmError(f"HTTP {resp.status_code}")
        try:
            content = resp.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise LlmError("reply is not an OpenAI chat completion") from None
        if not isinstance(content, str):
            raise LlmError("completion content is not text")
        return parse_json_object(content)
